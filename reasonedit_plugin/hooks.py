"""Every forward hook of ReasonEdit, in context managers that remove their hooks in ``finally``.

- :func:`capture_inputs` records the INPUT of named modules (the key activation of METHOD.md §3 and
  the AutoLayer candidates of §5); with ``stop=True`` the forward is aborted as soon as every requested
  module has fired, so the rest of the vision tower (and anything after it) is skipped.
- :func:`tap_input` hands the first INPUT of one module to a callback that may stop the forward there (the
  key's vision part read from an answer's own vision pass, METHOD.md §4 (c)).
- :func:`modify_outputs` replaces a module's output with ``fn(module, inputs, output)``.
- :func:`capture_outputs` records the hidden-state OUTPUT of a module (a fact's vector, the gate's
  features for hidden-state fusion, METHOD.md §4 (a)).
- :func:`keep_training_outputs` keeps the output of named modules from training-mode forwards, graph and all
  (the embedded model's training: probe heads whose losses train the layers they read).
- :func:`edit_hidden_states` rewrites a block's output hidden states with ``fn(hidden, input_ids)``,
  where ``input_ids`` are those of the current top-level call (hidden-state fusion: the bias).

Modules are found with ``model.get_submodule(path)``; a bad path raises :class:`ModulePathError`
with the closest existing paths.
"""

from __future__ import annotations

import contextlib
import difflib
import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import nn

from .errors import ReasonEditError

logger = logging.getLogger(__name__)

__all__ = ["Captured", "ModulePathError", "Tapped", "capture_inputs", "capture_outputs", "edit_hidden_states",
           "find_module", "hook_count", "keep_training_outputs", "modify_outputs", "tap_input"]


class ModulePathError(ReasonEditError):
    """A module path does not name a submodule of the model."""


