"""How a VLM family scores answers and generates text (METHOD.md §6-§7), one scorer per kind of model.

The row's ``scorer`` (:data:`~reasonedit_plugin.model_specs.SCORERS`) picks one:

- ``causal_lm`` (most VLMs): option tokens are appended after the templated prompt and read by the same
  decoder; every per-token processor output is extended over them as the row's ``token_inputs`` say
  (attention masks with the real-token mask, PaliGemma's ``token_type_ids`` with 1 so options stay in
  the causal suffix, cross-attention masks of any rank by repeating the last prompt position).
- ``encoder_decoder`` (BLIP VQA): the text encoder reads the prompt, the answer decoder is teacher-forced
  with ``[start] + option`` and its logits are read from the row's ``decoder_module``.
- ``image_text_similarity`` (CLIP): multiple choice only; option i's score is the log-softmax over the
  options of the image-text similarity of ``"<option>. <prompt>"`` (cut to the text encoder's length).

Every pass is ``torch.inference_mode`` and greedy; scores are float32 on the CPU.
"""

from __future__ import annotations

import copy
import functools
import inspect
import logging
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from .errors import ReasonEditError, UnsupportedModelError
from .hooks import modify_outputs
from .model_spec import TokenInput, config_value

logger = logging.getLogger(__name__)

TOP_K = 10
"""Top-k of EasyEdit's multimodal locality (``multimodal_locality_acc``: top-10 token agreement)."""

__all__ = ["TOP_K", "TokenScores", "extend_token_inputs", "generate", "next_token_logits", "option_nll", "token_scores"]


@dataclass
class TokenScores:
    """Teacher-forced scores of one continuation's tokens after a prompt."""

    targets: torch.Tensor
    """The continuation's token ids, long [T]."""
    logprobs: torch.Tensor
    """log p(target_t | prompt, targets_<t), float32 [T]."""
    predicted: torch.Tensor
    """The model's most likely token at each of those positions, long [T] (EasyEdit's token accuracy
    compares it with ``targets``)."""
    top_ids: torch.Tensor
    """The TOP_K most likely tokens at each position, long [T, TOP_K] (EasyEdit's locality compares the
    pre- and post-edit lists)."""

    @property
    def nll(self) -> float:
        """Summed negative log-likelihood (METHOD.md §7: no length normalisation)."""
        return float(-self.logprobs.sum())

    @property
    def accuracy(self) -> float:
        """Fraction of positions where the most likely token is the target's."""
        return float((self.predicted == self.targets).float().mean())


def _not_generative(vlm: Any, what: str) -> UnsupportedModelError:
    return UnsupportedModelError(
        f"{vlm.spec.model_type} scores image-text similarity and cannot {what}; ask it multiple-choice "
        "questions (give choices), or use a generative VLM for open answers, captions and patches.")


def _tokenize(vlm: Any, continuations: Sequence[str]) -> list[list[int]]:
    if not continuations:
        raise ReasonEditError("give at least one option/continuation.")
    out = []
    for cont in continuations:
        ids = vlm.tokenizer(cont, add_special_tokens=False)["input_ids"]
        if not ids:
            raise ReasonEditError(f"option {cont!r} tokenizes to nothing; give a non-empty option.")
        out.append(list(ids))
    return out


