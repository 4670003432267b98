"""Contrastive tuning of the retrieval keys (METHOD.md §4 (b), an extension; ``retrieval.tuning: contrastive``).

A linear projection ``P`` (initialised to the identity) is applied to every key, stored and queried:
``k' = P k``. After every ``key_tuning.every`` edits it is trained with InfoNCE on the raw keys:

- anchor: each stored entry's raw key;
- positive: the raw key of its ONE seeded augmented copy (the copy whose distance sets the radius);
- negatives: the raw keys of other edits' entries and of null probes (``key_tuning.null_prompts`` on each
  edit's own image);

plus ``identity_weight * ||P - I||^2``. Logits are ``-||P a - P c||^2 / (temperature * m)`` with ``m`` the
mean squared anchor-positive distance under the identity (so the temperature does not depend on the key
scale). Then every stored key is re-projected: each edit is removed and re-added, in order, with keys
``P k`` and radii ``||P k - P k_aug||`` through the codebook's public ``remove_edit`` / ``add_edit``, so
merging, the hubness table and the rejection gate follow from the projected keys alone. ``version``
counts the projections; it is saved with ``P`` and the raw keys (``key_tuning.safetensors`` +
``key_tuning.json`` in the codebook snapshot). A codebook saved without them loads with ``P = I``.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from .config import KeyTuningConfig

TUNING_FILE = "key_tuning.safetensors"
TUNING_META = "key_tuning.json"
MAX_ANCHORS = 256
"""Anchors per training step (a seeded sample when there are more)."""
MAX_NEGATIVES = 1024


@dataclass
class RawKeys:
    """One edit's unprojected keys: its entries' keys, their augmented copies' keys, its null probes'."""

    keys: torch.Tensor
    aug: torch.Tensor | None
    nulls: torch.Tensor
    default_radius: float = 1.0
    kinds: list[str] = field(default_factory=list)
    """Entry kind per key row (the edit's pending order)."""
    values: list[str] = field(default_factory=list)
    """Entry value per key row."""


@dataclass
class KeyTuner:
    """The projection, the raw keys it is trained on, and its version."""

    dim: int
    config: KeyTuningConfig
    seed: int = 0
    projection: torch.Tensor = field(init=False)
    version: int = 0
    raw: dict[str, RawKeys] = field(default_factory=dict)
    staged: dict[str, RawKeys] = field(default_factory=dict)
    pending: int = 0
    train_seconds: list[float] = field(default_factory=list)
    rekey_seconds: list[float] = field(default_factory=list)
    last_loss: float | None = None

    def __post_init__(self) -> None:
        self.projection = torch.eye(self.dim)

    def project(self, keys: torch.Tensor) -> torch.Tensor:
        return keys.float() @ self.projection.T

    def radii(self, raw: RawKeys) -> list[float]:
        if raw.aug is None:
            return [raw.default_radius] * len(raw.keys)
        return torch.linalg.vector_norm(self.project(raw.keys) - self.project(raw.aug), dim=1).tolist()

    # ------------------------------------------------------------------ bookkeeping
    def stage(self, edit_id: str, raw: RawKeys) -> None:
        """Remember an edit's raw keys until it is committed (``commit``) or dropped."""
        self.staged[edit_id] = raw

    def commit(self, edit_ids: Sequence[str]) -> None:
        for e in edit_ids:
            if e in self.staged:
                self.raw[e] = self.staged.pop(e)
                self.pending += 1
        self.staged.clear()

    def forget(self, edit_id: str) -> None:
        self.raw.pop(edit_id, None)

    @property
    def due(self) -> bool:
        return self.pending >= self.config.every and len(self.raw) >= 2

    # ------------------------------------------------------------------ training
    def train(self) -> float:
        """One InfoNCE round on every committed edit's raw keys; returns its seconds."""
        self.pending = 0
        start = time.perf_counter()
        ids = sorted(self.raw)
        anchors, positives, owners = [], [], []
        negatives, neg_owner = [], []
        for n, e in enumerate(ids):
            r = self.raw[e]
            negatives.append(r.keys)
            neg_owner += [n] * len(r.keys)
            if len(r.nulls):
                negatives.append(r.nulls)
                neg_owner += [-1] * len(r.nulls)
            if r.aug is not None:
                anchors.append(r.keys)
                positives.append(r.aug)
                owners += [n] * len(r.keys)
        if not anchors:
            return 0.0
        a_all, p_all = torch.cat(anchors), torch.cat(positives)
        own_all = torch.tensor(owners)
        n_all, n_own = torch.cat(negatives), torch.tensor(neg_owner)
        scale = float(((a_all - p_all) ** 2).sum(1).mean().clamp(min=1e-8))
        rng = random.Random(f"{self.seed}:key-tuning:{self.version}")
        eye = torch.eye(self.dim)
        P = self.projection.clone().requires_grad_(True)
        opt = torch.optim.Adam([P], lr=self.config.lr)
        loss = torch.tensor(0.0)
        with torch.enable_grad():
            for _ in range(self.config.steps):
                ai = sorted(rng.sample(range(len(a_all)), min(MAX_ANCHORS, len(a_all))))
                ni = sorted(rng.sample(range(len(n_all)), min(MAX_NEGATIVES, len(n_all))))
                a, p, own = a_all[ai] @ P.T, p_all[ai] @ P.T, own_all[ai]
                neg, nown = n_all[ni] @ P.T, n_own[ni]
                d_pos = ((a - p) ** 2).sum(1, keepdim=True)
                d_neg = torch.cdist(a, neg) ** 2
                d_neg = d_neg.masked_fill(own[:, None] == nown[None, :], float("inf"))  # same edit: not a negative
                logits = -torch.cat([d_pos, d_neg], dim=1) / (self.config.temperature * scale)
                nce = torch.nn.functional.cross_entropy(logits, torch.zeros(len(ai), dtype=torch.long))
                loss = nce + self.config.identity_weight * ((P - eye) ** 2).sum()
                opt.zero_grad()
                loss.backward()
                opt.step()
        self.projection = P.detach().clone()
        self.version += 1
        self.last_loss = float(loss.detach())
        seconds = time.perf_counter() - start
        self.train_seconds.append(seconds)
        return seconds

    def rekey(self, codebook: Any) -> float:
        """Re-add every edit of ``codebook`` (in its order) with keys projected by the current ``P``.
        Edits without raw keys (added before tuning was on, or imported as keys) keep their keys."""
        start = time.perf_counter()
        order = [e for e in codebook.edit_ids() if e in self.raw]
        saved = {e: [c for entry in codebook.entries.values() for c in entry.contributions if c.edit_id == e]
                 for e in order}
        from .codebook import PendingEntry

        for e in order:
            codebook.remove_edit(e)
        for e in order:
            contributions = saved[e]
            raw = self.raw[e]
            keys = self.project(raw.keys)
            radii = self.radii(raw)
            # the raw rows are in the edit's pending order (answer entry, then sentences, then patches)
            pending = [PendingEntry(kind, value, k, r) for kind, value, k, r in zip(raw.kinds, raw.values, keys, radii)]
            codebook.add_edit(e, pending, dict(contributions[0].meta) if contributions else {})
            created = {c.value: c.created for c in contributions}
            for entry in codebook.entries.values():
                for c in entry.contributions:
                    if c.edit_id == e and c.value in created:
                        c.created = created[c.value]
        seconds = time.perf_counter() - start
        self.rekey_seconds.append(seconds)
        return seconds

    def describe(self) -> dict[str, Any]:
        return {"version": self.version, "edits": len(self.raw), "last_loss": self.last_loss,
                "distance_from_identity": float(torch.linalg.matrix_norm(self.projection - torch.eye(self.dim))),
                "train_seconds_total": sum(self.train_seconds), "rekey_seconds_total": sum(self.rekey_seconds)}

    # ------------------------------------------------------------------ storage
    def side_files(self) -> dict[str, bytes]:
        tensors = {"projection": self.projection.contiguous()}
        rows = []
        for i, e in enumerate(sorted(self.raw)):
            r = self.raw[e]
            tensors[f"keys.{i}"] = r.keys.contiguous()
            tensors[f"nulls.{i}"] = r.nulls.contiguous()
            if r.aug is not None:
                tensors[f"aug.{i}"] = r.aug.contiguous()
            rows.append({"edit_id": e, "row": i, "default_radius": r.default_radius, "kinds": r.kinds,
                         "values": r.values})
        meta = {"version": self.version, "dim": self.dim, "pending": self.pending, "rows": rows}
        return {TUNING_FILE: st_save(tensors), TUNING_META: json.dumps(meta, sort_keys=True).encode("utf-8")}

    def load_side_files(self, files: Mapping[str, bytes]) -> bool:
        """Restore P and the raw keys; False (P = I, nothing to re-project) for older codebooks."""
        if TUNING_FILE not in files or TUNING_META not in files:
            return False
        meta = json.loads(files[TUNING_META].decode("utf-8"))
        tensors = st_load(files[TUNING_FILE])
        if int(meta["dim"]) != self.dim:
            return False
        self.projection = tensors["projection"].float()
        self.version, self.pending = int(meta["version"]), int(meta["pending"])
        self.raw = {r["edit_id"]: RawKeys(tensors[f"keys.{r['row']}"], tensors.get(f"aug.{r['row']}"),
                                          tensors[f"nulls.{r['row']}"], float(r["default_radius"]),
                                          list(r["kinds"]), list(r["values"]))
                    for r in meta["rows"]}
        return True


class ProjectedKeys:
    """The editor's key encoder with the projection applied to every key it returns (stored and queried
    alike); ``raw`` is the unprojected :class:`~reasonedit_plugin.embedding.KeyEncoder`."""

    def __init__(self, raw: Any, tuner_factory: Any):
        self.raw = raw
        self._factory = tuner_factory
        self._tuner: KeyTuner | None = None

    @property
    def tuner(self) -> KeyTuner:
        if self._tuner is None:
            self._tuner = self._factory(self.raw.setup.dim)
        return self._tuner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.raw, name)

    def combine(self, vision: torch.Tensor, texts: Sequence[str]) -> torch.Tensor:
        return self.tuner.project(self.raw.combine(vision, texts))

    def encode(self, images: Sequence[Any], texts: Sequence[str]) -> torch.Tensor:
        return self.tuner.project(self.raw.encode(images, texts))

    def encode_from_inputs(self, inputs: Mapping[str, Any], texts: Sequence[str]) -> torch.Tensor:
        return self.tuner.project(self.raw.encode_from_inputs(inputs, texts))
