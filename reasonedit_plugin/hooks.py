"""Every forward hook of ReasonEdit, in context managers that remove their hooks in ``finally``.

- :func:`capture_inputs` records the INPUT of named modules (the key activation of METHOD.md §3 and
  the AutoLayer candidates of §5); with ``stop=True`` the forward is aborted as soon as every requested
  module has fired, so the rest of the vision tower (and anything after it) is skipped.
- :func:`modify_outputs` replaces a module's output with ``fn(module, inputs, output)`` (used by the
  hidden-state fusion extension, METHOD.md §4 (a)).

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

__all__ = ["Captured", "ModulePathError", "capture_inputs", "find_module", "hook_count", "modify_outputs"]


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
