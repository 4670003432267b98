import pytest
from PIL import Image

from fakes import FakeVLM
from reasonedit_plugin.config import PatchConfig, ReasonEditConfig
from reasonedit_plugin.editor import ReasonEditor
from reasonedit_plugin.patches import Crop, candidate_crops, claim_question, find_patches, select_crops


def test_grid_candidates_square():
    crops = candidate_crops((300, 300), PatchConfig())
    # 36 rectangles of a 3x3 grid, minus the full image, minus the 6 full-length 1x3 / 3x1 strips
    assert len(crops) == 29
    assert all(c.box != (0, 0, 300, 300) for c in crops)
    assert len(set(c.box for c in crops)) == 29


def test_claim_question():
    assert claim_question("The shape is Red.", PatchConfig()) == "Does the image show the shape is red?"


def test_select_smallest_ties_and_best_overall():
    small_a = Crop(0, 1, 0, 1, (0, 0, 1, 1))
    small_b = Crop(0, 1, 1, 2, (1, 0, 2, 1))
    small_c = Crop(1, 2, 1, 2, (1, 1, 2, 2))
    big = Crop(0, 2, 0, 2, (0, 0, 2, 2))
    chosen = select_crops([(small_a, 1.004), (small_b, 0.996), (small_c, 1.5), (big, 0.5)])
    assert chosen == [small_a, small_b, big]       # 1.00 == 1.00 at 2 decimals; big is best overall
    assert select_crops([]) == []


def test_find_patches_picks_the_region_the_claim_names():
    img = Image.new("RGB", (90, 90), (0, 0, 200))
    img.paste((220, 0, 0), (0, 0, 30, 30))            # a red top-left cell on blue
    pairs = find_patches(FakeVLM(), img, ["The corner is red."], PatchConfig(enabled=True))
    boxes = [p[0].size for p in pairs]
    assert pairs and all(s == "The corner is red." for _, s in pairs)
    assert (30, 30) in boxes                          # the red cell alone is among the chosen crops


def test_editor_stores_patch_entries(text_encoder):
    cfg = ReasonEditConfig(guard={"policy": "off"}, patches={"enabled": True})
    ed = ReasonEditor(FakeVLM(), cfg, text_encoder=text_encoder)
    img = Image.new("RGB", (90, 90), (0, 0, 200))
    img.paste((220, 0, 0), (0, 0, 30, 30))
    ed.edit([{"id": "p", "image": img, "prompt": "Which tribe?", "target": "Vol", "choices": ["Vol", "Kem"],
              "rationale": "The corner is red. Red corners belong to Vol."}])
    kinds = [k for e in ed.codebook.entries.values() for k in e.kinds]
    assert "patch" in kinds and "answer" in kinds
