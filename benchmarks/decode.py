"""Decoding speed on a dev-set-sized synthetic input: 7,830 examples x 100 candidates.

Times ``decode`` from each input form (columnar ``CandidateOutputs``, an Arrow table as read
from Parquet, the pandas DataFrame inference writes) and, with ``--models N``, the ensemble of N
models' outputs (align with the other models' rows in shuffled order, combine) and the pruning
cascade. Candidate lengths are uniform in 1..128 words (about 50M words in all).

    python benchmarks/decode.py
    python benchmarks/decode.py --models 4
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pyarrow as pa


def synthetic(n_examples: int, n_cands: int, max_words: int, seed: int):
    """Random outputs shaped like the real ones: Dirichlet class probs, per-word softmaxes."""
    from tfqa.inference.decode import CandidateOutputs, Ragged

    rng = np.random.default_rng(seed)
    n = n_examples * n_cands
    example_id = np.repeat(np.array([str(-(10**17) - k) for k in range(n_examples)], dtype=object), n_cands)
    candidate_index = np.tile(np.arange(n_cands, dtype=np.int32), n_examples)
    # Every model reads the same words: the lengths do not depend on the seed.
    lengths = np.random.default_rng(1234).integers(1, max_words + 1, size=n)
    # Candidates laid end to end; the outputs only need each one's first word.
    word_offset = (np.tile(np.arange(n_cands), n_examples) * max_words).astype(np.int32)
    logits = rng.standard_normal((n, 5)).astype(np.float32)
    class_probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)

    def word_probs() -> Ragged:
        raw = rng.random(int(lengths.sum()), dtype=np.float32) ** 4
        offsets = np.r_[0, np.cumsum(lengths)]
        sums = np.add.reduceat(raw, offsets[:-1])
        return Ragged(raw / np.repeat(sums, lengths), offsets.astype(np.int64))

    out = CandidateOutputs(example_id, candidate_index, word_offset, class_probs.astype(np.float32), word_probs(), word_probs())
    spans = {
        ex: np.stack([word_offset[:n_cands], word_offset[:n_cands] + max_words], axis=1).astype(np.int64)
        for ex in example_id[::n_cands]
    }
    return out, spans


def to_arrow(out) -> pa.Table:
    def lists(values: np.ndarray, offsets: np.ndarray) -> pa.Array:
        return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), pa.array(values))

    cls_offsets = np.arange(0, 5 * len(out) + 1, 5)
    return pa.table(
        {
            "example_id": pa.array(out.example_id.tolist(), pa.string()),
            "candidate_index": out.candidate_index,
            "word_offset": out.word_offset,
            "class_probs": lists(out.class_probs.reshape(-1), cls_offsets),
            "start_probs": lists(out.start_probs.values, out.start_probs.offsets),
            "end_probs": lists(out.end_probs.values, out.end_probs.offsets),
        }
    )


def timed(label: str, fn, n_examples: int):
    t0 = time.perf_counter()
    result = fn()
    dt = time.perf_counter() - t0
    print(f"{label:<44s} {dt:7.2f} s  {n_examples / dt:10,.0f} examples/s")
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--examples", type=int, default=7830)
    ap.add_argument("--candidates", type=int, default=100)
    ap.add_argument("--max-words", type=int, default=128, help="candidate lengths are uniform in 1..max-words")
    ap.add_argument("--models", type=int, default=0, help="also time ensembling this many models")
    ap.add_argument("--skip-frame", action="store_true", help="skip the (slowest) pandas-object input form")
    args = ap.parse_args()

    from tfqa.inference.decode import apply_thresholds, decode, nq_predictions_json
    from tfqa.inference.ensemble import DEFAULT_CASCADE, align, cascade

    t0 = time.perf_counter()
    out, spans = synthetic(args.examples, args.candidates, args.max_words, seed=0)
    words = len(out.start_probs.values)
    print(
        f"{args.examples:,} examples x {args.candidates} candidates = {len(out):,} rows, {words:,} words "
        f"(built in {time.perf_counter() - t0:.1f} s)"
    )

    n = args.examples
    preds = timed("decode(CandidateOutputs)", lambda: decode(out, spans), n)
    timed("apply_thresholds + nq_predictions_json", lambda: nq_predictions_json(apply_thresholds(preds, 0.5, 0.5)), n)
    table = to_arrow(out)
    assert timed("decode(pyarrow.Table)", lambda: decode(table, spans), n) == preds
    table = None  # free it before the next copy
    if not args.skip_frame:
        df = out.to_frame()
        assert timed("decode(pandas.DataFrame, object columns)", lambda: decode(df, spans), n) == preds
        df = None

    if args.models:
        # The other models' rows come in another order (the worst case for alignment).
        models = [out] + [
            synthetic(args.examples, args.candidates, args.max_words, seed=k)[0].take(
                np.random.default_rng(k).permutation(len(out))
            )
            for k in range(1, args.models)
        ]
        aligned = timed(f"align({args.models} models, rows shuffled)", lambda: align(models), n)
        weights = np.linspace(1, 2, args.models)
        mixed = timed(f"combine({args.models} models)", lambda: aligned.combine(weights), n)
        timed("decode(ensembled)", lambda: decode(mixed, spans), n)
        pair = models[:2] if args.models > 1 else [out, out]
        timed("cascade(2 models, default stages)", lambda: cascade(pair, DEFAULT_CASCADE), n)


if __name__ == "__main__":
    main()