def _padded(token_lists: list[list[int]], pad_id: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    n, longest = len(token_lists), max(len(t) for t in token_lists)
    cont = torch.full((n, longest), pad_id, dtype=like.dtype, device=like.device)
    real = torch.zeros((n, longest), dtype=torch.bool, device=like.device)
    for row, ids in enumerate(token_lists):
        cont[row, : len(ids)] = torch.tensor(ids, dtype=like.dtype)
        real[row, : len(ids)] = True
    return cont, real


def _pad_id(vlm: Any) -> int:
    pad = vlm.tokenizer.pad_token_id
    return int(pad) if pad is not None else 0


def extend_token_inputs(spec: Any, base: Any, cont: torch.Tensor, real: torch.Tensor) -> dict[str, Any]:
    """Processor outputs for ``prompt + cont``: ``input_ids`` concatenated, every per-token output
    extended over the appended positions as ``spec.token_inputs`` say (outputs shaped like
    ``input_ids`` and not listed get 0). An unlisted output with a text axis of another shape is an
    error naming the row field to set."""
    prompt_ids = base["input_ids"]
    n, seq = prompt_ids.shape
    rules = {t.name: t for t in spec.token_inputs}
    out = dict(base)
    for key, value in base.items():
        if key == "input_ids" or not isinstance(value, torch.Tensor):
            continue
        rule = rules.get(key)
        if rule is None:
            if value.shape == prompt_ids.shape:
                rule = TokenInput(key, 0)
            elif (value.dim() >= 2 and value.shape[0] == n and value.shape[1] == seq
                  and key not in spec.vision_inputs and key != "pixel_values"):
                raise UnsupportedModelError(
                    f"{spec.model_type}: processor output {key!r} (shape {tuple(value.shape)}) has one entry per "
                    f"text token but the row's token_inputs do not say how to extend it over option tokens; add "
                    f"TokenInput({key!r}, fill=0 | 1 | 'mask' | 'last', seq_dim=1) to the row.")
            else:
                continue
        out[key] = _extend(value, rule, real)
    out["input_ids"] = torch.cat([prompt_ids, cont], dim=1)
    return out


def _extend(value: torch.Tensor, rule: TokenInput, real: torch.Tensor) -> torch.Tensor:
    d = rule.seq_dim
    if d >= value.dim():
        raise UnsupportedModelError(f"TokenInput {rule.name!r}: seq_dim={d} but the output has rank {value.dim()}.")
    n, longest = real.shape
    shape = list(value.shape)
    shape[d] = longest
    if rule.fill == "last":
        tail = value.narrow(d, value.shape[d] - 1, 1).expand(*shape)
    elif rule.fill == "mask":
        view = [1] * value.dim()
        view[0], view[d] = n, longest
        tail = real.to(value.dtype).reshape(view).expand(*shape)
    else:
        tail = torch.full(shape, int(rule.fill), dtype=value.dtype, device=value.device)
    return torch.cat([value, tail.to(value.dtype)], dim=d)


def _repeated_prompt(vlm: Any, image: Any, text: str, n: int) -> Any:
    base = vlm.build_inputs([image] * n, [text] * n)
    ids = base["input_ids"]
    if not bool((ids == ids[:1]).all()):
        raise ReasonEditError("internal: the repeated prompt was tokenized differently per row.")
    return base


def _decoder_start(vlm: Any) -> int:
    start = config_value(vlm.model.config, vlm.spec.decoder_start_attr)
    if start is None:
        raise UnsupportedModelError(f"{vlm.spec.model_type}: config has no {vlm.spec.decoder_start_attr!r}; fix the "
                                    "row's decoder_start_attr.")
    return int(start)


def _decoder_logits(vlm: Any, inputs: Any, decoder_ids: torch.Tensor, decoder_mask: torch.Tensor) -> torch.Tensor:
    seen: list[Any] = []
    with modify_outputs(vlm.model, vlm.spec.decoder_module, lambda m, i, o: seen.append(o)):
        vlm.model(**inputs, decoder_input_ids=decoder_ids, decoder_attention_mask=decoder_mask)
    logits = getattr(seen[-1], "logits", None) if seen else None
    if logits is None:
        raise UnsupportedModelError(f"{vlm.spec.model_type}: module {vlm.spec.decoder_module!r} returned no "
                                    ".logits; point the row's decoder_module at the answer decoder's LM head model.")
    return logits


def token_scores(vlm: Any, image: Any, text: str, continuations: Sequence[str]) -> list[TokenScores]:
    """Per continuation, its tokens' teacher-forced log-probabilities after the prompt of ``text``,
    batched over continuations."""
    kind = vlm.spec.scorer
    if kind == "image_text_similarity":
        raise _not_generative(vlm, "score a continuation token by token")
    token_lists = _tokenize(vlm, list(continuations))
    n = len(token_lists)
    base = _repeated_prompt(vlm, image, text, n)
    cont, real = _padded(token_lists, _pad_id(vlm), base["input_ids"])
    longest = cont.shape[1]
    with torch.inference_mode():
        if kind == "encoder_decoder":
            start = torch.full((n, 1), _decoder_start(vlm), dtype=cont.dtype, device=cont.device)
            decoder_mask = torch.cat([torch.ones_like(real[:, :1]), real], dim=1).long()
            logits = _decoder_logits(vlm, base, torch.cat([start, cont], dim=1), decoder_mask).float()
            pred = logits[:, :longest]
        else:
            inputs = extend_token_inputs(vlm.spec, base, cont, real)
            # the positions from the prompt's last token on, read from the end (models that prepend image
            # embeddings outside input_ids, legacy BLIP-2, return longer logits)
            pred = _logits(vlm, inputs, longest + 1)[:, -(longest + 1):-1].float()
    logp = pred.log_softmax(-1)
    picked = logp.gather(-1, cont.unsqueeze(-1)).squeeze(-1)
    best = pred.argmax(-1)
    top = torch.topk(pred, k=min(TOP_K, pred.shape[-1]), dim=-1).indices
    return [TokenScores(cont[row, : len(ids)].cpu(), picked[row, : len(ids)].cpu(), best[row, : len(ids)].cpu(),
                        top[row, : len(ids)].cpu())
            for row, ids in enumerate(token_lists)]


def option_nll(vlm: Any, image: Any, text: str, options: Sequence[str]) -> list[float]:
    """Per option, the score whose minimum is the model's choice: the summed NLL of its tokens
    (``causal_lm``, ``encoder_decoder``), or minus the log-softmax over the options of the image-text
    similarity (``image_text_similarity``)."""
    if vlm.spec.scorer != "image_text_similarity":
        return [s.nll for s in token_scores(vlm, image, text, options)]
    options = list(options)
    if not options:
        raise ReasonEditError("give at least one option.")
    prompt = vlm.prompt_text(text)
    texts = [f"{option}. {prompt}" for option in options]
    kwargs: dict[str, Any] = dict(return_tensors="pt", padding=True)
    limit = _text_limit(vlm)
    if limit is not None:
        kwargs.update(truncation=True, max_length=limit)
        full = max(len(vlm.tokenizer(t)["input_ids"]) for t in texts)
        if full > limit:
            logger.info("%s: option texts of %d tokens cut to %d (the end of the fused question is dropped; "
                        "the option is kept)", vlm.spec.model_type, full, limit)
    images = vlm._prepare_images([image])
    inputs = vlm.processor(images=images, text=texts, **kwargs).to(vlm.device)
    with torch.inference_mode():
        logits = vlm.model(**inputs).logits_per_image[0].float()
    return [float(v) for v in -logits.log_softmax(-1).cpu()]


def _text_limit(vlm: Any) -> int | None:
    if vlm.spec.max_text_tokens_attr is None:
        return None
    value = config_value(vlm.model.config, vlm.spec.max_text_tokens_attr)
    return int(value) if value is not None else None


def _first_token_ids(tokenizer: Any, words: Sequence[str]) -> set[int]:
    ids = set()
    for word in words:
        tokens = tokenizer(word, add_special_tokens=False)["input_ids"]
        if tokens:
            ids.add(int(tokens[0]))
    return ids


def yes_share(tokenizer: Any, logits: torch.Tensor) -> float:
    """P(yes) / (P(yes) + P(no)) from one next-token distribution's logits [V] (METHOD.md §6). Case and
    leading-space variants of yes/no count; first tokens shared by both are ignored."""
    return yes_shares(tokenizer, logits[None])[0]


def yes_shares(tokenizer: Any, logits: torch.Tensor) -> list[float]:
    """:func:`yes_share` of each row of ``logits`` [B, V]."""
    yes = _first_token_ids(tokenizer, ["Yes", "yes", " Yes", " yes"])
    no = _first_token_ids(tokenizer, ["No", "no", " No", " no"])
    yes, no = yes - no, no - yes
    if not yes or not no:
        raise ReasonEditError("the tokenizer gives 'yes' and 'no' the same first token; a yes-probability "
                              "cannot tell them apart.")
    probs = logits.float().softmax(-1)
    p_yes, p_no = probs[:, sorted(yes)].sum(-1), probs[:, sorted(no)].sum(-1)
    total = p_yes + p_no
    return [float(y / t) if t > 0 else 0.5 for y, t in zip(p_yes.tolist(), total.tolist())]


def next_token_logits(vlm: Any, image: Any, texts: Sequence[str]) -> torch.Tensor:
    """float32 [len(texts), V]: per text, the distribution of the first answer token after its prompt, on the same
    image (one batched pass; rows of unequal length are padded and each read at its own last real token)."""
    if vlm.spec.scorer == "image_text_similarity":
        raise _not_generative(vlm, "predict a next token (yes-probability, patches)")
    texts = list(texts)
    if not texts:
        raise ReasonEditError("next_token_logits needs at least one text.")
    if vlm.spec.scorer == "encoder_decoder":  # one text per pass: BLIP's answer decoder reads the padding too
        return torch.cat([_first_decoder_logits(vlm, image, text) for text in texts])
    # left padding where the row allows it: every row ends at the last position, whose logits alone are
    # computed (the LM head over a 30k vocabulary on every position from the shortest row's end on cost more
    # than the rows' passes)
    inputs = vlm.build_inputs([image] * len(texts), texts, padding_side="left" if vlm.spec.pad_left else None)
    with torch.inference_mode():
        mask = inputs.get("attention_mask")
        # tokens after each row's last real one (a processor that pads on the right all the same)
        after = (torch.zeros(len(texts), dtype=torch.long) if mask is None else
                 mask.flip(1).long().argmax(1).cpu())
        logits = _logits(vlm, inputs, int(after.max()) + 1)
        return logits[torch.arange(len(texts)), logits.shape[1] - 1 - after.to(logits.device)].float()


def _first_decoder_logits(vlm: Any, image: Any, text: str) -> torch.Tensor:
    inputs = vlm.build_inputs([image], [text])
    start = torch.full((1, 1), _decoder_start(vlm), dtype=inputs["input_ids"].dtype, device=vlm.device)
    with torch.inference_mode():
        return _decoder_logits(vlm, inputs, start, torch.ones_like(start))[:, -1].float()


def _logits(vlm: Any, inputs: Any, keep: int) -> torch.Tensor:
    """The causal LM's logits [B, >= keep, V] with at least the last ``keep`` positions: only those when its
    forward takes ``logits_to_keep`` (the LM head over a 30k vocabulary on every prompt position was ~40 % of
    the embedded model's forward), all of them otherwise. Read positions from the end."""
    inputs = {k: v for k, v in inputs.items() if k != "labels"}  # (PaliGemma's processor makes some: no loss here)
    if _keeps_logits(type(vlm.model)):
        return vlm.model(**inputs, logits_to_keep=keep).logits
    return vlm.model(**inputs).logits


@functools.lru_cache(maxsize=None)
def _keeps_logits(model_class: type) -> bool:
    return "logits_to_keep" in inspect.signature(model_class.forward).parameters


def generate(vlm: Any, image: Any, text: str, max_new_tokens: int) -> str:
    """Greedy answer to ``text`` about ``image`` (the decoded new tokens only, stripped)."""
    if vlm.spec.scorer == "image_text_similarity":
        raise _not_generative(vlm, "generate text")
    inputs = vlm.build_inputs([image], [text])
    config = copy.deepcopy(vlm.model.generation_config)
    config.do_sample = False
    config.num_beams = 1
    config.temperature = config.top_p = config.top_k = None
    config.max_new_tokens = int(max_new_tokens)
    if config.pad_token_id is None:
        pad = vlm.tokenizer.pad_token_id
        config.pad_token_id = pad if pad is not None else vlm.tokenizer.eos_token_id
    with torch.inference_mode():
        out = vlm.model.generate(**inputs, generation_config=config)
    prompt = inputs["input_ids"][0]
    # decoder-only models return prompt + answer; encoder-decoders only the answer
    new = out[0, prompt.shape[0]:] if torch.equal(out[0, : prompt.shape[0]], prompt) else out[0]
    return vlm.tokenizer.decode(new, skip_special_tokens=True).strip()
