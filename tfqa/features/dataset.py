"""Read a feature cache memory-mapped and serve rows to training and inference.

Ragged columns (input ids, word positions) stay as Arrow offsets + values views over the mapped
files, so opening a multi-GB cache costs no copy and every worker process shares the pages.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from tfqa.features.cache import MANIFEST, read_shard
from tfqa.features.featurize import FEATURE_COLUMNS

# Every feature column but the two ragged ones (subword ids, word positions).
SCALAR_COLUMNS = tuple(c for c in FEATURE_COLUMNS if c not in ("input_ids", "word_positions"))


class _Ragged:
    """A list<int32> column over several shards as (offsets, values) numpy views per shard."""

    def __init__(self, chunks: list[pa.ListArray]):
        self.parts = [(c.offsets.to_numpy(), c.values.to_numpy()) for c in chunks]

    def get(self, shard: int, row: int) -> np.ndarray:
        offsets, values = self.parts[shard]
        return values[offsets[row] : offsets[row + 1]]

    def lengths(self) -> np.ndarray:
        return np.concatenate([np.diff(o) for o, _ in self.parts]) if self.parts else np.zeros(0, np.int64)


class FeatureStore:
    """All shards of one cache folder, memory-mapped."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        manifest_path = self.path / MANIFEST
        if not manifest_path.exists():
            raise FileNotFoundError(f"{self.path}: no {MANIFEST}; not a finished feature cache")
        self.manifest = json.loads(manifest_path.read_text())
        tables = [read_shard(self.path / s["file"]) for s in self.manifest["shards"]]
        tables = [t.combine_chunks() for t in tables]
        self._ids = _Ragged([t.column("input_ids").chunk(0) for t in tables if t.num_rows])
        self._positions = _Ragged([t.column("word_positions").chunk(0) for t in tables if t.num_rows])
        sizes = [t.num_rows for t in tables if t.num_rows]
        self._shard_starts = np.concatenate(([0], np.cumsum(sizes))).astype(np.int64)
        self.meta: pd.DataFrame = (
            pa.concat_tables([t.select(list(SCALAR_COLUMNS)) for t in tables]).to_pandas()
            if tables
            else pd.DataFrame(columns=list(SCALAR_COLUMNS))
        )
        self.lengths = self._ids.lengths()

    @property
    def fingerprint(self) -> str:
        return self.manifest["fingerprint"]

    @property
    def tokenizer_dir(self) -> Path:
        return self.path / "tokenizer"

    def __len__(self) -> int:
        return len(self.meta)

    def _locate(self, i: int) -> tuple[int, int]:
        shard = int(np.searchsorted(self._shard_starts, i, side="right")) - 1
        return shard, i - int(self._shard_starts[shard])

    def input_ids(self, i: int) -> np.ndarray:
        return self._ids.get(*self._locate(i))

    def word_positions(self, i: int) -> np.ndarray:
        return self._positions.get(*self._locate(i))

    def ragged_rows(self, rows: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """(input ids, word positions) views of ``rows``: one vectorised lookup of their shards,
        not one ``searchsorted`` per row and column."""
        rows = np.asarray(rows, dtype=np.int64)
        shards = np.searchsorted(self._shard_starts, rows, side="right") - 1
        local = rows - self._shard_starts[shards]
        ids, pos = self._ids.parts, self._positions.parts
        out_ids, out_pos = [], []
        for s, r in zip(shards.tolist(), local.tolist()):
            o, v = ids[s]
            out_ids.append(v[o[r] : o[r + 1]])
            o, v = pos[s]
            out_pos.append(v[o[r] : o[r + 1]])
        return out_ids, out_pos


class CandidateDataset:
    """Map-style dataset of model inputs over a ``FeatureStore`` (optionally a subset of rows).

    Rows: ``input_ids``, ``token_type_ids`` (0 for [CLS] question [SEP], 1 after), ``label`` and
    the short span's ``start_position``/``end_position``: the first subword of its first and of
    its last word (-1 unless label is SHORT), matching how predictions are read per word.
    """

    def __init__(self, store: FeatureStore | InMemoryFeatures, rows: np.ndarray | None = None):
        self.store = store
        self.rows = np.arange(len(store)) if rows is None else np.asarray(rows, dtype=np.int64)
        self.lengths = store.lengths[self.rows]
        meta = store.meta
        self._q_len = meta["question_len"].to_numpy()
        self._label = meta["label"].to_numpy()
        self._start = meta["start_word"].to_numpy()
        self._end = meta["end_word"].to_numpy()

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, k: int) -> dict:
        i = int(self.rows[k])
        ids = self.store.input_ids(i)
        types = np.zeros(len(ids), dtype=np.int32)
        types[self._q_len[i] + 2 :] = 1
        start = end = -1
        if self._start[i] >= 0:
            positions = self.store.word_positions(i)
            start, end = int(positions[self._start[i]]), int(positions[self._end[i]])
        return {
            "input_ids": ids,
            "token_type_ids": types,
            "label": int(self._label[i]),
            "start_position": start,
            "end_position": end,
        }


class InMemoryFeatures:
    """The ``FeatureStore`` interface over columns fresh from ``CandidateFeaturizer``: used where
    a handful of examples are answered on the fly (the served model) and no cache is wanted."""

    def __init__(self, cols: dict[str, list], max_seq_len: int):
        self.meta = pd.DataFrame({k: cols[k] for k in SCALAR_COLUMNS})
        self._ids = [np.asarray(x, dtype=np.int32) for x in cols["input_ids"]]
        self._positions = [np.asarray(x, dtype=np.int32) for x in cols["word_positions"]]
        self.lengths = np.array([len(x) for x in self._ids], dtype=np.int64)
        self.manifest = {"features": {"max_seq_len": max_seq_len}, "fingerprint": "in-memory"}

    def __len__(self) -> int:
        return len(self.meta)

    def input_ids(self, i: int) -> np.ndarray:
        return self._ids[i]

    def word_positions(self, i: int) -> np.ndarray:
        return self._positions[i]

    def ragged_rows(self, rows: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
        return [self._ids[int(i)] for i in rows], [self._positions[int(i)] for i in rows]
