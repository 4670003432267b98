"""EasyEdit's multimodal GRACE with its codebook kept trainable across sequential edits: a plugin-side fix of
an EasyEdit bug that crashes GRACE when an edit falls inside a key it already holds (docs/BASELINES.md,
"GRACE at 109 sequential edits"; the bug report is in docs/UPSTREAM.md).

The bug (EasyEdit 14cea82, ``easyeditor/models/grace/``): ``apply_grace_to_multimodal_model``
(grace_main.py:50) builds a new ``GRACEMultimodal`` for every edit, and ``GRACE.__init__`` (GRACE.py:44-45)
sets ``requires_grad = False`` on every parameter of the model, which after the first edit includes the
codebook values (``GRACEAdapter.values``, an ``nn.Parameter`` of the adapter that GRACE.py:57 keeps in
place). An edit whose key lands in a new place is unaffected: ``add_key`` (GRACE.py:142) builds a fresh,
trainable ``values``. An edit whose key lands within ``eps`` of an existing key carrying the same label
(the same target; GRACE.py:217-234, "just make the nearest epsilon bigger") adds no key, the forward pass
reads the frozen values, and ``loss.backward()`` (GRACE.py:285) raises ``RuntimeError: element 0 of
tensors does not require grad and does not have a grad_fn``. The original GRACE builds its editor once,
before the adapter exists, so its values stay trainable and such an edit trains the value of the key it
fell into; :func:`apply_grace_to_multimodal_model` does that. Everything else is EasyEdit's GRACE unchanged.
"""

from __future__ import annotations

import importlib
from functools import lru_cache
from typing import Any

GRACE_MODULE = "easyeditor.models.grace.GRACE"


def grace_adapter(model: Any, layer: str) -> Any | None:
    """The ``GRACEAdapter`` EasyEdit's GRACE put at ``layer`` (a ``inner_params`` entry without its
    ``.weight``/``.bias``, e.g. ``model.language_model.layers[2].mlp.down_proj``), or None before the first
    edit."""
    grace = importlib.import_module(GRACE_MODULE)
    utils = importlib.import_module("easyeditor.models.grace.utils")
    parent = utils.parent_module(model, utils.brackets_to_periods(layer))
    module = getattr(parent, layer.rsplit(".", 1)[-1], None)
    return module if isinstance(module, grace.GRACEAdapter) else None


def codebook_values(model: Any, layer: str) -> Any | None:
    """The codebook values (one row per key) of the GRACE adapter at ``layer``, or None when there is none."""
    adapter = grace_adapter(model, layer)
    return getattr(adapter, "values", None) if adapter is not None else None


@lru_cache(maxsize=1)
def grace_class() -> type:
    """EasyEdit's ``GRACEMultimodal`` that, once EasyEdit froze the model, makes the codebook values of an
    adapter left by earlier edits trainable again (module docstring)."""
    base = importlib.import_module(GRACE_MODULE).GRACEMultimodal

    class GRACEMultimodalTrainableCodebook(base):  # type: ignore[misc, valid-type]
        def __init__(self, config: Any, model: Any, device: Any):
            super().__init__(config, model, device)
            values = codebook_values(self.model, self.layer)
            if values is not None:
                values.requires_grad_(True)

    return GRACEMultimodalTrainableCodebook


def apply_grace_to_multimodal_model(model: Any, tok: Any, requests: Any, hparams: Any, copy: bool = False,
                                    return_orig_weights: bool = False, keep_original_weight: bool = False,
                                    **kwargs: Any) -> tuple[Any, Any]:
    """EasyEdit's ``apply_grace_to_multimodal_model`` (grace_main.py:36-54, same arguments and result)
    with :func:`grace_class` as the editor: the apply function the comparison's GRACE row uses."""
    from copy import deepcopy

    grace_main = importlib.import_module("easyeditor.models.grace.grace_main")
    device = grace_main.normalize_device(getattr(hparams, "device", None))
    if copy:
        model = deepcopy(model)
        model.to(device)
    editor = grace_class()(model=model, config=hparams, device=device)
    tokens = grace_main.multimodal_tokenize(requests, processor=tok, device=device, hparams=hparams)
    editor.edit(config=hparams, multimodal_tokens=tokens, edit_id=requests[0]["target"])
    return editor, editor.reset_layer
