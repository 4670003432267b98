"""The learned gate of ``fusion.kind: gated`` (METHOD.md §4 (a), an extension).

A tiny MLP over ``[h; v; h*v]`` (h: the query's mean hidden state over the question's tokens at the fusion
block, v: a fact's vector, both unit-normalised) gives each retrieved fact a weight g in (0, 1); the bias
is ``scale * sum_i g_i v_i``. It is trained on the edits themselves:

- positives (g -> 1): the edit's (image, question) and ONE seeded augmented copy (the augmentation that
  sets the entry radius: mosaic/rotation/jitter image, template-paraphrased question), each with the
  edit's own facts;
- negatives (g -> 0): null probes (``fusion.null_prompts``: unrelated questions on the edit's own image)
  with the edit's facts, and other edits' positives with this edit's facts (a seeded sample).

No evaluation probe (rephrasings, other images, locality) is used. Full-batch Adam for ``gate_steps``
steps after every ``gate_every`` edits, initialised from ``seed`` (deterministic); the weights and the
examples' features are saved with the codebook (``fusion_gate.safetensors`` + ``fusion_gate.json``).
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from .config import FusionConfig

GATE_FILE = "fusion_gate.safetensors"
GATE_META = "fusion_gate.json"
CROSS_EDITS = 8
"""Other edits whose positives serve as negatives for an edit's facts, per training round."""


