"""A Hugging Face VLM and its processor behind one small interface (docs/ARCHITECTURE.md, "VLM interface").

Everything family-specific comes from the :class:`~reasonedit_plugin.model_specs.ModelSpec` row of the
model's ``config.model_type``; every hook goes through :mod:`reasonedit_plugin.hooks`.

- Keys (METHOD.md §3): :meth:`VLM.vision_features` runs only the vision part (``get_image_features``
  or the vision tower), captures the INPUT of one module and mean-pools it over each image's tokens
  (all crops/tiles of an image together; Qwen's packed patches split with ``image_grid_thw``). The
  forward stops as soon as the module has fired.
- Scoring (METHOD.md §7): :meth:`VLM.option_nll` sums the NLL of each option's tokens appended after
  the templated prompt, batched over options, no length normalisation; how depends on the row's
  ``scorer`` (:mod:`reasonedit_plugin.scoring`: decoder-only, encoder-decoder, image-text similarity).
- Patches (METHOD.md §6): :meth:`VLM.yes_probability` and :meth:`VLM.continuation_nll`.
- Shared vision pass (METHOD.md §4 (c)): inside :meth:`VLM.vision_tap`, the first pass of any call through the
  key's module hands a callback the first image's feature, pooled as :meth:`VLM.vision_features` pools it;
  the callback may stop the pass there.

All passes are ``torch.inference_mode``, greedy, with the model in eval mode; images are thumbnailed to
``max_image_side`` first.
"""

from __future__ import annotations

import contextlib
import logging
import os
import types
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence, Union

import torch
from PIL import Image

from . import scoring
from .errors import ReasonEditError, UnsupportedModelError
from .hooks import Tapped, capture_inputs, find_module, tap_input
from .model_specs import ModelSpec, get_model_spec

logger = logging.getLogger(__name__)

__all__ = ["VLM", "load_processor", "processor_without_video"]

ImageInput = Union[Image.Image, str, os.PathLike]

_DEFAULT_MAX_SIDE = 512  # EmbeddingConfig.max_image_side (reference: 512)


def processor_without_video(processor_cls: type, optional_args: Sequence[str] = ()) -> type:
    """A subclass of ``processor_cls`` without its video sub-processor.

    transformers 5 requires and type-checks every sub-processor; the video processors need torchvision,
    which an image-only project should not require. The subclass drops ``video_processor`` from the
    processor's attributes, so it is neither checked nor loaded by ``from_pretrained``; videos are never
    passed here. ``optional_args`` (a row's ``optional_processor_args``) are ``__init__`` arguments that
    the class requires and that get a None default (SmolVLM requires ``video_processor``).
    """

    class ImageOnly(processor_cls):  # type: ignore[misc, valid-type]
        @classmethod
        def get_attributes(cls) -> list[str]:
            return [name for name in processor_cls.get_attributes() if "video" not in name]

    if optional_args:
        ImageOnly.__init__ = _with_none_defaults(processor_cls.__init__, optional_args)  # type: ignore[method-assign]
    ImageOnly.__name__ = processor_cls.__name__
    ImageOnly.__qualname__ = processor_cls.__qualname__
    ImageOnly.__module__ = processor_cls.__module__
    return ImageOnly


def _with_none_defaults(init: Any, names: Sequence[str]) -> Any:
    """The same ``__init__`` (ProcessorMixin.from_args_and_dict reads its code object) with a None default
    for each argument in ``names`` and for the required ones before them."""
    code = init.__code__
    params = code.co_varnames[1:code.co_argcount]
    positions = [params.index(n) for n in names if n in params]
    if not positions:
        return init
    defaults = init.__defaults__ or ()
    missing = len(params) - len(defaults) - min(positions)
    if missing <= 0:
        return init
    patched = types.FunctionType(code, init.__globals__, init.__name__, (None,) * missing + defaults,
                                 init.__closure__)
    patched.__kwdefaults__ = init.__kwdefaults__
    return patched


def _torchvision_available() -> bool:
    try:
        from transformers.utils import is_torchvision_available
    except ImportError:  # pragma: no cover
        return False
    return bool(is_torchvision_available())


