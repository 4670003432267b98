"""The Milvus backend through milvus-lite: clients sharing a collection, and a codebook whose queries run on
Milvus retrieving exactly what the in-process default retrieves (ids, order, distances, gate decision).
Skipped when pymilvus / milvus-lite are not installed (``pip install 'reasonedit-plugin[milvus]'``)."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("pymilvus")
pytest.importorskip("milvus_lite")

from reasonedit_plugin.codebook import Codebook, PendingEntry  # noqa: E402
from reasonedit_plugin.codebook_state import export_state, from_state  # noqa: E402
from reasonedit_plugin.config import CodebookConfig, RetrievalConfig  # noqa: E402
from reasonedit_plugin.errors import ConfigError, ReasonEditError  # noqa: E402
from reasonedit_plugin.milvus_backend import MilvusIndex, MilvusKeySearch  # noqa: E402
from reasonedit_plugin.retriever import Retriever  # noqa: E402

pytestmark = pytest.mark.milvus
_names = itertools.count()


@pytest.fixture(scope="module")
def uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("milvus") / "shared.db")


@pytest.fixture
def collection() -> str:
    return f"book_{next(_names)}"


def milvus_retrieval(uri: str, collection: str, **extra) -> RetrievalConfig:
    return RetrievalConfig(backend="milvus", milvus={"uri": uri, "collection": collection, **extra},
                           hubness_k=5, gate="percentile")


# ------------------------------------------------------------------------------------------
# the index: one collection, several clients


def test_two_clients_on_one_milvus_lite_file_see_the_same_entries(uri: str, collection: str) -> None:
    rng = np.random.default_rng(0)
    vecs = rng.standard_normal((50, 8)).astype(np.float32)
    writer = MilvusIndex(8, uri=uri, collection=collection)
    writer.add(np.arange(50) * 3, vecs)
    writer.upsert([0, 3], vecs[:2], sigma=[0.5, 2.0], edit_ids=[["e0"], ["e1", "e9"]])

    replica = MilvusIndex(8, uri=uri, collection=collection)  # reconnects: nothing is created
    assert replica.count == 50 and replica.all_ids().tolist() == (np.arange(50) * 3).tolist()
    np.testing.assert_array_equal(replica.vectors([147, 0]), vecs[[49, 0]])
    assert replica.fields([0, 3, 6]) == {0: (0.5, ["e0"]), 3: (2.0, ["e1", "e9"]), 6: (1.0, [])}
    np.testing.assert_array_equal(replica.search(vecs[:5], 3).ids, writer.search(vecs[:5], 3).ids)

    replica.remove([3, 6])
    assert writer.count == 48 and 3 not in writer and 9 in writer
    with pytest.raises(ReasonEditError, match=r"already in the index: \[9\]"):  # the id set is the server's
        writer.add([9], vecs[:1])


def test_reconnecting_with_another_dimension_is_a_clear_error(uri: str, collection: str) -> None:
    MilvusIndex(8, uri=uri, collection=collection)
    with pytest.raises(ConfigError, match="dimension 8, this codebook 4"):
        MilvusIndex(4, uri=uri, collection=collection)


def test_config_checks() -> None:
    with pytest.raises(ConfigError, match="needs retrieval.milvus.uri"):
        RetrievalConfig(backend="milvus")
    with pytest.raises(ConfigError, match="unknown key 'colection'.*collection"):
        RetrievalConfig(backend="milvus", milvus={"uri": "x.db", "colection": "a"})
    with pytest.raises(ConfigError, match="index_type"):
        RetrievalConfig(backend="milvus", milvus={"uri": "x.db", "index_type": "FAST"})


# ------------------------------------------------------------------------------------------
# a codebook on Milvus retrieves what the in-process default retrieves


def _keys(seed: int, n: int = 200, dim: int = 16) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((6, dim)) * 4
    keys = centres[rng.integers(0, 6, n)] + rng.standard_normal((n, dim)) * rng.uniform(0.05, 1.5, (n, 1))
    keys[40:60] = keys[7]  # exact duplicates: ties broken by id
    keys[100:104] = keys[min(n - 1, 150)]
    return keys.astype(np.float32)


def _fill(book: Codebook, keys: np.ndarray) -> None:
    for i, key in enumerate(keys):
        book.add_edit(f"e{i}", [PendingEntry("reasoning", f"v{i}", torch.from_numpy(key), 0.2)])


def _queries(keys: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed + 100)
    near = keys[rng.choice(len(keys), 8)] + 0.01 * rng.standard_normal((8, keys.shape[1]))
    far = rng.standard_normal((8, keys.shape[1])) * 6
    return np.concatenate([keys[[7, 45, min(200, len(keys) - 1), 0]], near, far]).astype(np.float32)


def _assert_same_retrieval(milvus: Codebook, local: Codebook, queries: np.ndarray) -> None:
    r_m, r_l = Retriever(milvus), Retriever(local)
    for q in torch.from_numpy(queries):
        assert milvus.scaled_topk(q, 12) == local.scaled_topk(q, 12)
        assert milvus.nearest(q, 7) == local.nearest(q, 7)
        a, b = r_m.search(q), r_l.search(q)
        assert (a.accepted, a.entry_ids, a.distances, a.scores, a.threshold) == \
            (b.accepted, b.entry_ids, b.distances, b.scores, b.threshold)


def test_codebook_on_milvus_equals_faiss_under_edits(uri: str, collection: str) -> None:
    keys = _keys(1)
    local = Codebook(16, CodebookConfig(merge=False), RetrievalConfig(hubness_k=5, gate="percentile"))
    milvus = Codebook(16, CodebookConfig(merge=False), milvus_retrieval(uri, collection))
    assert isinstance(milvus.search_backend, MilvusKeySearch) and local.search_backend.name == "faiss"
    for book in (local, milvus):
        _fill(book, keys)
        for e in ("e7", "e150", "e41"):
            book.remove_edit(e)
    _assert_same_retrieval(milvus, local, _queries(keys, 1))
    # what the collection holds: every entry, with the codebook's sigma and edit ids
    fields = MilvusIndex(16, uri=uri, collection=collection).all_fields()
    sigma = milvus.sigma_table()
    assert sorted(fields) == sorted(milvus.entry_ids())
    assert all(fields[i] == (pytest.approx(sigma[i]), [f"e{i}"]) for i in milvus.entry_ids())


def test_bulk_codebook_and_a_read_only_replica(uri: str, collection: str) -> None:
    keys = _keys(2)
    n = len(keys)
    args = (keys, [f"v{i}" for i in range(n)], [f"e{i}" for i in range(n)], 0.2)
    local = Codebook.bulk(*args, retrieval=RetrievalConfig(hubness_k=5, gate="percentile"))
    writer = Codebook.bulk(*args, retrieval=milvus_retrieval(uri, collection))
    arrays, table = export_state(writer)
    replica = from_state(arrays, table, retrieval=milvus_retrieval(uri, collection, read_only=True))
    _assert_same_retrieval(replica, local, _queries(keys, 2))
    with pytest.raises(ReasonEditError, match="read_only"):
        replica.add_edit("new", [PendingEntry("reasoning", "x", torch.zeros(16), 0.1)])
    # the writer edits; the replica's snapshot is stale and says so instead of answering from it
    far = torch.from_numpy(keys[3] + 50.0)
    writer.add_edit("new", [PendingEntry("reasoning", "x", far, 0.1)])
    with pytest.raises(ReasonEditError, match="reload the codebook folder"):
        replica.nearest(far, 3)


def test_a_failed_write_is_repaired_on_the_next_edit(uri: str, collection: str,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    keys = _keys(4, n=60)
    local = Codebook(16, CodebookConfig(merge=False), RetrievalConfig(hubness_k=5, gate="percentile"))
    milvus = Codebook(16, CodebookConfig(merge=False), milvus_retrieval(uri, collection))
    _fill(local, keys[:50])
    _fill(milvus, keys[:50])
    index = milvus.search_backend.index

    def down(*args, **kwargs):
        raise ConnectionError("milvus is down")

    with monkeypatch.context() as m:
        m.setattr(index, "_write", down)
        with pytest.raises(ConnectionError):
            milvus.add_edit("e50", [PendingEntry("reasoning", "v50", torch.from_numpy(keys[50]), 0.2)])
    local.add_edit("e50", [PendingEntry("reasoning", "v50", torch.from_numpy(keys[50]), 0.2)])
    for i in range(51, 60):  # the next edit finds the collection behind and writes what it missed
        for book in (local, milvus):
            book.add_edit(f"e{i}", [PendingEntry("reasoning", f"v{i}", torch.from_numpy(keys[i]), 0.2)])
    assert sorted(index.all_fields()) == sorted(milvus.entry_ids())
    _assert_same_retrieval(milvus, local, _queries(keys, 4)[:12])


def test_a_collection_holding_other_entries_is_refused(uri: str, collection: str) -> None:
    keys = _keys(3, n=20)
    _fill(Codebook(16, CodebookConfig(merge=False), milvus_retrieval(uri, collection)), keys)
    other = Codebook(16, CodebookConfig(merge=False), milvus_retrieval(uri, collection))
    with pytest.raises(ReasonEditError, match="holds 20 entries that are not this codebook's 0"):
        _fill(other, keys[:1] + 1)


# ------------------------------------------------------------------------------------------
# an editor on Milvus: saved folder + shared collection; a serving replica answers the same


def test_editor_on_milvus_and_a_serving_replica(uri: str, collection: str, tmp_path: Path, text_encoder) -> None:
    from test_storage import EDITS, QUERIES, make_editor

    from reasonedit_plugin.config import ReasonEditConfig
    from reasonedit_plugin.editor import ReasonEditor
    from reasonedit_plugin.storage import read_meta
    from fakes import FakeVLM

    section = {"backend": "milvus", "milvus": {"uri": uri, "collection": collection, "token": "root:Milvus"}}
    local = make_editor(text_encoder)
    writer = make_editor(text_encoder, retrieval=section)
    for ed in (local, writer):
        ed.edit(EDITS, author="bob", reason="initial")
    writer.save(tmp_path / "codebook")
    saved = read_meta(tmp_path / "codebook")["config"]["retrieval"]["milvus"]
    assert saved["uri"] == uri and saved["token"] == ""  # credentials are not written to the folder

    serving = {"backend": "milvus", "milvus": {"uri": uri, "collection": collection, "read_only": True}}
    replica = ReasonEditor.load(tmp_path / "codebook", FakeVLM(), text_encoder=text_encoder,
                                config=ReasonEditConfig(guard={"policy": "off"}, retrieval=serving))
    for image, question in QUERIES:
        a, b = local.retrieve(image, question), replica.retrieve(image, question)
        assert (a.accepted, a.facts, a.entry_ids, a.distances, a.scores) == \
            (b.accepted, b.facts, b.entry_ids, b.distances, b.scores)
