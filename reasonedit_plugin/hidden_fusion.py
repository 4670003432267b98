"""Hidden-state fusion (METHOD.md §4 (a), an extension measured against the paper's prompt fusion).

``fusion.kind: hidden_bias``: every fact (an entry's value) is encoded ONCE, when its edit is made, by the
VLM's own language model: the output of language-model block ``fusion.layer`` on the fact's tokens alone,
mean-pooled. At answer time the prompt stays the bare question (sequence length unchanged) and
``scale * sum_i g_i * v(fact_i)`` is added to that block's output hidden states at the question's tokens
or at every text token (``fusion.positions``). ``g_i = 1`` here; ``fusion.kind: gated`` learns it
(:mod:`reasonedit_plugin.fusion_gate`).

Which module is "language-model block L" is :class:`~reasonedit_plugin.model_specs.ModelSpec` data
(``lm_block_template``). Hooks come from :mod:`reasonedit_plugin.hooks` and are removed on exit; with
nothing retrieved no hook is installed at all.

The fact vectors live in a side store (:class:`FactVectors`), saved as ``fusion_vectors.safetensors``
(+ ``fusion.json``) in the codebook snapshot, keyed by the fact text's hash, never in the codebook's entries.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from typing import Any, Iterator, Mapping, Sequence

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from .config import FusionConfig
from .errors import ConfigError, ReasonEditError
from .hooks import capture_outputs, edit_hidden_states, find_module

logger = logging.getLogger(__name__)

VECTORS_FILE = "fusion_vectors.safetensors"
META_FILE = "fusion.json"


def fact_key(text: str) -> str:
    """The side store's key of a fact: a hash of its text (safetensors names must be short and plain)."""
    return hashlib.blake2b(text.encode("utf-8"), digest_size=12).hexdigest()


class FactVectors:
    """Fact text -> its language-model vector at one block (the side store of hidden-state fusion)."""

    def __init__(self, block: str):
        self.block = block
        self.vectors: dict[str, torch.Tensor] = {}

    def __contains__(self, text: str) -> bool:
        return fact_key(text) in self.vectors

    def get(self, text: str) -> torch.Tensor:
        return self.vectors[fact_key(text)]

    def put(self, text: str, vector: torch.Tensor) -> None:
        self.vectors[fact_key(text)] = vector.detach().float().cpu().reshape(-1).clone()

    def keep_only(self, texts: Sequence[str]) -> None:
        """Drop vectors of facts no entry holds any more."""
        wanted = {fact_key(t) for t in texts}
        for key in [k for k in self.vectors if k not in wanted]:
            del self.vectors[key]

    def to_bytes(self) -> bytes:
        return st_save({k: v.contiguous() for k, v in sorted(self.vectors.items())},
                       metadata={"block": self.block})

    @classmethod
    def from_bytes(cls, data: bytes, block: str) -> "FactVectors":
        store = cls(block)
        for key, value in st_load(data).items():
            store.vectors[key] = value.float()
        return store


def special_token_ids(tokenizer: Any) -> set[int]:
    """Ids of every special / added-special token (image placeholders, template markers, padding)."""
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    decoder = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    special |= {int(i) for i, t in decoder.items() if getattr(t, "special", True)}
    return special


def _find_last(row: list[int], needle: list[int]) -> int:
    n = len(needle)
    for i in range(len(row) - n, -1, -1):
        if row[i:i + n] == needle:
            return i
    return -1