def load_processor(path: Union[str, os.PathLike], spec: ModelSpec) -> Any:
    """The processor of a local model folder; image processors fall back to their PIL backends and
    processors that want a video processor load without one when torchvision is missing."""
    import transformers
    from transformers.models.auto.processing_auto import PROCESSOR_MAPPING_NAMES

    if not (spec.needs_video_processor and not _torchvision_available()):
        return transformers.AutoProcessor.from_pretrained(str(path), local_files_only=True)
    name = PROCESSOR_MAPPING_NAMES.get(spec.model_type)
    processor_cls = getattr(transformers, name, None) if name else None
    if processor_cls is None:
        raise UnsupportedModelError(
            f"transformers {transformers.__version__} has no processor class for {spec.model_type!r}.")
    return processor_without_video(processor_cls, spec.optional_processor_args).from_pretrained(
        str(path), local_files_only=True)


def _load_image(image: ImageInput) -> Image.Image:
    if isinstance(image, Image.Image):
        return image
    if isinstance(image, (str, os.PathLike)):
        try:
            with Image.open(image) as img:
                img.load()
                return img.copy()
        except (OSError, ValueError) as exc:
            raise ReasonEditError(f"cannot read image {str(image)!r}: {exc}. Give a PIL image or a readable "
                                  "image file.") from exc
    raise ReasonEditError(f"expected a PIL image or an image path, got {type(image).__name__}.")