class FusionGate(nn.Module):
    """g(h, v) = sigmoid(MLP([h; v; h * v * sqrt(H)])) for unit-normalised h and v."""

    def __init__(self, dim: int, hidden: int, seed: int):
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.l1 = nn.Linear(3 * dim, hidden)
            self.l2 = nn.Linear(hidden, 1)
        self.dim = dim

    def forward(self, h: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """h [B, H], v [n, H] -> gates [B, n]."""
        hn = nn.functional.normalize(h.float(), dim=-1)[:, None, :].expand(-1, v.shape[0], -1)
        vn = nn.functional.normalize(v.float(), dim=-1)[None, :, :].expand(h.shape[0], -1, -1)
        x = torch.cat([hn, vn, hn * vn * math.sqrt(self.dim)], dim=-1)
        return torch.sigmoid(self.l2(torch.tanh(self.l1(x)))).squeeze(-1)


@dataclass
class GateExamples:
    """One edit's training material: its facts and the query features of its positives and null probes."""

    edit_id: str
    facts: list[str]
    positives: torch.Tensor
    nulls: torch.Tensor


@dataclass
class GateEdit:
    """What the editor hands over per committed edit."""

    edit_id: str
    facts: list[str]
    positives: list[tuple[Any, str]]
    """(image, question) pairs that should open the gate."""
    nulls: list[tuple[Any, str]] = field(default_factory=list)
    """(image, question) pairs that should keep it closed."""


class GateTrainer:
    """Holds the gate and its examples; trains it as edits arrive."""

    def __init__(self, fusion: Any, config: FusionConfig, seed: int):
        self.fusion = fusion
        self.config = config
        self.seed = seed
        self.dim: int | None = None
        self.gate: FusionGate | None = None
        self.examples: dict[str, GateExamples] = {}
        self.pending = 0
        self.rounds = 0
        self.train_seconds: list[float] = []
        """Seconds of each training round."""
        self.last_loss: float | None = None

    def gates(self, h: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """[B, n] gate values (0.5 everywhere before the first training round)."""
        if self.gate is None:
            return torch.full((h.shape[0], v.shape[0]), 0.5)
        with torch.no_grad():
            return self.gate(h, v)

    def add_edits(self, edits: Sequence[GateEdit]) -> float:
        """Compute the features of the edits' positives and null probes, then train if due.
        Returns the seconds spent training (0 when no round ran)."""
        for e in edits:
            pos = torch.stack([self.fusion.features_for(img, q) for img, q in e.positives])
            nul = (torch.stack([self.fusion.features_for(img, q) for img, q in e.nulls]) if e.nulls
                   else torch.zeros(0, pos.shape[1]))
            self.examples[e.edit_id] = GateExamples(e.edit_id, list(e.facts), pos, nul)
            self.pending += 1
        if self.pending >= self.config.gate_every:
            return self.train()
        return 0.0

    def forget(self, edit_id: str) -> None:
        if self.examples.pop(edit_id, None) is not None:
            self.pending += 1

    def _dataset(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(h [M, H], v [M, H], label [M]) over every edit's facts."""
        hs, vs, ys = [], [], []
        ids = sorted(self.examples)
        rng = random.Random(f"{self.seed}:gate:{self.rounds}")
        for eid in ids:
            ex = self.examples[eid]
            facts = self.fusion.fact_matrix(ex.facts)
            own = set(ex.facts)
            others = [o for o in ids if o != eid and not own & set(self.examples[o].facts)]
            cross = rng.sample(others, min(CROSS_EDITS, len(others)))
            groups = [(ex.positives, 1.0), (ex.nulls, 0.0)] + [(self.examples[o].positives, 0.0) for o in cross]
            for feats, label in groups:
                for h in feats:
                    hs.append(h.expand(len(facts), -1))
                    vs.append(facts)
                    ys.append(torch.full((len(facts),), label))
        return torch.cat(hs), torch.cat(vs), torch.cat(ys)

    def train(self) -> float:
        """One training round (full-batch Adam, balanced BCE); returns its seconds."""
        self.pending = 0
        if not self.examples:
            self.gate = None
            return 0.0
        start = time.perf_counter()
        h, v, y = self._dataset()
        if self.gate is None:
            self.dim = h.shape[1]
            self.gate = FusionGate(self.dim, self.config.gate_hidden, self.seed)
        gate = self.gate
        opt = torch.optim.Adam(gate.parameters(), lr=self.config.gate_lr)
        pos = float(y.sum())
        weight = torch.where(y > 0.5, (len(y) - pos) / max(pos, 1.0), torch.ones_like(y))
        loss = torch.tensor(0.0)
        with torch.enable_grad():
            for _ in range(self.config.gate_steps):
                opt.zero_grad()
                hn = nn.functional.normalize(h, dim=-1)
                vn = nn.functional.normalize(v, dim=-1)
                x = torch.cat([hn, vn, hn * vn * math.sqrt(gate.dim)], dim=-1)
                logits = gate.l2(torch.tanh(gate.l1(x))).squeeze(-1)
                loss = nn.functional.binary_cross_entropy_with_logits(logits, y, weight=weight)
                loss.backward()
                opt.step()
        self.last_loss = float(loss.detach())
        self.rounds += 1
        seconds = time.perf_counter() - start
        self.train_seconds.append(seconds)
        return seconds

    def describe(self) -> dict[str, Any]:
        return {"rounds": self.rounds, "examples": len(self.examples), "last_loss": self.last_loss,
                "train_seconds_total": sum(self.train_seconds)}

    # ------------------------------------------------------------------ storage
    def side_files(self) -> dict[str, bytes]:
        tensors: dict[str, torch.Tensor] = {}
        rows = []
        for i, eid in enumerate(sorted(self.examples)):
            ex = self.examples[eid]
            tensors[f"pos.{i}"] = ex.positives.contiguous()
            tensors[f"null.{i}"] = ex.nulls.contiguous()
            rows.append({"edit_id": eid, "facts": ex.facts, "row": i})
        if self.gate is not None:
            for name, p in self.gate.state_dict().items():
                tensors[f"gate.{name}"] = p.detach().contiguous()
        meta = {"rows": rows, "dim": self.dim, "rounds": self.rounds, "pending": self.pending,
                "hidden": self.config.gate_hidden}
        return {GATE_FILE: st_save(tensors or {"empty": torch.zeros(0)}),
                GATE_META: json.dumps(meta, sort_keys=True).encode("utf-8")}

    def load_side_files(self, files: Mapping[str, bytes]) -> None:
        if GATE_FILE not in files or GATE_META not in files:
            return
        meta = json.loads(files[GATE_META].decode("utf-8"))
        tensors = st_load(files[GATE_FILE])
        self.examples = {r["edit_id"]: GateExamples(r["edit_id"], list(r["facts"]), tensors[f"pos.{r['row']}"],
                                                    tensors[f"null.{r['row']}"]) for r in meta["rows"]}
        self.rounds, self.pending, self.dim = int(meta["rounds"]), int(meta["pending"]), meta["dim"]
        state = {k[len("gate."):]: v for k, v in tensors.items() if k.startswith("gate.")}
        if state and meta.get("hidden") == self.config.gate_hidden:
            self.gate = FusionGate(int(self.dim), self.config.gate_hidden, self.seed)
            self.gate.load_state_dict(state)
        elif state:
            self.pending = max(self.pending, 1)  # another width: retrained at the next edit
