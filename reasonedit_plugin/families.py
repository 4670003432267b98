"""Family-specific functions that :class:`~reasonedit_plugin.model_specs.ModelSpec` rows point to.

A row is data; when a family needs a rule that is not a value (how to count an image's crops, how to
call its vision tower), the row names one of these functions, so no other module branches on a
family name. A row registered from outside may give its own function with the same signature.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch

from .errors import ReasonEditError

__all__ = ["anyres_units", "flatten_images_vision_call"]


def anyres_units(vlm: Any, inputs: Mapping[str, Any]) -> list[int]:
    """``image_units`` rule of LLaVA-NeXT / LLaVA-OneVision (AnyRes): per image, its number of crops,
    from ``image_sizes`` and the config's ``image_grid_pinpoints`` (one crop for samples of several
    images in OneVision, as its ``batch_num_images`` says)."""
    from transformers.models.llava_next.modeling_llava_next import image_size_to_num_patches

    sizes = inputs.get("image_sizes")
    if sizes is None:
        raise ReasonEditError(f"{vlm.spec.model_type} inputs need image_sizes next to pixel_values.")
    config = vlm.model.config
    batch_num = inputs.get("batch_num_images")
    flags = ([int(n) == 1 for n in torch.as_tensor(batch_num).tolist() for _ in range(int(n))]
             if batch_num is not None else [True] * len(sizes))
    return [image_size_to_num_patches(image_size=size, grid_pinpoints=config.image_grid_pinpoints,
                                      patch_size=config.vision_config.image_size) if flag else 1
            for size, flag in zip(torch.as_tensor(sizes).tolist(), flags)]


def flatten_images_vision_call(vlm: Any, kwargs: dict[str, Any]) -> None:
    """``vision_call`` rule of IDEFICS (Flamingo-style): ``pixel_values`` is ``[batch, images, C, H, W]``;
    the vision tower wants ``[batch * images, C, H, W]`` (as the model's own forward reshapes it)."""
    pixels = kwargs["pixel_values"]
    if pixels.dim() == 5:
        pixels = pixels.reshape(-1, *pixels.shape[-3:])
    vlm.model.get_submodule(vlm.spec.vision_tower)(pixel_values=pixels)
