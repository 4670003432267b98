"""The sentence encoder of the key (``text_encoder.py``): a single text (a query's question) takes the
model's modules straight, and must give sentence-transformers' own ``encode`` vector bit for bit."""

from __future__ import annotations

import pytest
import torch


@pytest.mark.parametrize("text", ["Which tribe does this red shape belong to?", "x",
                                  "A longer sentence, with punctuation; and rare words: zygote, quixotic."])
def test_one_text_equals_sentence_transformers_encode(text_encoder, text):
    ours = text_encoder.encode([text])
    theirs = text_encoder.model.encode([text], convert_to_tensor=True, normalize_embeddings=False).float().cpu()
    assert ours.shape == (1, text_encoder.dim) and ours.dtype == torch.float32
    assert torch.equal(ours, theirs)


def test_batches_and_edge_cases(text_encoder):
    texts = ["one", "two words", "three words here"]
    batch = text_encoder.encode(texts)
    assert batch.shape == (3, text_encoder.dim)
    for i, t in enumerate(texts):  # padding in a batch moves the last bits only
        assert torch.allclose(batch[i], text_encoder.encode([t])[0], atol=1e-5)
    assert text_encoder.encode([]).shape == (0, text_encoder.dim)
    with pytest.raises(TypeError):
        text_encoder.encode("a string")
