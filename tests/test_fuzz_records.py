"""Property test: random bad records, anywhere in a batch of good ones, give a clear ReasonEditError and leave
the codebook (edit ids, keys, values, radii, quarantine, raw records) exactly as it was."""

import io
import itertools

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from fakes import FakeVLM, pattern, solid
from reasonedit_plugin.config import ReasonEditConfig
from reasonedit_plugin.editor import ReasonEditor
from reasonedit_plugin.errors import ReasonEditError

Q = "Which tribe owns this shape?"
_ids = itertools.count()


@pytest.fixture(scope="module")
def bad_images(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_images")
    buf = io.BytesIO()
    pattern(1, 64).save(buf, format="PNG")
    png = buf.getvalue()
    (root / "truncated.png").write_bytes(png[: len(png) // 2])
    (root / "garbage.png").write_bytes(b"\x89PNG not really an image" * 10)
    (root / "empty.jpg").write_bytes(b"")
    Image.new("1", (8200, 8200)).save(root / "huge.png")  # 67 Mpx, a few kB on disk
    (root / "folder.png").mkdir()
    return {"truncated": str(root / "truncated.png"), "garbage": str(root / "garbage.png"),
            "empty": str(root / "empty.jpg"), "huge": str(root / "huge.png"), "folder": str(root / "folder.png"),
            "missing": str(root / "missing.png"), "zero": Image.new("RGB", (0, 0)), "number": 42,
            "bytes": png}


@pytest.fixture(scope="module")
def editor(text_encoder):
    ed = ReasonEditor(FakeVLM(), ReasonEditConfig(guard={"policy": "warn"}, augment={"enabled": False}),
                      text_encoder=text_encoder)
    ed.edit([good("seed-red", solid((220, 20, 20))), good("seed-blue", solid((20, 20, 220)))])
    return ed


def good(rid=None, image=None):
    rid = rid or f"g{next(_ids)}"
    return {"id": rid, "image": image if image is not None else pattern(1000 + next(_ids)), "prompt": Q,
            "target": "Vol", "choices": ["Vol", "Kem", "Zib"],
            "rationale": "The shape is patterned. Patterned shapes belong to the Vol tribe."}


NON_STRINGS = st.one_of(st.integers(), st.floats(allow_nan=True), st.lists(st.integers(), max_size=2),
                        st.dictionaries(st.text(max_size=3), st.integers(), max_size=2), st.booleans())
MUTATIONS = st.one_of(
    st.tuples(st.just("drop"), st.sampled_from(["prompt", "target", "image"])),
    st.tuples(st.sampled_from(["prompt", "target", "rephrase_prompt", "locality_prompt"]), NON_STRINGS),
    st.tuples(st.sampled_from(["prompt", "target"]), st.sampled_from(["", "   ", "\n\t"])),
    st.tuples(st.sampled_from(["prompt", "target"]), st.integers(2001, 5000).map(lambda n: "x" * n)),
    st.tuples(st.just("rationale"), st.one_of(
        st.integers(4001, 9000).map(lambda n: "Long. " * (n // 6 + 1)),
        st.integers(33, 60).map(lambda n: " ".join(f"Fact {i}." for i in range(n))),
        st.lists(NON_STRINGS, min_size=1, max_size=3), st.integers(), st.dictionaries(st.text(max_size=2), st.text()))),
    st.tuples(st.just("image"), st.sampled_from(["truncated", "garbage", "empty", "huge", "folder", "missing",
                                                  "zero", "number", "bytes"])),
    st.tuples(st.just("choices"), st.one_of(st.just(["Kem", "Zib"]), st.just(["Vol"]), st.just("Vol"),
                                            st.lists(NON_STRINGS, min_size=2, max_size=3))),
    st.tuples(st.just("meta"), st.one_of(st.just({"w": float("nan")}), st.just({"w": float("inf")}),
                                         st.just({"o": object()}), st.just([1, 2]), st.just("author"))),
    st.tuples(st.just("id"), st.one_of(st.just("seed-red"), st.just("dup"))),
    st.tuples(st.just("unknown"), st.sampled_from(["promt", "rationales", "imag", "foo"])),
    st.tuples(st.just("not_a_mapping"), st.one_of(st.integers(), st.text(max_size=5), st.just(None))),
)


def apply(mutation, bad_images):
    field, value = mutation
    record = good()
    if field == "drop":
        record.pop(value)
    elif field == "image":
        record["image"] = bad_images[value]
    elif field == "unknown":
        record[value] = "x"
    elif field == "not_a_mapping":
        return value
    elif field == "id" and value == "dup":
        return [record, dict(record)]  # the same id twice in one batch
    else:
        record[field] = value
    return [record]


def state(ed):
    cb = ed.codebook
    return (cb.edit_ids(), {i: (e.key.clone(), e.values, e.radius, e.edit_ids) for i, e in cb.entries.items()},
            sorted(ed.quarantine), sorted(ed.edit_records), len(ed.audit))


def same(a, b):
    return a[0] == b[0] and a[2:] == b[2:] and a[1].keys() == b[1].keys() and all(
        torch.equal(a[1][k][0], b[1][k][0]) and a[1][k][1:] == b[1][k][1:] for k in a[1])


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(mutation=MUTATIONS, n_good=st.integers(0, 2), position=st.integers(0, 2))
def test_bad_records_give_clear_errors_and_change_nothing(editor, bad_images, mutation, n_good, position):
    bad = apply(mutation, bad_images)
    batch = [good() for _ in range(n_good)]
    if isinstance(bad, list):
        batch[min(position, len(batch)):min(position, len(batch))] = bad
    else:
        batch.insert(min(position, len(batch)), bad)
    before = state(editor)
    with pytest.raises(ReasonEditError) as info:
        editor.edit(batch)
    message = str(info.value)
    assert len(message) > 20 and "Traceback" not in message
    assert same(state(editor), before), mutation


@pytest.mark.parametrize("batch", [None, 5, "records.jsonl", b"x"])
def test_batch_of_wrong_type(editor, batch):
    with pytest.raises(ReasonEditError, match="takes a record"):
        editor.edit(batch)


def test_provenance_keywords_must_be_json(editor):
    before = state(editor)
    with pytest.raises(ReasonEditError, match="JSON"):
        editor.edit([good()], author=float("nan"))
    assert same(state(editor), before)


def test_nan_embeddings_refused_and_nothing_added(text_encoder):
    class NanVLM(FakeVLM):
        def vision_features(self, images, module):
            feats = super().vision_features(images, module)
            dark = feats.sum(dim=1) == 0  # an all-black image "overflows"
            feats[dark] = float("nan")
            return feats

    ed = ReasonEditor(NanVLM(), ReasonEditConfig(guard={"policy": "off"}), text_encoder=text_encoder)
    ed.edit([good("ok")])
    before = state(ed)
    with pytest.raises(ReasonEditError, match="NaN/inf"):
        ed.edit([good("a"), good("b", solid((0, 0, 0)))])
    assert same(state(ed), before)


@pytest.mark.parametrize("question", [None, "", 5, ["q"]])
def test_answer_and_retrieve_validate_question(editor, question):
    with pytest.raises(ReasonEditError, match="question must be a non-empty string"):
        editor.answer(solid((1, 2, 3)), question)
    with pytest.raises(ReasonEditError, match="question must be a non-empty string"):
        editor.retrieve(solid((1, 2, 3)), question)


@pytest.mark.parametrize("image", ["missing", "garbage", "truncated", "number", "zero"])
def test_answer_validates_image(editor, bad_images, image):
    with pytest.raises(ReasonEditError, match="image"):
        editor.answer(bad_images[image], Q, ["Vol", "Kem"])
