"""A Milvus index backend (optional extra ``milvus``): codebook keys in a vector database shared by replicas.

Two layers:

* :class:`MilvusIndex` — the :class:`~.index.VectorIndex` contract (add / remove / search / count / vectors /
  all_ids / reset, (distance, id) order, the same input checks) over one Milvus collection. The collection is
  the state: a second client on the same ``uri`` and ``collection`` (another replica, or a later process on
  the same milvus-lite file) sees the same ids and vectors; constructing an index on an existing collection
  reconnects to it. Rows carry two scalar fields besides the key: ``sigma`` (ReasonEdit's hubness sigma) and
  ``edit_ids`` (a JSON list of the edits the entry came from).
* :class:`MilvusKeySearch` — ``retrieval.backend: milvus`` for a :class:`~.codebook.Codebook`: every change
  of the codebook is written to the collection (keys at key precision, sigma, edit ids), and queries take
  their L2 candidates from Milvus and are re-ranked exactly by ReasonEdit (:func:`~.key_search.rerank_candidates`),
  so retrieved ids, order and the gate decision equal the in-process backends.

``pymilvus`` is imported on first use; ``uri`` is a milvus-lite file (``./codebook.db``: the same engine,
embedded, for tests and one machine) or a server/cluster address (``http://host:19530``) with a ``token``.
The search is exact with the ``FLAT`` index (the default); an approximate Milvus index (``HNSW``, ``IVF_*``)
may miss candidates, and then the re-rank is only as good as the candidates.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator, Optional, Sequence

import numpy as np

from .errors import ConfigError, ReasonEditError
from .index import (
    ArrayLike,
    IndexInputError,
    MissingDependencyError,
    VectorIndex,
    _as_ids,
    _as_matrix,
    _check_unique,
    register_index_backend,
    search_resolving_ties,
)
from .key_search import KeySearch, rerank_candidates

if TYPE_CHECKING:
    from .codebook import Codebook
    from .keystore import Hits

logger = logging.getLogger(__name__)

__all__ = ["MilvusConfig", "MilvusIndex", "MilvusKeySearch"]

MAX_TOPK = 16384
"""Milvus's largest ``limit`` of one search (and of ``offset + limit`` of a query)."""
_FLUSH_ROWS = 1024  # a write of this many rows is flushed (sealed, indexed) at once
_BATCH_BYTES = 8 << 20  # rows per insert / get are sized to about this many bytes of vectors
_INDEX_TYPES = ("FLAT", "IVF_FLAT", "HNSW", "AUTOINDEX")
_CONSISTENCY = ("Strong", "Bounded", "Session", "Eventually")
_FIELDS = ("id", "key", "sigma", "edit_ids")