class HiddenFusion:
    """Fact vectors, the bias hook and (for ``gated``) the gate of one editor."""

    def __init__(self, vlm: Any, config: FusionConfig, seed: int = 0):
        if not config.hidden:
            raise ConfigError(f"HiddenFusion is for fusion.kind hidden_bias/gated, not {config.kind!r}.")
        self.vlm = vlm
        self.config = config
        self.seed = seed
        blocks = vlm.spec.num_lm_blocks(vlm.model.config)
        layer = blocks - 1 if config.layer is None else config.layer
        index = layer + blocks if layer < 0 else layer
        if not 0 <= index < blocks:
            raise ConfigError(f"fusion.layer={config.layer} is out of range: this {vlm.spec.model_type} language "
                              f"model has {blocks} blocks (0..{blocks - 1}); give one of them or null (the last).")
        self.layer = index
        self.block = vlm.spec.lm_block_path(index)
        find_module(vlm.model, self.block)  # fails early, naming the closest paths
        self.language_model = find_module(vlm.model, vlm.spec.language_model)
        self.store = FactVectors(self.block)
        self._special = special_token_ids(vlm.tokenizer)
        self.gate: Any = None
        if config.kind == "gated":
            from .fusion_gate import GateTrainer

            self.gate = GateTrainer(self, config, seed)
        self._warned_fallback = False

    # ------------------------------------------------------------------ fact vectors
    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """float32 [n, H]: each text's block output mean-pooled over its tokens (text-only LM pass)."""
        out = []
        device = self.vlm.device
        for text in texts:
            ids = self.vlm.tokenizer(text, add_special_tokens=False)["input_ids"]
            if not ids:
                raise ReasonEditError(f"fact {text!r:.60} tokenizes to nothing; it cannot be fused.")
            with capture_outputs(self.vlm.model, self.block) as calls, torch.inference_mode():
                self.language_model(input_ids=torch.tensor([ids], device=device))
            out.append(calls[-1][0].float().mean(0).cpu())
        return torch.stack(out)

    def ensure_facts(self, texts: Sequence[str]) -> None:
        """Encode the facts that have no vector yet (edit time; loading an older codebook)."""
        missing = list(dict.fromkeys(t for t in texts if t not in self.store))
        if missing:
            for text, vec in zip(missing, self.encode_texts(missing)):
                self.store.put(text, vec)

    def fact_matrix(self, facts: Sequence[str]) -> torch.Tensor:
        self.ensure_facts(facts)
        return torch.stack([self.store.get(f) for f in facts])

    # ------------------------------------------------------------------ positions
    def question_mask(self, ids: torch.Tensor, question: str | None,
                      span: tuple[int, int] | None = None) -> torch.Tensor:
        """bool [B, T]: the question's tokens in each row (the last occurrence); rows where it is not found
        fall back to every text token when the call holds a whole prompt (a decoding step: nothing)."""
        mask = torch.zeros(ids.shape, dtype=torch.bool, device=ids.device)
        if span is not None:
            mask[:, span[0]:span[1]] = True
            return mask
        needle = self.vlm.tokenizer(question, add_special_tokens=False)["input_ids"] if question else []
        text = self.text_mask(ids)
        for b, row in enumerate(ids.tolist()):
            start = _find_last(row, needle) if needle else -1
            if start >= 0:
                mask[b, start:start + len(needle)] = True
            elif len(row) > len(needle):
                if not self._warned_fallback:
                    logger.warning("hidden-state fusion: the question's tokens were not found in the prompt; "
                                   "using every text token for this model.")
                    self._warned_fallback = True
                mask[b] = text[b]
        return mask

    def text_mask(self, ids: torch.Tensor) -> torch.Tensor:
        """bool [B, T]: every token that is not special (image placeholders, template markers, padding)."""
        special = torch.tensor(sorted(self._special), dtype=ids.dtype, device=ids.device)
        return ~torch.isin(ids, special)

    def query_features(self, hidden: torch.Tensor, qmask: torch.Tensor) -> torch.Tensor:
        """float32 [B, H]: the mean hidden state over the question's tokens (the gate's query side)."""
        m = qmask.to(hidden.dtype).unsqueeze(-1)
        return ((hidden * m).sum(1) / m.sum(1).clamp(min=1.0)).float()

    def features_for(self, image: Any, question: str) -> torch.Tensor:
        """The gate's query feature of (image, question): one forward of the unedited model, float32 [H]."""
        inputs = self.vlm.build_inputs([image], [question])
        with capture_outputs(self.vlm.model, self.block) as calls, torch.inference_mode():
            self.vlm.model(**inputs)
        hidden = calls[0]
        ids = inputs["input_ids"]
        ids = ids[:, -hidden.shape[1]:] if ids.shape[1] > hidden.shape[1] else ids
        hidden = hidden[:, -ids.shape[1]:]
        return self.query_features(hidden, self.question_mask(ids, question))[0].cpu()

    # ------------------------------------------------------------------ the bias
    @contextlib.contextmanager
    def apply(self, question: str | None, facts: Sequence[str],
              span: tuple[int, int] | None = None) -> Iterator[dict[str, Any]]:
        """Within the block, the model's forward passes get the facts' bias (nothing when ``facts`` is
        empty or the scale is 0: no hook at all). Yields a dict that records the gate values used."""
        info: dict[str, Any] = {"gates": None}
        if not facts or self.config.scale == 0:
            yield info
            return
        vectors = self.fact_matrix(facts)  # [n, H]
        scale = self.config.scale
        gate = self.gate
        state: dict[str, Any] = {"g": None}

        def fn(hidden: torch.Tensor, ids: torch.Tensor | None) -> torch.Tensor:
            if ids is None:
                return hidden
            t = min(ids.shape[1], hidden.shape[1])
            ids_r = ids[:, -t:]
            qmask = self.question_mask(ids_r, question, span if span is not None and t == ids.shape[1] else None)
            where = qmask if self.config.positions == "question" else self.text_mask(ids_r)
            if not bool(where.any()):
                return hidden
            vec = vectors.to(device=hidden.device, dtype=torch.float32)
            if gate is not None:
                if state["g"] is None or state["g"].shape[0] != hidden.shape[0]:
                    if qmask.any():
                        feats = self.query_features(hidden[:, -t:], qmask)
                        state["g"] = gate.gates(feats.cpu(), vec.cpu()).to(hidden.device)  # [B, n]
                        info["gates"] = state["g"].tolist()
                    else:
                        return hidden
                weights = state["g"]
            else:
                weights = torch.ones(hidden.shape[0], vec.shape[0], device=hidden.device)
            delta = scale * (weights @ vec)  # [B, H]
            out = hidden.clone()
            region = out[:, -t:]
            region += where.unsqueeze(-1).to(out.dtype) * delta.to(out.dtype).unsqueeze(1)
            return out

        with edit_hidden_states(self.vlm.model, self.block, fn):
            yield info

    # ------------------------------------------------------------------ edits and storage
    def on_edits(self, edits: Sequence[Any]) -> float:
        """After edits are committed: encode their facts; ``gated``: add their examples and train.
        ``edits``: one :class:`~reasonedit_plugin.fusion_gate.GateEdit` per committed edit. Returns the
        gate's training seconds (0 for ``hidden_bias``)."""
        for e in edits:
            self.ensure_facts(e.facts)
        if self.gate is None:
            return 0.0
        return self.gate.add_edits(edits)

    def forget(self, edit_id: str, remaining_values: Sequence[str]) -> None:
        self.store.keep_only(remaining_values)
        if self.gate is not None:
            self.gate.forget(edit_id)

    def side_files(self) -> dict[str, bytes]:
        meta = {"kind": self.config.kind, "block": self.block, "layer": self.layer}
        files = {VECTORS_FILE: self.store.to_bytes()}
        if self.gate is not None:
            files.update(self.gate.side_files())
            meta["gate"] = self.gate.describe()
        files[META_FILE] = json.dumps(meta, sort_keys=True).encode("utf-8")
        return files

    def load_side_files(self, files: Mapping[str, bytes]) -> None:
        """Restore vectors (and gate) saved for the same block; otherwise facts are re-encoded on use."""
        if META_FILE not in files:
            return
        meta = json.loads(files[META_FILE].decode("utf-8"))
        if meta.get("block") != self.block:
            logger.info("saved fusion vectors are for %s, this config uses %s: facts are re-encoded",
                        meta.get("block"), self.block)
            return
        if VECTORS_FILE in files:
            self.store = FactVectors.from_bytes(files[VECTORS_FILE], self.block)
        if self.gate is not None:
            self.gate.load_side_files(files)
