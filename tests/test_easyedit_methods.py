"""The EasyEdit rows' probes see images as EasyEdit prepared them for the edits (``EasyEditMethod.query_image``),
checked without EasyEdit: a stand-in editor whose ``vis_tok`` resizes as qwen_vl_utils does for Qwen2-VL."""

from __future__ import annotations

import types

import torch
from PIL import Image

from reasonedit_plugin.easyedit_methods import EasyEditMethod
from reasonedit_plugin.edit_methods import TeacherForced


class _SeenVLM:
    """Records the image each call received; answers the first option."""

    def __init__(self):
        self.images: list = []

    def option_nll(self, image, text, options):
        self.images.append(image)
        return [0.0] + [1.0] * (len(options) - 1)

    def teacher_forced(self, image, text, target):
        self.images.append(image)
        return TeacherForced(torch.zeros(1, 3), torch.tensor([-100]))


def _method(vis_tok) -> EasyEditMethod:
    method = EasyEditMethod.__new__(EasyEditMethod)  # no EasyEdit here: only what the probes use
    method.mm_editor = types.SimpleNamespace(vis_tok=vis_tok)
    method.vlm, method.max_new_tokens = _SeenVLM(), 4
    return method


def test_probes_reach_the_model_as_easyedit_prepared_the_edit(tmp_path):
    path = tmp_path / "shape.png"
    Image.new("RGB", (64, 64), (200, 30, 30)).save(path)
    calls = []

    def qwen_like(image, file_type):  # qwen_vl_utils.fetch_image: a resize to multiples of 28
        calls.append(file_type)
        return [image.resize((56, 56))]

    method = _method(qwen_like)
    assert method.predict(str(path), "What colour?", ["red", "blue"]).text == "red"
    method.teacher_forced(str(path), "What colour?", "red")
    assert [im.size for im in method.vlm.images] == [(56, 56), (56, 56)] and calls == ["image", "image"]


def test_a_preparation_that_gives_no_image_keeps_the_records_own(tmp_path):
    path = tmp_path / "shape.png"
    Image.new("RGBA", (64, 64), (0, 90, 200, 255)).save(path)
    method = _method(lambda image, file_type: torch.zeros(3, 224, 224))  # e.g. a LAVIS tensor processor
    image = method.query_image(str(path))
    assert isinstance(image, Image.Image) and image.size == (64, 64) and image.mode == "RGB"