@dataclass
class MilvusConfig:
    """Where ``retrieval.backend: milvus`` keeps the codebook's keys (the ``retrieval.milvus`` section)."""

    uri: Optional[str] = None
    """A milvus-lite file (``./codebook.db``; the same engine, embedded) or a Milvus server / cluster address
    (``http://host:19530``, ``https://...`` for Zilliz Cloud). Required with ``backend: milvus``."""
    token: str = ""
    """Credentials for a server: ``user:password`` or an API key. Prefer ``token_env`` to keep it out of YAML."""
    token_env: Optional[str] = None
    """Name of an environment variable holding the token (read when connecting; overrides ``token``)."""
    collection: str = "reasonedit_codebook"
    """Collection name; one collection per codebook (replicas serving one codebook share it)."""
    index_type: str = "FLAT"
    """Milvus index on the keys. ``FLAT`` (exact, the default) keeps retrieval equal to the in-process search;
    ``HNSW`` / ``IVF_FLAT`` / ``AUTOINDEX`` are approximate (faster candidates, answers may differ)."""
    consistency_level: str = "Strong"
    """Milvus consistency of searches and reads: ``Strong`` sees every committed write (replicas agree);
    ``Bounded`` reads a slightly stale snapshot for throughput."""
    read_only: bool = False
    """A serving replica: checks that the collection holds this codebook's entries and never writes; edits
    go through the one writer (``reasonedit`` verbs take the codebook folder's lock)."""
    timeout: Optional[float] = None
    """Seconds per Milvus call (None: pymilvus's default)."""

    def __post_init__(self) -> None:
        if self.uri is not None and not (isinstance(self.uri, str) and self.uri.strip()):
            raise ConfigError(f"retrieval.milvus.uri={self.uri!r} must be a file path or http(s):// address.")
        if not (isinstance(self.collection, str) and self.collection.replace("_", "a").isalnum()
                and not self.collection[0].isdigit()):
            raise ConfigError(f"retrieval.milvus.collection={self.collection!r}: use letters, digits and "
                              "underscores, not starting with a digit (Milvus's rule).")
        if self.index_type not in _INDEX_TYPES:
            raise ConfigError(f"retrieval.milvus.index_type={self.index_type!r} is not one of {list(_INDEX_TYPES)}.")
        if self.consistency_level not in _CONSISTENCY:
            raise ConfigError(f"retrieval.milvus.consistency_level={self.consistency_level!r} is not one of "
                              f"{list(_CONSISTENCY)}.")
        if self.timeout is not None and not self.timeout > 0:
            raise ConfigError(f"retrieval.milvus.timeout={self.timeout!r} must be > 0 seconds or null.")

    def resolved_token(self) -> str:
        if self.token_env:
            value = os.environ.get(self.token_env)
            if value is None:
                raise ConfigError(f"retrieval.milvus.token_env={self.token_env!r}: that environment variable is "
                                  "not set; export it or give retrieval.milvus.token.")
            return value
        return self.token


def _import_pymilvus() -> Any:
    try:
        return importlib.import_module("pymilvus")
    except ImportError as exc:
        raise MissingDependencyError(
            "the 'milvus' backend needs pymilvus: `pip install 'reasonedit-plugin[milvus]'` (pymilvus + "
            "milvus-lite), or use retrieval.backend: faiss."
        ) from exc


