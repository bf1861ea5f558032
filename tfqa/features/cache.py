"""Feature cache: Arrow IPC shards under a folder named by a fingerprint of everything that
decides their content (input bytes, tokenizer, feature and selection settings, scores table).

A build writes into ``<fp>.tmp-<pid>/`` and renames it to ``<fp>/`` only after the manifest is
written, so a build killed half-way is never mistaken for a finished cache. Worker processes each
parse and featurise a chunk of raw lines and write its shard; the parent keeps line order, the
duplicate-id check and the bad-line budget, so results do not depend on the number of workers.

Builds in one cache folder take turns (a lock file beside the caches): the eight ranks of a
``torchrun`` node that all ask for the same cache get one build, by whichever asked first, with
all the node's cores, and the others reuse it. The input's digest is remembered by path, size and
mtime, so a 17 GB file is read for its digest once, not once per rank.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import multiprocessing as mp
import os
import shutil
import socket
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from tfqa.core.bounds import bounded, check_bounds
from tfqa.core.errors import UserError
from tfqa.data.readers import BadInputError, BadLineBudget, ReadReport, check_not_empty, iter_lines, parse_line, require_file
from tfqa.features.featurize import FEATURE_COLUMNS, CandidateFeaturizer, FeatureConfig, FeatureCounts
from tfqa.features.selection import PackedScores, SelectionConfig, load_score_table, select_candidates
from tfqa.features.tokenization import load_tokenizer, tokenizer_fingerprint, word_prefix

log = logging.getLogger(__name__)

# Bump when the feature layout or labelling changes: old caches then stop matching.
FEATURE_FORMAT_VERSION = 2  # 2: labels from several annotations by tfqa.features.labels' rule
MANIFEST = "manifest.json"
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)

SCHEMA = pa.schema(
    [
        ("example_id", pa.string()),
        ("candidate_index", pa.int32()),
        ("word_offset", pa.int32()),
        ("n_words", pa.int32()),
        ("n_kept", pa.int32()),
        ("question_len", pa.int32()),
        ("top_level", pa.bool_()),
        ("label", pa.int8()),
        ("start_word", pa.int32()),
        ("end_word", pa.int32()),
        ("input_ids", pa.list_(pa.int32())),
        ("word_positions", pa.list_(pa.int32())),
    ]
)
assert tuple(SCHEMA.names) == FEATURE_COLUMNS


@dataclass(frozen=True)
class BuildConfig:
    features: FeatureConfig = FeatureConfig()
    selection: SelectionConfig = SelectionConfig()
    scores_path: str | None = None
    """Mining scores table (Parquet), needed by the ``hard`` strategy."""
    max_bad_lines: int = bounded(0, min=0)
    """Skip up to this many malformed lines (each is printed); one more is an error."""
    max_lines: int = bounded(0, min=0)
    """Read only the first this many lines of the input (0: all): a quick run on part of the data."""
    workers: int = bounded(0, min=0)
    """Worker processes; 0 = one per CPU core."""
    chunk_lines: int = bounded(64, min=1)
    allow_empty: bool = False
    """Accept an input without a single line (0 rows); refused otherwise."""

    def __post_init__(self) -> None:
        check_bounds(self)


def file_digest(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def _digest_memo(path: str | os.PathLike, cache_root: Path) -> Path:
    st = os.stat(path)
    key = hashlib.sha256(f"{os.path.realpath(path)}\0{st.st_size}\0{st.st_mtime_ns}".encode()).hexdigest()[:24]
    return cache_root / ".digests" / key


def remembered_digest(path: str | os.PathLike, cache_root: Path) -> str:
    """``file_digest(path)``, or the one a finished build under ``cache_root`` remembered for this
    file's real path, size and mtime (``remember_digest``): every rank asking for the same input
    after the first reads it from there instead of reading 17 GB again."""
    memo = _digest_memo(path, cache_root)
    return memo.read_text().strip() if memo.exists() else file_digest(path)


def remember_digest(path: str | os.PathLike, cache_root: Path, digest: str) -> None:
    memo = _digest_memo(path, cache_root)
    if memo.exists():
        return
    memo.parent.mkdir(parents=True, exist_ok=True)
    tmp = memo.with_name(f"{memo.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(digest)
        os.replace(tmp, memo)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def build_turn(cache_root: Path) -> Iterator[None]:
    """Hold the cache folder's build lock: an ``flock`` on the folder itself (no lock file to leave
    behind; the kernel releases it when its holder dies, so a killed build never blocks the next)."""
    try:
        cache_root.mkdir(parents=True, exist_ok=True)
        fd = os.open(cache_root, os.O_RDONLY)
    except OSError as exc:
        raise UserError(f"cannot write the feature cache here: {exc.strerror or exc}", cache_root) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("%s: another process is building a feature cache here; waiting for it", cache_root)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the last descriptor releases the lock


def fingerprint(input_digest: str, tok_fp: str, cfg: BuildConfig, scores_digest: str | None, word_prefix: str = "") -> str:
    key = {
        "version": FEATURE_FORMAT_VERSION,
        "input": input_digest,
        "tokenizer": tok_fp,
        # How a word is encoded on its own (tfqa.features.tokenization.word_prefix): byte-level BPE
        # caches built before words got their leading space must not be reused. Only when set, so
        # WordPiece and SentencePiece caches, which the rule does not change, keep their fingerprints.
        **({"word_prefix": word_prefix} if word_prefix else {}),
        "features": asdict(cfg.features),
        "selection": asdict(cfg.selection),
        "scores": scores_digest,
        # The bad-line budget changes which lines are in the cache, so it is part of the key.
        "max_bad_lines": cfg.max_bad_lines,
        # Only when set, so caches of whole files keep their fingerprints.
        **({"max_lines": cfg.max_lines} if cfg.max_lines else {}),
    }
    return hashlib.blake2b(json.dumps(key, sort_keys=True).encode(), digest_size=10).hexdigest()


# -- worker side -----------------------------------------------------------------------------------
@dataclass
class _WorkerState:
    featurizer: CandidateFeaturizer
    selection: SelectionConfig
    scores: PackedScores | None
    out_dir: Path
    src: str


@dataclass
class ChunkResult:
    shard: str | None
    rows: int
    # (example_id, line, first row, rows, counts) per example, in line order
    examples: list[tuple[str, int, int, int, FeatureCounts]] = field(default_factory=list)
    bad: list[tuple[str, int, str, str]] = field(default_factory=list)


def _init_state(tokenizer_dir: str, cfg: BuildConfig, out_dir: str, src: str, scores: PackedScores | None) -> _WorkerState:
    return _WorkerState(
        CandidateFeaturizer(load_tokenizer(tokenizer_dir, cfg.features.html_tokens), cfg.features),
        cfg.selection,
        scores,
        Path(out_dir),
        src,
    )


_STATE: _WorkerState | None = None  # one per worker process, set by the pool initializer


def _pool_init(*args) -> None:
    global _STATE
    from tfqa.core.stopping import default_stop_signals

    default_stop_signals()
    _STATE = _init_state(*args)


def _pool_run(job: tuple[int, list[tuple[int, bytes]]]) -> ChunkResult:
    assert _STATE is not None
    return process_chunk(_STATE, *job)


def process_chunk(state: _WorkerState, chunk_id: int, lines: list[tuple[int, bytes]]) -> ChunkResult:
    cols: dict[str, list] = {k: [] for k in FEATURE_COLUMNS}
    result = ChunkResult(shard=None, rows=0)
    for lineno, raw in lines:
        try:
            ex = parse_line(raw, state.src, lineno)
        except BadInputError as err:
            result.bad.append((err.path, err.line, err.field, err.reason))
            continue
        chosen = select_candidates(ex, state.selection, state.scores)
        ex_cols, counts = state.featurizer.featurize(ex, chosen)
        n = len(ex_cols["candidate_index"])
        result.examples.append((ex.example_id, lineno, result.rows, n, counts))
        result.rows += n
        for k in FEATURE_COLUMNS:
            cols[k].extend(ex_cols[k])
    if result.rows:
        name = f"shard-{chunk_id:06d}.arrow"
        write_shard(state.out_dir / name, cols)
        result.shard = name
    return result


def write_shard(path: Path, cols: dict[str, list]) -> None:
    table = pa.Table.from_pydict(cols, schema=SCHEMA)
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, SCHEMA) as writer:
        writer.write_table(table, max_chunksize=1 << 30)


def _drop_rows(path: Path, drop: list[tuple[int, int]]) -> int:
    """Rewrite a shard without the given (first row, count) ranges; returns rows left."""
    table = read_shard(path)
    keep = np.ones(table.num_rows, dtype=bool)
    for start, n in drop:
        keep[start : start + n] = False
    table = table.filter(pa.array(keep))
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, SCHEMA) as writer:
        writer.write_table(table)
    return table.num_rows


def read_shard(path: str | os.PathLike) -> pa.Table:
    """Memory-mapped, zero-copy read of one shard."""
    return pa.ipc.open_file(pa.memory_map(str(path), "r")).read_all()


# -- parent side ------------------------------------------------------------------------------------
@dataclass
class CacheInfo:
    path: Path
    fingerprint: str
    manifest: dict
    reused: bool


def _chunks(
    src: str,
    size: int,
    max_lines: int = 0,
    breaks: list[BadInputError] | None = None,
) -> Iterator[tuple[int, list[tuple[int, bytes]]]]:
    """Chunks of raw lines. A gzip stream that breaks off ends them; the break goes to ``breaks``
    (this runs in a pool's feeder thread, so the parent handles it once every chunk is in)."""
    buf: list[tuple[int, bytes]] = []
    chunk_id = 0
    for n, item in enumerate(iter_lines(src, None if breaks is None else breaks.append)):
        if max_lines and n >= max_lines:
            break
        buf.append(item)
        if len(buf) == size:
            yield chunk_id, buf
            chunk_id, buf = chunk_id + 1, []
    if buf:
        yield chunk_id, buf


def build_features(
    src: str | os.PathLike,
    tokenizer_dir: str | os.PathLike,
    cache_root: str | os.PathLike,
    cfg: BuildConfig = BuildConfig(),
    *,
    progress: bool = True,
) -> CacheInfo:
    """Build (or reuse) the feature cache of ``src``; returns where it is and its manifest."""
    src, cache_root = str(src), Path(cache_root)
    if cfg.selection.strategy == "hard" and not cfg.scores_path:
        raise ValueError("selection strategy 'hard' needs scores_path (the mining stage's scores table)")
    require_file(src)
    if cache_root.exists() and not cache_root.is_dir():
        raise UserError("the feature cache folder is a file, not a folder", cache_root)
    # A backbone tfqa cannot read is refused before anything is written.
    tok = load_tokenizer(tokenizer_dir, cfg.features.html_tokens)
    with build_turn(cache_root):
        return _build_or_reuse(src, tok, tokenizer_dir, cache_root, cfg, progress)


def _build_or_reuse(src: str, tok, tokenizer_dir, cache_root: Path, cfg: BuildConfig, progress: bool) -> CacheInfo:
    input_digest = remembered_digest(src, cache_root)
    scores_digest = remembered_digest(cfg.scores_path, cache_root) if cfg.scores_path else None
    tok_fp = tokenizer_fingerprint(tok)  # hashes the whole tokenizer spec: ~0.15 s, so once
    prefix = word_prefix(tok)
    fp = fingerprint(input_digest, tok_fp, cfg, scores_digest, prefix)
    final = cache_root / fp
    if (final / MANIFEST).exists():
        _remember(src, cfg, cache_root, input_digest, scores_digest)
        return CacheInfo(final, fp, json.loads((final / MANIFEST).read_text()), reused=True)

    tmp = cache_root / f"{fp}.tmp-{socket.gethostname()}-{os.getpid()}"
    try:
        remove_dead_builds(cache_root)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    except OSError as exc:
        raise UserError(f"cannot write the feature cache here: {exc.strerror or exc}", cache_root) from None
    try:
        tok.save_pretrained(str(tmp / "tokenizer"))
        manifest = _build_into(tmp, src, cfg, progress)
        manifest.update(
            fingerprint=fp,
            format_version=FEATURE_FORMAT_VERSION,
            input={"path": os.path.abspath(src), "blake2b": input_digest, "bytes": os.path.getsize(src)},
            tokenizer={"source": os.path.abspath(tokenizer_dir), "fingerprint": tok_fp, "word_prefix": prefix},
            features=asdict(cfg.features),
            selection=asdict(cfg.selection),
            scores={"path": cfg.scores_path, "blake2b": scores_digest} if cfg.scores_path else None,
        )
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
        try:
            os.rename(tmp, final)
        except OSError:  # another process finished the same cache first: theirs is as good
            if not (final / MANIFEST).exists():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError) and exc.errno in _DISK_FULL:
            # A worker's or the parent's write ran out of room; the error names a shard of a folder
            # that is gone now. One line for the cache instead; nothing of the build is left.
            raise UserError(
                f"feature cache not written: {os.strerror(exc.errno)} (the unfinished build was removed)", cache_root
            ) from None
        raise
    _remember(src, cfg, cache_root, input_digest, scores_digest)
    return CacheInfo(final, fp, json.loads((final / MANIFEST).read_text()), reused=False)


