"""The key embedding E(image, text) = concat[v(image); scale * t(text)] (METHOD.md §3).

v(image) is the mean-pooled INPUT activation of one MLP linear inside the VLM's own vision encoder
(captured by a hook in ``vlm.py``/``hooks.py``; the language model is not run); t(text) is a sentence
embedding. Distances between keys are Euclidean.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch
from PIL import Image

from .errors import ReasonEditError
from .text_encoder import TextEncoder


def image_digest(image: Image.Image) -> str:
    """Content hash of an image (mode, size, pixels): the vision-feature cache key."""
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{image.mode}{image.size}".encode())
    h.update(image.tobytes())
    return h.hexdigest()


def model_fingerprint(model: torch.nn.Module) -> str:
    """Identity of a model's weights: its config plus a checksum of every parameter (cheap, exact enough
    to tell checkpoints apart)."""
    h = hashlib.sha256()
    config = getattr(model, "config", None)
    if config is not None:
        values = {k: v for k, v in config.to_dict().items()
                  if k not in ("_name_or_path", "transformers_version", "_commit_hash")}
        h.update(json.dumps(values, sort_keys=True, default=str).encode())
    with torch.no_grad():
        for name, p in model.named_parameters():
            h.update(name.encode())
            h.update(f"{p.double().sum().item():.6e}".encode())
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class KeySetup:
    """What stored keys depend on; a codebook refuses to load into a different setup."""

    model_type: str
    model_fingerprint: str
    vision_module: str
    scale: float
    text_encoder: str
    vision_dim: int
    text_dim: int

    @property
    def dim(self) -> int:
        return self.vision_dim + self.text_dim

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class KeyEncoder:
    """Builds keys for (image, text) pairs, batched, with a small LRU cache of vision features."""

    def __init__(self, vlm: Any, text_encoder: TextEncoder, vision_module: str, scale: float,
                 batch_size: int = 16, cache_size: int = 256):
        self.vlm = vlm
        self.text_encoder = text_encoder
        self.vision_module = vision_module
        self.scale = float(scale)
        self.batch_size = batch_size
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._cache_size = cache_size
        self._text_cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._text_cache_size = 16 * cache_size
        self._setup: KeySetup | None = None

    @property
    def setup(self) -> KeySetup:
        if self._setup is None:
            probe = self.vision([Image.new("RGB", (32, 32))])
            self._setup = KeySetup(
                model_type=self.vlm.spec.model_type,
                model_fingerprint=model_fingerprint(self.vlm.model),
                vision_module=self.vision_module,
                scale=self.scale,
                text_encoder=self.text_encoder.fingerprint,
                vision_dim=int(probe.shape[1]),
                text_dim=self.text_encoder.dim,
            )
        return self._setup

    def vision(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """v(image) for each image, float32 [B, Dv]; repeated images are computed once."""
        digests = [image_digest(im) for im in images]
        missing = [d for d in dict.fromkeys(digests) if d not in self._cache]
        if missing:
            first = {d: im for d, im in zip(digests, images)}
            for start in range(0, len(missing), self.batch_size):
                chunk = missing[start:start + self.batch_size]
                feats = self.vlm.vision_features([first[d] for d in chunk], self.vision_module)
                for d, f in zip(chunk, feats):
                    self._remember(d, f.detach().float().cpu())
        out = torch.stack([self._cache[d] for d in digests])
        for d in dict.fromkeys(digests):
            self._cache.move_to_end(d)
        return out

    def cached_vision(self, image: Image.Image) -> tuple[str, torch.Tensor | None]:
        """The image's cache key (a digest of its pixels) and v(image) if those pixels were encoded before
        (float32 [Dv]; a use, as in :meth:`vision`), else None."""
        digest = image_digest(image)
        feature = self._cache.get(digest)
        if feature is not None:
            self._cache.move_to_end(digest)
        return digest, feature

    def remember_vision(self, digest: str, feature: torch.Tensor) -> torch.Tensor:
        """Keep ``feature`` as v(image) for the image of cache key ``digest`` (:meth:`cached_vision`): the key
        layer's input read from another pass over the same pixels (:meth:`VLM.vision_tap`), so the next key of
        this image needs no vision pass of its own. Returns what is kept (float32 [Dv], on the CPU)."""
        kept = feature.detach().float().cpu()
        self._remember(digest, kept)
        return kept

    def _remember(self, digest: str, feature: torch.Tensor) -> None:
        self._cache[digest] = feature
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    def combine(self, vision: torch.Tensor, texts: Sequence[str]) -> torch.Tensor:
        """concat[v; scale * t(text)] for precomputed vision features and texts (same length)."""
        if len(texts) != vision.shape[0]:
            raise ReasonEditError(f"{vision.shape[0]} images but {len(texts)} texts; give one text per image.")
        text = self.text(texts)
        keys = torch.cat([vision.float(), self.scale * text], dim=1)
        if not torch.isfinite(keys).all():
            raise ReasonEditError(
                "the key embedding has NaN/inf values; the vision layer "
                f"{self.vision_module!r} produced non-finite activations for this image. "
                "Check the image and the model dtype (use float32 on CPU), or choose another layer.")
        return keys

    def text(self, texts: Sequence[str]) -> torch.Tensor:
        """t(text) for each text, float32 [B, Dt]. A single text (a question at answer time) comes from an
        LRU cache when it was asked before (the same question is asked of many images); batches (edits)
        are encoded together as they always were, so a cached value is exactly what encoding the text
        alone gives and the cache never changes a key."""
        if len(texts) != 1:
            return self.text_encoder.encode(list(texts))
        text = texts[0]
        hit = self._text_cache.get(text)
        if hit is None:
            hit = self._text_cache[text] = self.text_encoder.encode([text])[0]
            while len(self._text_cache) > self._text_cache_size:
                self._text_cache.popitem(last=False)
        else:
            self._text_cache.move_to_end(text)
        return hit[None]

    def encode(self, images: Sequence[Image.Image], texts: Sequence[str]) -> torch.Tensor:
        """Keys E(image_i, text_i), float32 [B, Dv + Dt]."""
        return self.combine(self.vision(images), texts)

    def encode_from_inputs(self, inputs: Mapping[str, Any], texts: Sequence[str]) -> torch.Tensor:
        """Keys from processor outputs (pixel tensors), for callers that never see the PIL image."""
        return self.combine(self.vision_from_inputs(inputs), texts)

    def vision_from_inputs(self, inputs: Mapping[str, Any]) -> torch.Tensor:
        """v(image) from processor outputs, float32 [B, Dv] (not cached: there is no image to name it by)."""
        return self.vlm.vision_features_from_inputs(inputs, self.vision_module).float().cpu()