class VLM:
    """A Hugging Face vision-language model + processor, driven by its :class:`ModelSpec` row."""

    def __init__(self, model: torch.nn.Module, processor: Any, spec: ModelSpec | None = None,
                 device: Union[str, torch.device, None] = None, max_image_side: int = _DEFAULT_MAX_SIDE):
        self.spec = spec if spec is not None else get_model_spec(model)
        if device is not None:
            model = model.to(device)
        self.model = model.eval()
        self.processor = processor
        self.tokenizer = getattr(processor, "tokenizer", processor)
        if max_image_side < 16:
            raise ReasonEditError(f"max_image_side={max_image_side} must be >= 16.")
        self.max_image_side = int(max_image_side)
        self._image_only = True  # False once the image processor alone proved not to serve a vision pass
        self._paths: dict[str, str] = {}  # module path as asked -> as it exists (a walk of every module)
        self._tap_inputs: list[Any] | None = None  # inputs built while a vision_tap is open
        self._prompts: dict[str, str] = {}  # text -> its rendered prompt
        find_module(self.model, self.spec.vision_tower)  # fail early if the row does not fit the class

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_pretrained(cls, path: Union[str, os.PathLike], dtype: Union[str, torch.dtype, None] = None,
                        device: Union[str, torch.device, None] = None,
                        max_image_side: int = _DEFAULT_MAX_SIDE) -> "VLM":
        """Load a VLM from a LOCAL folder (nothing is downloaded), with the class its spec row names."""
        import transformers

        folder = Path(path)
        if not (folder / "config.json").is_file():
            raise ReasonEditError(
                f"{str(path)!r} is not a local model folder with a config.json; download the model first "
                "(e.g. `huggingface-cli download <name> --local-dir <folder>`) and pass the folder.")
        config = transformers.AutoConfig.from_pretrained(str(folder), local_files_only=True)
        spec = get_model_spec(config)
        model_cls = getattr(transformers, spec.model_class, None) or transformers.AutoModelForImageTextToText
        if isinstance(dtype, str):
            dtype = getattr(torch, dtype)
        model = model_cls.from_pretrained(str(folder), dtype=dtype, local_files_only=True)
        processor = load_processor(folder, spec)
        return cls(model, processor, spec=spec, device=device, max_image_side=max_image_side)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    # ------------------------------------------------------------------ layers
    def num_blocks(self) -> int:
        return self.spec.num_blocks(self.model.config)

    def vision_candidates(self) -> list[str]:
        """AutoLayer candidates (METHOD.md §5): every linear of every vision block's MLP, then the
        linears of the projector/merger modules (the projector itself when it has none)."""
        out: list[str] = []
        for block in range(self.num_blocks()):
            mlp_path = self.spec.mlp_template.format(L=block)
            mlp = find_module(self.model, mlp_path)
            out.extend(f"{mlp_path}.{name}" for name, mod in mlp.named_modules()
                       if name and isinstance(mod, torch.nn.Linear))
        for proj_path in self.spec.projectors:
            proj = find_module(self.model, proj_path)
            linears = [f"{proj_path}.{name}" for name, mod in proj.named_modules()
                       if name and isinstance(mod, torch.nn.Linear)]
            out.extend(linears or [proj_path])
        return out

    def resolve_layer(self, layer: Union[int, str, None]) -> str:
        """None -> the spec's default block; int -> that block's first MLP linear; str -> a validated
        module path (older layouts, e.g. the reference's ``visual.blocks.24.mlp.linear_fc1``, are
        rewritten through the row's ``legacy_prefixes``)."""
        if isinstance(layer, bool):
            raise ReasonEditError("layer must be None, a block index or a module path, not a bool.")
        if layer is None:
            return self.spec.layer_path(self.spec.default_layer(self.model.config))
        if isinstance(layer, int):
            blocks = self.num_blocks()
            index = layer + blocks if layer < 0 else layer
            if not 0 <= index < blocks:
                raise ReasonEditError(
                    f"layer={layer} is out of range: {self.spec.model_type} has {blocks} vision blocks "
                    f"(0..{blocks - 1}).")
            return self.spec.layer_path(index)
        if isinstance(layer, str):
            if layer == "auto":
                raise ReasonEditError(
                    "layer='auto' is resolved by AutoLayer (topology.calibrate / ReasonEditor with a "
                    "calibration set), not by VLM.resolve_layer; pass a block index or module path here.")
            if layer.lstrip("-").isdigit():
                return self.resolve_layer(int(layer))
            return self._existing_path(layer)
        raise ReasonEditError(f"layer must be None, an int or a module path, got {type(layer).__name__}.")

    def _existing_path(self, path: str) -> str:
        found = self._paths.get(path)
        if found is None:
            found = self._paths[path] = self._find_path(path)
        return found

    def _find_path(self, path: str) -> str:
        names = {name for name, _ in self.model.named_modules()}
        if path in names:
            return path
        for current, legacy in self.spec.legacy_prefixes:
            if path.startswith(legacy) and current + path[len(legacy):] in names:
                rewritten = current + path[len(legacy):]
                logger.info("module path %r rewritten to %r (transformers 5 layout)", path, rewritten)
                return rewritten
        find_module(self.model, path)  # raises with the closest paths
        return path  # pragma: no cover

    # ------------------------------------------------------------------ prompts and inputs
    def _chat_template(self) -> str | None:
        template = getattr(self.processor, "chat_template", None) or getattr(self.tokenizer, "chat_template", None)
        if isinstance(template, Mapping):  # several named templates: the default one
            template = template.get("default") or next(iter(template.values()), None)
        return template

    def prompt_text(self, text: str) -> str:
        """The full prompt string: one user turn with the image then ``text``, generation prompt added
        (the chat template when the family uses one, else the row's ``prompt_template``). Remembered per
        text (rendering a chat template costs ~0.2 ms; an answer needs its prompt twice)."""
        prompt = self._prompts.get(text)
        if prompt is None:
            if len(self._prompts) >= 4096:
                self._prompts.clear()
            prompt = self._prompts[text] = self._render_prompt(text)
        return prompt

    def _render_prompt(self, text: str) -> str:
        template = self._chat_template() if self.spec.chat_template else None
        if template:
            messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]
            # rendered by the tokenizer's template engine: some processors' apply_chat_template reads
            # video settings (SmolVLM) that an image-only processor does not have
            return self.tokenizer.apply_chat_template(messages, chat_template=template, tokenize=False,
                                                      add_generation_prompt=True)
        if self.spec.prompt_template is None:
            raise UnsupportedModelError(
                f"the processor of this {self.spec.model_type} model has no chat template and its ModelSpec "
                "row no prompt_template; load a processor with a chat template or register a row with one.")
        return self.spec.prompt_template.replace("{text}", text)

    def _prepare_images(self, images: Sequence[ImageInput]) -> list[Any]:
        out = []
        for image in images:
            img = _load_image(image).convert("RGB")
            if max(img.size) > self.max_image_side:
                img = img.copy()
                img.thumbnail((self.max_image_side, self.max_image_side))
            out.append([img] if self.spec.nest_images else img)
        return out

    def build_inputs(self, images: Sequence[ImageInput], texts: Sequence[str], padding_side: str | None = None) -> Any:
        """Processor outputs (a BatchFeature on the model's device) for one image + user text per sample
        (``padding_side``: "left" or "right" for texts of unequal length; None: the tokenizer's own)."""
        if len(images) != len(texts):
            raise ReasonEditError(f"{len(images)} images but {len(texts)} texts; give one text per image.")
        if not images:
            raise ReasonEditError("build_inputs needs at least one image.")
        prompts = [self.prompt_text(t) for t in texts]
        side = {} if padding_side is None or len(texts) < 2 else {"padding_side": padding_side}
        inputs = self.processor(images=self._prepare_images(images), text=prompts, return_tensors="pt",
                                padding=True, **side, **dict(self.spec.processor_kwargs)).to(self.device)
        if self._tap_inputs is not None:
            self._tap_inputs.append(inputs)
        return inputs

    # ------------------------------------------------------------------ vision features (keys)
    def vision_features(self, images: Sequence[ImageInput], module: str) -> torch.Tensor:
        """float32 [B, D]: the INPUT of ``module`` mean-pooled over each image's tokens."""
        return self.vision_features_multi(images, [module])[module]

    def vision_features_multi(self, images: Sequence[ImageInput], modules: Sequence[str]) -> dict[str, torch.Tensor]:
        """One vision pass, several modules (AutoLayer): {module: float32 [B, D]}."""
        if not images:
            raise ReasonEditError("vision_features needs at least one image.")
        inputs = self._image_inputs(images)
        if inputs is None:
            inputs = self.build_inputs(images, [""] * len(images))
        return self._vision_pass(inputs, modules)

    def _image_inputs(self, images: Sequence[ImageInput]) -> Any | None:
        """The image processor's outputs alone, when they are everything the vision pass reads (a key's
        vision features need no prompt: rendering and tokenizing one costs more than the pixels here);
        None when the row's units count image tokens of the text, it passes processor settings, or the
        image processor lacks one of the row's ``vision_inputs`` (the full processor is used then). Both
        give the same pixels (tested on every family)."""
        spec = self.spec
        image_processor = getattr(self.processor, "image_processor", None)
        if (not self._image_only or image_processor is None or spec.processor_kwargs or spec.nest_images
                or callable(spec.image_units) or spec.image_units == "image_tokens"):
            return None
        out = image_processor(images=self._prepare_images(images), return_tensors="pt")
        if not isinstance(out, Mapping) or any(key not in out for key in spec.vision_inputs):
            self._image_only = False  # (some image processors return a bare tensor): not again, every pass
            return None
        return out.to(self.device)

    def vision_features_from_inputs(self, inputs: Mapping[str, Any], module: str) -> torch.Tensor:
        """As :meth:`vision_features`, from processor outputs (pixel tensors and their side inputs)."""
        return self._vision_pass(inputs, [module])[module]

    def _vision_pass(self, inputs: Mapping[str, Any], modules: Sequence[str]) -> dict[str, torch.Tensor]:
        if isinstance(modules, str):
            modules = [modules]
        paths = [self._existing_path(m) for m in modules]
        if "pixel_values" not in inputs or inputs["pixel_values"] is None:
            raise ReasonEditError("the inputs have no pixel_values; pass processor outputs made with images.")
        kwargs: dict[str, Any] = {}
        for key in self.spec.vision_inputs:
            value = inputs.get(key) if hasattr(inputs, "get") else None
            if value is None:
                continue
            if isinstance(value, torch.Tensor):
                value = value.to(self.device)
                if value.is_floating_point():
                    value = value.to(self.dtype)
            kwargs[key] = value
        units = self._image_units(inputs)
        with torch.inference_mode(), capture_inputs(self.model, paths, stop=True) as captured:
            self._run_vision(kwargs)
        return {name: _pool_per_image(captured[path], units, path) for name, path in zip(modules, paths)}

    @contextlib.contextmanager
    def vision_tap(self, module: str, check: Callable[[torch.Tensor], bool]) -> Iterator[Tapped]:
        """Inside, the first pass through ``module`` of a call on one image (``generate``, ``option_nll``, ...)
        hands ``check`` that image's feature, float32 [D] on the CPU: the module's input pooled as
        :meth:`vision_features` pools it (the same pixels: a key's vision part without a second vision pass).
        ``check`` returning False stops the call there (``tapped.stopped``; the call's result is then lost)."""
        path = self._existing_path(module)
        built: list[Any] = []

        def on_input(activation: torch.Tensor) -> bool:
            # the inputs of the call (the image repeated per option, say) split the rows; a call that built
            # none through build_inputs (CLIP's scorer) passed its one image once
            units = self._image_units(built[-1]) if built else [1]
            return check(_pool_per_image(activation, units, path)[0].cpu())

        self._tap_inputs = built
        try:
            with tap_input(self.model, path, on_input) as tapped:
                yield tapped
        finally:
            self._tap_inputs = None

    def _run_vision(self, kwargs: dict[str, Any]) -> None:
        call = self.spec.vision_call
        if callable(call):
            call(self, kwargs)
        elif call == "get_image_features":
            self.model.get_image_features(**kwargs)
        else:
            find_module(self.model, self.spec.vision_tower)(**kwargs)

    def _image_units(self, inputs: Mapping[str, Any]) -> list[int]:
        """Per image, a number proportional to its share of the vision tower's rows."""
        pixels = inputs["pixel_values"]
        kind = self.spec.image_units
        if callable(kind):
            return [int(u) for u in kind(self, inputs)]
        if kind == "grid_thw":
            grid = inputs.get("image_grid_thw")
            if grid is None:
                raise ReasonEditError(f"{self.spec.model_type} inputs need image_grid_thw next to pixel_values.")
            return [int(v) for v in torch.as_tensor(grid).prod(-1).tolist()]
        if kind == "pixel_padding" and pixels.dim() == 5:
            real = ~(pixels == 0).flatten(2).all(-1)  # the model drops all-zero padding tiles
            counts = [int(c) for c in real.sum(1).tolist()]
            if sum(counts) == 0:
                counts[0] = 1
            return counts
        if kind == "image_tokens" and inputs.get("input_ids") is not None:
            ids = torch.as_tensor(inputs["input_ids"])
            if pixels.shape[0] != ids.shape[0]:
                token_id = getattr(self.processor, "image_token_id", None)
                if token_id is None:
                    token_id = getattr(self.model.config, "image_token_id", None)
                counts = (ids == token_id).sum(1).tolist()
                if any(c == 0 for c in counts):
                    raise ReasonEditError("each sample must hold exactly one image to split tiles per image.")
                return [int(c) for c in counts]
        return [1] * int(pixels.shape[0])

    # ------------------------------------------------------------------ language side
    def generate(self, image: ImageInput, text: str, max_new_tokens: int = 16) -> str:
        """Greedy answer to ``text`` about ``image`` (the decoded new tokens only, stripped)."""
        return scoring.generate(self, image, text, max_new_tokens)

    def token_scores(self, image: ImageInput, text: str, continuations: Sequence[str]) -> list[scoring.TokenScores]:
        """Per continuation, teacher-forced log-probabilities and argmax tokens after the prompt of ``text``
        (batched; the row's scorer decides how: see :mod:`reasonedit_plugin.scoring`)."""
        return scoring.token_scores(self, image, text, list(continuations))

    def option_nll(self, image: ImageInput, text: str, options: Sequence[str]) -> list[float]:
        """Summed NLL of each option's tokens after the prompt of ``text`` (METHOD.md §7; no length
        normalisation; CLIP-like rows: minus the log-softmax of image-text similarity). The lowest is
        the model's choice."""
        return scoring.option_nll(self, image, text, list(options))

    def continuation_nll(self, image: ImageInput, text: str, continuation: str) -> float:
        """Mean per-token NLL of ``continuation`` after the prompt of ``text`` (METHOD.md §6)."""
        (scores,) = scoring.token_scores(self, image, text, [continuation])
        return float(-scores.logprobs.mean())

    def yes_probability(self, image: ImageInput, question: str) -> float:
        """P(yes) / (P(yes) + P(no)) from the first generated token's distribution (METHOD.md §6).
        Case and leading-space variants of yes/no count; first tokens shared by both are ignored."""
        return self.yes_probabilities(image, [question])[0]

    def yes_probabilities(self, image: ImageInput, questions: Sequence[str]) -> list[float]:
        """:meth:`yes_probability` of several questions about one image, batched (at most
        :data:`YES_BATCH` a pass: each row repeats the image's tokens)."""
        questions = list(questions)
        out: list[float] = []
        for start in range(0, len(questions), YES_BATCH):
            chunk = questions[start:start + YES_BATCH]
            out += scoring.yes_shares(self.tokenizer, scoring.next_token_logits(self, image, chunk))
        return out


YES_BATCH = 8
"""Most yes/no questions :meth:`VLM.yes_probabilities` asks in one pass (the image is repeated per question)."""


def _pool_per_image(activation: torch.Tensor, units: list[int], path: str) -> torch.Tensor:
    """Split the captured rows per image (in proportion to ``units``) and mean-pool each: float32 [B, D]."""
    x = activation.float()
    if x.dim() == 1:
        x = x.unsqueeze(0)
    rows, total = x.shape[0], sum(units)
    if x.dim() >= 3 and rows == 1 and len(units) > 1 and x.shape[1] % total == 0:
        x = x[0]  # packed sequence with a leading batch of 1
        rows = x.shape[0]
    if total <= 0 or any((u * rows) % total for u in units):
        raise ReasonEditError(
            f"cannot split the input of {path!r} (shape {tuple(activation.shape)}) into {len(units)} images "
            f"with shares {units}; this module's rows do not follow the images. Choose a vision-block module.")
    sizes = [u * rows // total for u in units]
    return torch.stack([chunk.reshape(-1, x.shape[-1]).mean(0) for chunk in torch.split(x, sizes, dim=0)])