def _remember(src: str, cfg: BuildConfig, cache_root: Path, input_digest: str, scores_digest: str | None) -> None:
    # Only beside a finished cache: a refused build leaves the folder as it found it. A memo is a
    # saving, not a result: on a full disk the next rank reads the input's digest itself.
    with contextlib.suppress(OSError):
        remember_digest(src, cache_root, input_digest)
        if cfg.scores_path:
            remember_digest(cfg.scores_path, cache_root, scores_digest)


def remove_dead_builds(cache_root: Path) -> list[Path]:
    """Delete the folders of builds on this host whose process is gone (killed mid-build).

    Folders of other hosts (a shared file system) are left alone: their pids mean nothing here.
    """
    removed = []
    prefix = f".tmp-{socket.gethostname()}-"
    for d in cache_root.glob(f"*{prefix}*"):
        try:
            pid = int(d.name.rsplit("-", 1)[1])
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d)
        except (ValueError, PermissionError):
            continue
    return removed


def _build_into(out: Path, src: str, cfg: BuildConfig, progress: bool) -> dict:
    from tfqa.core.progress import bar as progress_bar

    workers = cfg.workers or os.cpu_count() or 1
    report = ReadReport()
    budget = BadLineBudget(cfg.max_bad_lines, report)
    totals = FeatureCounts()
    seen: dict[str, int] = {}
    shards: list[dict] = []
    t0 = time.perf_counter()
    breaks: list[BadInputError] = []
    jobs = _chunks(src, cfg.chunk_lines, cfg.max_lines, breaks)
    # Loaded once, here: the forked workers share its arrays instead of each reading the file.
    scores = load_score_table(cfg.scores_path) if cfg.scores_path else None
    init_args = (str(out / "tokenizer"), cfg, str(out), src, scores)
    bar = progress_bar(f"features {Path(src).name}", total=cfg.max_lines or None, unit="ex", disable=not progress)
    pool = None
    if workers > 1:
        # fork keeps start-up cheap (no re-import of torch/transformers per worker) and hands the
        # workers the initializer's arguments (the scores table) without pickling them.
        pool = mp.get_context("fork").Pool(workers, initializer=_pool_init, initargs=init_args)
        results = pool.imap(_pool_run, jobs)
    else:
        state = _init_state(*init_args)
        results = (process_chunk(state, cid, lines) for cid, lines in jobs)
    try:
        for res in results:
            events = [(line, "bad", b) for b in res.bad for line in [b[1]]]
            events += [(e[1], "ex", e) for e in res.examples]
            drop: list[tuple[int, int]] = []
            for line, kind, item in sorted(events, key=lambda x: x[0]):
                report.lines += 1
                if kind == "bad":
                    budget.skip(BadInputError(*item))
                    continue
                ex_id, lineno, first_row, n_rows, counts = item
                if ex_id in seen:
                    budget.skip(BadInputError(src, lineno, "example_id", f"duplicate of line {seen[ex_id]}"))
                    drop.append((first_row, n_rows))
                    continue
                seen[ex_id] = lineno
                report.examples += 1
                totals.add(counts)
            rows = res.rows
            if res.shard and drop:
                rows = _drop_rows(out / res.shard, drop)
            if res.shard and rows:
                shards.append({"file": res.shard, "rows": rows})
            elif res.shard:
                (out / res.shard).unlink()
            bar.update(len(res.examples) + len(res.bad))
        for err in breaks:  # after every line before it, as a one-process read would see it
            budget.skip(err)
        check_not_empty(src, report, cfg.allow_empty)
    finally:
        bar.close()
        if pool is not None:
            pool.terminate()
            pool.join()
    return {
        "counts": totals.as_metrics(),
        "lines": report.lines,
        "skipped_lines": len(report.skipped),
        "skipped": [{"line": e.line, "field": e.field, "reason": e.reason} for e in report.skipped],
        "shards": shards,
        "rows": sum(s["rows"] for s in shards),
        "build_seconds": round(time.perf_counter() - t0, 3),
        "workers": workers,
    }