def find_module(model: nn.Module, path: str) -> nn.Module:
    """``model.get_submodule(path)`` with an error that suggests the closest existing paths."""
    try:
        return model.get_submodule(path)
    except AttributeError:
        names = [name for name, _ in model.named_modules() if name]
        close = difflib.get_close_matches(path, names, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ModulePathError(
            f"module path {path!r} is not in {type(model).__name__}.{hint} List the valid paths with "
            "[name for name, _ in model.named_modules()]."
        ) from None


class _StopForward(Exception):
    """Raised inside a hook to abort the forward once every requested module has fired."""


@dataclass
class Captured:
    """Inputs recorded by :func:`capture_inputs`: one tensor per call of each module, in call order."""

    inputs: dict[str, list[torch.Tensor]] = field(default_factory=dict)
    stopped: bool = False
    """True when the forward was aborted early (``stop=True``)."""

    def __getitem__(self, path: str) -> torch.Tensor:
        """The input of ``path``; the calls are concatenated along dim 0 when it fired several times."""
        calls = self.inputs.get(path)
        if not calls:
            raise ReasonEditError(
                f"module {path!r} did not run during the forward; it is not on the path of the call "
                "(e.g. a projector that get_image_features does not use). Choose another module."
            )
        return calls[0] if len(calls) == 1 else torch.cat(calls, dim=0)

    def fired(self, path: str) -> bool:
        return bool(self.inputs.get(path))


def _first_tensor(args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor:
    for value in list(args) + list(kwargs.values()):
        if isinstance(value, torch.Tensor):
            return value
    raise ReasonEditError("the hooked module was called without a tensor input; its input cannot be captured.")


@contextlib.contextmanager
def capture_inputs(
    model: nn.Module, module_paths: Sequence[str], stop: bool = False
) -> Iterator[Captured]:
    """Record the input (first tensor argument) of each module in ``module_paths``.

    ``stop=True`` aborts the forward run inside the ``with`` block once every module has fired at
    least once (the abort is swallowed here). Tensors are detached; hooks are removed on exit, also
    when an exception passes through.
    """
    paths = list(dict.fromkeys(module_paths))
    if not paths:
        raise ReasonEditError("capture_inputs needs at least one module path.")
    modules = {path: find_module(model, path) for path in paths}
    captured = Captured(inputs={path: [] for path in paths})
    handles: list[torch.utils.hooks.RemovableHandle] = []

    def make_hook(path: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            captured.inputs[path].append(_first_tensor(args, kwargs).detach())
            if stop and all(captured.inputs[p] for p in paths):
                captured.stopped = True
                raise _StopForward

        return _tag(hook)

    try:
        for path, module in modules.items():
            handles.append(module.register_forward_pre_hook(make_hook(path), with_kwargs=True))
        try:
            yield captured
        except _StopForward:
            pass
    finally:
        for handle in handles:
            handle.remove()


@dataclass
class Tapped:
    """What :func:`tap_input` saw: whether the module fired and whether the callback stopped the run there."""

    fired: bool = False
    stopped: bool = False


@contextlib.contextmanager
def tap_input(model: nn.Module, module_path: str, fn: Callable[[torch.Tensor], bool]) -> Iterator[Tapped]:
    """Call ``fn`` with the input (first tensor argument, detached) of ``module_path`` the first time it runs
    inside the ``with`` block; ``fn`` returning False aborts that forward run there (the abort is swallowed
    here: ``tapped.stopped``). Later calls of the module pass untouched. The hook is removed on exit."""
    module = find_module(model, module_path)
    tapped = Tapped()

    def hook(mod: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if tapped.fired:
            return
        tapped.fired = True
        if not fn(_first_tensor(args, kwargs).detach()):
            tapped.stopped = True
            raise _StopForward

    handle = module.register_forward_pre_hook(_tag(hook), with_kwargs=True)
    try:
        yield tapped
    except _StopForward:
        pass
    finally:
        handle.remove()


@contextlib.contextmanager
def modify_outputs(
    model: nn.Module, module_path: str, fn: Callable[[nn.Module, tuple[Any, ...], Any], Any]
) -> Iterator[nn.Module]:
    """Within the block, ``module_path``'s output is replaced by ``fn(module, inputs, output)``
    (``fn`` returning None keeps the output). The hook is removed on exit, also on error."""
    module = find_module(model, module_path)

    def hook(mod: nn.Module, inputs: tuple[Any, ...], output: Any) -> Any:
        return fn(mod, inputs, output)

    handle = module.register_forward_hook(_tag(hook))
    try:
        yield module
    finally:
        handle.remove()


def _hidden_of(output: Any) -> torch.Tensor:
    """The hidden-state tensor of a block's output (a tensor, or the first item of a tuple/ModelOutput)."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    first = getattr(output, "last_hidden_state", None)
    if isinstance(first, torch.Tensor):
        return first
    raise ReasonEditError(f"the hooked block returned {type(output).__name__}, not hidden states; choose a "
                          "language-model block (ModelSpec.lm_block_template).")


def _with_hidden(output: Any, hidden: torch.Tensor) -> Any:
    if isinstance(output, torch.Tensor):
        return hidden
    if isinstance(output, tuple):
        return (hidden,) + tuple(output[1:])
    if isinstance(output, list):
        return [hidden] + list(output[1:])
    output.last_hidden_state = hidden
    return output


@contextlib.contextmanager
def capture_outputs(model: nn.Module, module_path: str) -> Iterator[list[torch.Tensor]]:
    """Record the output hidden states of ``module_path`` (detached, one tensor per call) in the yielded
    list. The hook is removed on exit, also on error."""
    module = find_module(model, module_path)
    calls: list[torch.Tensor] = []

    def hook(mod: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
        calls.append(_hidden_of(output).detach())

    handle = module.register_forward_hook(_tag(hook))
    try:
        yield calls
    finally:
        handle.remove()


@contextlib.contextmanager
def keep_training_outputs(model: nn.Module, module_paths: dict[Any, str]) -> Iterator[dict[Any, torch.Tensor]]:
    """Keep the output hidden states of each ``module_paths`` module under its name in the yielded dict, not
    detached (a loss on them trains the model), from forwards in training mode only: an evaluation forward
    (``model.eval()``) keeps nothing. A later forward replaces a name's tensor; the caller clears the dict
    between steps. The hooks are removed on exit, also on error."""
    modules = {name: find_module(model, path) for name, path in module_paths.items()}
    kept: dict[Any, torch.Tensor] = {}

    def keeper(name: Any) -> Callable[..., None]:
        def hook(mod: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
            if mod.training:
                kept[name] = _hidden_of(output)
        return _tag(hook)

    handles = []
    try:
        for name, module in modules.items():
            handles.append(module.register_forward_hook(keeper(name)))
        yield kept
    finally:
        for handle in handles:
            handle.remove()


@contextlib.contextmanager
def edit_hidden_states(model: nn.Module, block_path: str,
                       fn: Callable[[torch.Tensor, "torch.Tensor | None"], torch.Tensor]) -> Iterator[nn.Module]:
    """Within the block, the output hidden states ``h`` [B, T, H] of ``block_path`` become ``fn(h, ids)``.

    ``ids`` are the ``input_ids`` of the current call of ``model`` (a pre-hook on the top-level module
    records them; None when it was called without them). Families that prepend positions outside
    ``input_ids`` (BLIP-2 query tokens) give ``h`` more rows than ``ids``: align them from the right. Both
    hooks are removed on exit, also on error; the model's weights are never touched."""
    block = find_module(model, block_path)
    state: dict[str, Any] = {"ids": None}

    def pre(mod: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        ids = kwargs.get("input_ids")
        if ids is None and args and isinstance(args[0], torch.Tensor) and not args[0].is_floating_point():
            ids = args[0]
        state["ids"] = ids

    def hook(mod: nn.Module, inputs: tuple[Any, ...], output: Any) -> Any:
        hidden = _hidden_of(output)
        new = fn(hidden, state["ids"])
        return None if new is hidden else _with_hidden(output, new)

    handles = []
    try:
        handles.append(model.register_forward_pre_hook(_tag(pre), with_kwargs=True))
        handles.append(block.register_forward_hook(_tag(hook)))
        yield block
    finally:
        for handle in handles:
            handle.remove()


_TAG = "_reasonedit_hook"


def _tag(hook: Callable[..., Any]) -> Callable[..., Any]:
    setattr(hook, _TAG, True)
    return hook


def hook_count(model: nn.Module) -> int:
    """Number of ReasonEdit forward (pre-)hooks attached anywhere in ``model`` (0 outside the context
    managers). Hooks that transformers installs itself (output recorders) are not counted."""
    total = 0
    for module in model.modules():
        for hook in list(module._forward_hooks.values()) + list(module._forward_pre_hooks.values()):
            total += bool(getattr(hook, _TAG, False))
    return total
