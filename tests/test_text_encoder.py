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


def test_bfloat16_weights_give_float32_vectors_close_to_float32s(text_encoder):
    """embedding.text_dtype: bfloat16 (a serving setting) changes the weights, not the vectors' dtype, and the
    vectors stay within cosine 0.9995 of float32's on questions and rationale sentences (0.99991 on a one-letter
    text here, a shade under 0.9999 on the CI machine's CPU: bfloat16 kernels round differently per CPU)."""
    from reasonedit_plugin.config import ReasonEditConfig
    from reasonedit_plugin.errors import ConfigError
    from reasonedit_plugin.text_encoder import TextEncoder, shared_text_encoder

    bf16 = shared_text_encoder(dtype="bfloat16")
    assert bf16 is not text_encoder and bf16 is shared_text_encoder(dtype="bfloat16")
    assert next(bf16.model.parameters()).dtype == torch.bfloat16
    texts = ["Which tribe does this red shape belong to?", "Red circles belong to the Kesh tribe.",
             "This one is a brown circle; Taro members are brown circles.", "x"]
    for one in (bf16.encode(texts), torch.cat([bf16.encode([t]) for t in texts])):
        assert one.dtype == torch.float32
        cos = torch.nn.functional.cosine_similarity(one, text_encoder.encode(texts))
        assert cos.min() > 0.9995 and not torch.equal(one, text_encoder.encode(texts))
    from fakes import FakeVLM
    from reasonedit_plugin.editor import ReasonEditor

    config = ReasonEditConfig(embedding={"text_dtype": "bfloat16"}, guard={"policy": "off"})
    assert ReasonEditor(FakeVLM(), config).text_encoder is bf16
    with pytest.raises(ConfigError, match="text_dtype"):
        ReasonEditConfig(embedding={"text_dtype": "float16"})
    with pytest.raises(ConfigError, match="text_dtype"):
        TextEncoder(dtype="int8")