def _batches(n: int, dim: int) -> Iterator[slice]:
    step = max(1, _BATCH_BYTES // (4 * dim))
    for start in range(0, n, step):
        yield slice(start, min(n, start + step))


class MilvusIndex(VectorIndex):
    """The index contract over a Milvus collection (``id`` INT64 primary key, ``key`` FLOAT_VECTOR, ``sigma``
    DOUBLE, ``edit_ids`` JSON). The id set lives on the server: ``count``, ``all_ids`` and the duplicate /
    unknown-id checks ask it, so every client of the collection agrees. Distances are Milvus's float32
    L2 (square-rooted); ties at the k-th place are resolved by id by widening the search."""

    _track_ids = False  # the server holds the id set

    def __init__(self, dim: int, uri: Optional[str] = None, collection: str = "reasonedit_index",
                 token: str = "", index_type: str = "FLAT", consistency_level: str = "Strong",
                 timeout: Optional[float] = None):
        super().__init__(dim)
        if uri is None:
            raise ConfigError("the 'milvus' index needs uri=: a milvus-lite file (./index.db) or a server "
                              "address (http://host:19530), e.g. make_index('milvus', dim, uri='./index.db').")
        MilvusConfig(uri=uri, collection=collection, index_type=index_type,
                     consistency_level=consistency_level, timeout=timeout)  # validates the options
        self._pymilvus = _import_pymilvus()
        self.uri, self.collection = str(uri), collection
        self._index_type, self._consistency, self._timeout = index_type, consistency_level, timeout
        try:
            self._client = self._pymilvus.MilvusClient(uri=self.uri, token=token, timeout=timeout)
        except Exception as exc:  # a refused connection, a bad token, an unwritable milvus-lite path
            raise ReasonEditError(f"cannot connect to Milvus at {self.uri!r}: {exc}; check retrieval.milvus.uri "
                                  "and token (a local path needs milvus-lite).") from exc
        if self._client.has_collection(collection, timeout=timeout):
            self._check_schema()
            self._client.load_collection(collection, timeout=timeout)
            logger.info("milvus: reconnected to collection %r at %s (%d rows)", collection, self.uri, self.count)
        else:
            self._create()

    # -- collection ------------------------------------------------------------------------
    def _create(self) -> None:
        DataType = self._pymilvus.DataType
        schema = self._client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("key", DataType.FLOAT_VECTOR, dim=self.dim)
        schema.add_field("sigma", DataType.DOUBLE)
        schema.add_field("edit_ids", DataType.JSON)
        params = self._client.prepare_index_params()
        params.add_index(field_name="key", index_type=self._index_type, metric_type="L2")
        self._client.create_collection(self.collection, schema=schema, index_params=params,
                                       consistency_level=self._consistency, timeout=self._timeout)

    def _check_schema(self) -> None:
        info = self._client.describe_collection(self.collection, timeout=self._timeout)
        fields = {f["name"]: f for f in info["fields"]}
        if set(fields) != set(_FIELDS):
            raise ConfigError(f"Milvus collection {self.collection!r} at {self.uri} has fields {sorted(fields)}, "
                              f"not ReasonEdit's {list(_FIELDS)}; pick another retrieval.milvus.collection.")
        dim = int(fields["key"]["params"]["dim"])
        if dim != self.dim:
            raise ConfigError(f"Milvus collection {self.collection!r} at {self.uri} holds keys of dimension {dim}, "
                              f"this codebook {self.dim}; pick another retrieval.milvus.collection or drop it.")

    def close(self) -> None:
        """Release the connection (the collection stays)."""
        self._client.close()

    def flush(self) -> None:
        """Seal what was written into indexed segments. Milvus searches rows still in a growing segment by a
        slower path (milvus-lite on a loaded 2-core machine: 0.5-1.7 s per search over 10k unsealed keys,
        30-180 ms sealed); a bulk write (``_write`` of ``_FLUSH_ROWS`` rows or more) flushes by itself."""
        self._client.flush(self.collection, timeout=self._timeout)

    # -- server-side id set ----------------------------------------------------------------
    @property
    def count(self) -> int:
        res = self._client.query(self.collection, filter="", output_fields=["count(*)"],
                                 consistency_level=self._consistency, timeout=self._timeout)
        return int(res[0]["count(*)"])

    def __contains__(self, key: object) -> bool:
        try:
            ids = _as_ids([int(key)])  # type: ignore[call-overload]
        except (TypeError, ValueError, IndexInputError):
            return False
        return bool(self._present(ids))

    def all_ids(self) -> np.ndarray:
        return np.array(sorted(self._scan(["id"]).keys()), dtype=np.int64)

    def _present(self, ids: np.ndarray) -> list[int]:
        found: set[int] = set()
        for sl in _batches(len(ids), 1):
            rows = self._client.get(self.collection, ids=ids[sl].tolist(), output_fields=["id"],
                                    consistency_level=self._consistency, timeout=self._timeout)
            found.update(int(r["id"]) for r in rows)
        return [int(i) for i in ids if int(i) in found]

    def _require_known(self, ids: np.ndarray) -> None:
        known = set(self._present(ids))
        unknown = [int(i) for i in ids if int(i) not in known]
        if unknown:
            raise IndexInputError(
                f"unknown ids {unknown[:10]}{' …' if len(unknown) > 10 else ''}: they are not in Milvus "
                f"collection {self.collection!r}; check all_ids()."
            )

    def _scan(self, output_fields: list[str]) -> dict[int, dict[str, Any]]:
        """Every row of the collection (id -> requested fields), read in batches."""
        out: dict[int, dict[str, Any]] = {}
        it = self._client.query_iterator(self.collection, batch_size=4096, filter="id >= 0",
                                         output_fields=output_fields, consistency_level=self._consistency,
                                         timeout=self._timeout)
        try:
            while True:
                rows = it.next()
                if not rows:
                    break
                out.update((int(r["id"]), r) for r in rows)
        finally:
            it.close()
        return out

    # -- rows with ReasonEdit's fields -----------------------------------------------------
    def upsert(self, ids: ArrayLike, vectors: ArrayLike, sigma: Optional[Sequence[float]] = None,
               edit_ids: Optional[Sequence[Sequence[str]]] = None) -> None:
        """Insert or replace whole rows: keys with their ``sigma`` (default 1.0, a lone key's) and
        ``edit_ids`` (default none)."""
        ids_arr = _as_ids(ids)
        vecs = _as_matrix(vectors, self.dim, "vectors")
        n = len(ids_arr)
        if vecs.shape[0] != n:
            raise IndexInputError(f"got {n} ids for {vecs.shape[0]} vectors; give one id per vector.")
        _check_unique(ids_arr, "ids")
        sig = np.ones(n) if sigma is None else np.asarray(sigma, np.float64).reshape(-1)
        edits = [[] for _ in range(n)] if edit_ids is None else [list(map(str, e)) for e in edit_ids]
        if len(sig) != n or len(edits) != n:
            raise IndexInputError(f"upsert: {n} ids but {len(sig)} sigma values and {len(edits)} edit-id lists.")
        if not np.isfinite(sig).all():
            raise IndexInputError("upsert: sigma must be finite.")
        self._write(ids_arr, vecs, sig, edits, replace=True)

    def fields(self, ids: ArrayLike) -> dict[int, tuple[float, list[str]]]:
        """``id -> (sigma, edit_ids)`` of stored ids."""
        ids_arr = _as_ids(ids)
        out: dict[int, tuple[float, list[str]]] = {}
        for sl in _batches(len(ids_arr), 1):
            for r in self._client.get(self.collection, ids=ids_arr[sl].tolist(), output_fields=["sigma", "edit_ids"],
                                      consistency_level=self._consistency, timeout=self._timeout):
                out[int(r["id"])] = (float(r["sigma"]), list(_json_list(r["edit_ids"])))
        return out

    def all_fields(self) -> dict[int, tuple[float, list[str]]]:
        """``id -> (sigma, edit_ids)`` of every row (one scan)."""
        return {i: (float(r["sigma"]), list(_json_list(r["edit_ids"])))
                for i, r in self._scan(["id", "sigma", "edit_ids"]).items()}

    def _write(self, ids: np.ndarray, vecs: np.ndarray, sigma: np.ndarray, edits: list[list[str]],
               replace: bool) -> None:
        call = self._client.upsert if replace else self._client.insert
        for sl in _batches(len(ids), self.dim):
            rows = [{"id": int(i), "key": v, "sigma": float(s), "edit_ids": e}
                    for i, v, s, e in zip(ids[sl].tolist(), vecs[sl], sigma[sl].tolist(), edits[sl])]
            call(self.collection, rows, timeout=self._timeout)
        if len(ids) >= _FLUSH_ROWS:
            self.flush()

    # -- backend hooks ---------------------------------------------------------------------
    def _add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        self._write(ids, vectors, np.ones(len(ids)), [[] for _ in range(len(ids))], replace=False)

    def _remove(self, ids: np.ndarray) -> None:
        for sl in _batches(len(ids), 1):
            self._client.delete(self.collection, ids=ids[sl].tolist(), timeout=self._timeout)

    def _reset(self) -> None:
        self._client.drop_collection(self.collection, timeout=self._timeout)
        self._create()

    def _vectors(self, ids: np.ndarray) -> np.ndarray:
        got: dict[int, Any] = {}
        for sl in _batches(len(ids), self.dim):
            for r in self._client.get(self.collection, ids=ids[sl].tolist(), output_fields=["key"],
                                      consistency_level=self._consistency, timeout=self._timeout):
                got[int(r["id"])] = r["key"]
        return np.asarray([got[int(i)] for i in ids], dtype=np.float32).reshape(len(ids), self.dim)

    def raw_search(self, queries: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
        """Milvus's own answer: squared L2 distances and ids ``[m, width]`` by distance (ties in any order)."""
        res = self._client.search(self.collection, data=[q for q in queries], limit=int(width), anns_field="key",
                                  search_params={"metric_type": "L2"}, output_fields=[],
                                  consistency_level=self._consistency, timeout=self._timeout)
        d2 = np.empty((len(queries), width), np.float32)
        ids = np.empty((len(queries), width), np.int64)
        for r, hits in enumerate(res):
            if len(hits) != width:
                raise ReasonEditError(f"Milvus returned {len(hits)} of {width} neighbours from collection "
                                      f"{self.collection!r}; was it changed by another client during the search?")
            d2[r] = [h["distance"] for h in hits]
            ids[r] = [h["id"] for h in hits]
        return d2, ids

    def _search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return search_resolving_ties(self.raw_search, queries, k, self.count, max_width=MAX_TOPK)


def _json_list(value: Any) -> list[Any]:
    if isinstance(value, str):  # some pymilvus versions return JSON fields as text
        value = json.loads(value)
    return list(value or [])


register_index_backend("milvus", MilvusIndex)


# --------------------------------------------------------------------------------------------
# the codebook's backend


class MilvusKeySearch(KeySearch):
    """``retrieval.backend: milvus``: the codebook's entries mirrored into a Milvus collection (key at key
    precision, sigma, edit ids), queries answered from Milvus's L2 candidates with ReasonEdit's exact re-rank.

    The collection is checked when the codebook first uses it (built, loaded or bulk-imported): an empty
    collection is filled, one holding exactly this codebook's entries is reused (differing sigma or edit ids
    are rewritten), anything else is an error that names the fix. Each edit then writes the entries it
    added, changed or removed, plus every entry whose sigma it changed."""

    name = "milvus"

    def __init__(self, config: MilvusConfig, dim: int):
        if config.uri is None:
            raise ConfigError("retrieval.backend: milvus needs retrieval.milvus.uri (a milvus-lite file such as "
                              "./codebook.db, or http://host:19530 for a server).")
        self.config = config
        self.index = MilvusIndex(dim, uri=config.uri, collection=config.collection, token=config.resolved_token(),
                                 index_type=config.index_type, consistency_level=config.consistency_level,
                                 timeout=config.timeout)
        self._attached = False
        self._owned = False  # True once this codebook and the collection have been in step
        self._sigma = np.full(0, np.nan)  # entry id -> sigma as written to Milvus (NaN: not there)

    # -- keeping the collection equal to the codebook ----------------------------------------
    def attach(self, book: "Codebook") -> None:
        store = book.store
        ids = np.sort(store.ids)
        fields = self.index.all_fields()
        if not fields and len(ids):
            self._refuse_write("the collection is empty")
            self._write(book, ids)
            logger.info("milvus: wrote %d entries to collection %r", len(ids), self.config.collection)
        elif fields:
            there = np.array(sorted(fields), np.int64)
            if not np.array_equal(there, ids) and self._owned and not self.config.read_only:
                # this codebook wrote the collection and a write failed part-way: bring it back in step
                extra, missing = np.setdiff1d(there, ids), np.setdiff1d(ids, there)
                if len(extra):
                    self.index._remove(extra)
                if len(missing):
                    self._write(book, missing)
                gone = set(extra.tolist())
                fields = {i: f for i, f in fields.items() if i not in gone}
                if len(missing):
                    fields.update(self.index.fields(missing))
                there = ids
            if not np.array_equal(there, ids):
                raise ReasonEditError(
                    f"Milvus collection {self.config.collection!r} at {self.config.uri} holds {len(there)} entries "
                    f"that are not this codebook's {len(ids)}; point retrieval.milvus.collection at a new "
                    "collection, drop the old one, or reload the codebook folder its writer saved.")
            self._remember(np.array(list(fields), np.int64), np.array([f[0] for f in fields.values()]))
            stale = [i for i in ids.tolist() if fields[i][1] != book.edit_ids_of(i)]
            sig = store.column("sigma")[store.rows(ids)]
            stale = sorted(set(stale) | set(ids[sig != self._sigma[ids]].tolist()))
            if stale:
                self._refuse_write(f"{len(stale)} entries differ in sigma or edit ids")
                self._write(book, np.array(stale, np.int64))
        self._attached = self._owned = True

    def prepare(self, book: "Codebook") -> None:
        self._refuse_write("an edit would change the codebook")
        if not self._attached:
            self.attach(book)

    def changed(self, book: "Codebook", entry_ids: Sequence[int]) -> None:
        if not self._attached:
            self.attach(book)
            return
        try:
            self._write_changes(book, entry_ids)
        except Exception:
            self._attached = False  # the collection may hold part of the edit: compare again on next use
            raise

    def _write_changes(self, book: "Codebook", entry_ids: Sequence[int]) -> None:
        store = book.store
        gone = np.array([e for e in entry_ids if e not in store], np.int64)
        live = store.ids
        sig = store.column("sigma")
        self._grow(int(live.max()) + 1 if len(live) else 0)
        moved = live[sig != self._sigma[live]]  # entries whose sigma the edit changed
        write = np.union1d(moved, np.array([e for e in entry_ids if e in store], np.int64))
        if len(gone):
            self.index._remove(gone)
            self._sigma[gone[gone < len(self._sigma)]] = np.nan
        if len(write):
            self._write(book, write)

    def _write(self, book: "Codebook", ids: np.ndarray) -> None:
        store = book.store
        rows = store.rows(ids)
        sig = store.column("sigma")[rows].astype(np.float64)
        self.index._write(ids, store.vectors(rows), sig, [book.edit_ids_of(i) for i in ids.tolist()],
                          replace=True)
        self._remember(ids, sig)

    def _remember(self, ids: np.ndarray, sigma: np.ndarray) -> None:
        if len(ids):
            self._grow(int(ids.max()) + 1)
            self._sigma[ids] = sigma

    def _grow(self, size: int) -> None:
        if size > len(self._sigma):
            grown = np.full(max(size, 2 * len(self._sigma), 64), np.nan)
            grown[: len(self._sigma)] = self._sigma
            self._sigma = grown

    def _refuse_write(self, why: str) -> None:
        if self.config.read_only:
            raise ReasonEditError(f"Milvus collection {self.config.collection!r}: {why}, but retrieval.milvus."
                                  "read_only is set (a serving replica); edit through the writer and reload.")

    # -- queries ---------------------------------------------------------------------------
    def search(self, book: "Codebook", q: np.ndarray, k: int, scaled: bool) -> "Hits":
        if not self._attached:
            self.attach(book)

        def candidates(m: int) -> tuple[np.ndarray, np.ndarray]:
            d2, ids = self.index.raw_search(q.reshape(1, -1), m)
            unknown = [i for i in ids[0].tolist() if i not in book.store]
            if unknown:
                raise ReasonEditError(
                    f"Milvus collection {self.config.collection!r} holds entries {unknown[:5]} this codebook does "
                    "not (another writer changed it); reload the codebook folder.")
            return ids[0], d2[0]

        return rerank_candidates(book.store, q, k, scaled, candidates, max_candidates=MAX_TOPK)

    def close(self) -> None:
        self.index.close()
