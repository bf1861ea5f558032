"""Where models and their ensemble go wrong: quality by gold answer type and by document length,
how often the models pick the same long answer, and the examples the ensemble fixed or broke.

Pure numpy/pandas over what scoring already produced (``tfqa.evaluation.nq_metric.ScoredAnswers`` per model,
rows in gold order, and the decoder's ``tfqa.inference.decode.DecodedAnswer`` answers); only ``write`` touches
the disk. The definitions, used by the training runs' ``dev/acc_*`` metrics as well:

- **Gold answer type** of an example, from the official annotator vote (``GoldTable``): ``null``
  when the vote gives it neither a long nor a short answer; ``long_only`` when it has a long answer
  and no short one; otherwise the kind most of its short-answering annotations gave, ``short_span``,
  ``yes`` or ``no`` (a tie goes to the first of those three).
- **Right**, for one example at a pair of thresholds (long, short): each answer type is right by
  the official rule, i.e. where gold has an answer, the prediction keeps one (score >= threshold)
  and the official scorer counts it correct; where gold has none, the prediction keeps none. The
  example is right when its long and its short answer are both right. ``accuracy`` is the fraction
  of right examples; long and short are thresholded independently, as the official scorer does.
- **Slice F1**: the official long (short) F1 over the examples of a slice at the model's
  thresholds (chosen on the whole dev set), NaN where the slice holds no gold answer of that type.
  Over every example it is the official best-threshold F1.
- **Agreement** of two models: the fraction of examples where both pick the same long candidate
  before thresholds (the candidate each ranks first; no candidate at all counts as a pick), so it
  measures how alike they rank, apart from how each is calibrated.
- **Best member**: the non-ensemble model with the highest long + short F1 at its thresholds
  (by default its best-threshold F1s; the first on ties); the ensemble *fixed* an example the best
  member gets wrong and it gets right, and *broke* one the other way round.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from tfqa.core.destinations import write_text_whole, written_whole
from tfqa.data.records import Example
from tfqa.evaluation.nq_metric import AnswerStats, GoldTable, ScoredAnswers
from tfqa.inference import decode as dec
from tfqa.tracking.names import LOGGED_ARTIFACTS_TAG

ANSWER_TYPES = ("null", "long_only", "short_span", "yes", "no")
TABLES = ("slices", "agreement", "ensemble_changes")
"""The analysis' tables; each is written as ``<name>.csv`` and as an MLflow table ``<name>.json``."""


# -- per-example facts --------------------------------------------------------------------------------
def gold_answer_types(gold: GoldTable) -> np.ndarray:
    """(n,) index into ``ANSWER_TYPES`` of each gold example's type (see the module docstring)."""
    n = len(gold)
    votes = np.stack(
        [
            np.bincount(gold.ann_example[gold.ann_n_short > 0], minlength=n),
            np.bincount(gold.ann_example[gold.ann_yes_no == 1], minlength=n),
            np.bincount(gold.ann_example[gold.ann_yes_no == 2], minlength=n),
        ],
        axis=1,
    )
    short_kind = 2 + np.argmax(votes, axis=1)  # argmax: the first of equal counts
    return np.where(gold.has_short, short_kind, np.where(gold.has_long, 1, 0)).astype(np.int64)


@dataclass(frozen=True)
class Thresholds:
    long: float
    short: float

    @classmethod
    def best(cls, scored: ScoredAnswers) -> Thresholds:
        """The official best-threshold pair (what ``dev/long_threshold`` etc. report)."""
        official = scored.official_metrics()
        return cls(float(official["long-best-threshold"]), float(official["short-best-threshold"]))


def kept(stats: AnswerStats, threshold: float) -> np.ndarray:
    return stats.has_pred & (stats.score >= threshold)


def answer_right(stats: AnswerStats, threshold: float) -> np.ndarray:
    """(n,) bool: a correct answer kept where gold has one, none kept where gold has none."""
    k = kept(stats, threshold)
    return np.where(stats.has_gold, k & stats.correct, ~k)


def example_right(scored: ScoredAnswers, t: Thresholds) -> np.ndarray:
    return answer_right(scored.long, t.long) & answer_right(scored.short, t.short)


def slice_f1(stats: AnswerStats, threshold: float, mask: np.ndarray) -> float:
    """Official F1 of ``stats`` restricted to ``mask`` at ``threshold``; NaN without gold there."""
    n_gold = int((stats.has_gold & mask).sum())
    if not n_gold:
        return float("nan")
    k = kept(stats, threshold) & mask
    n_kept, n_correct = int(k.sum()), int((k & stats.correct).sum())
    # The operation order of the official ``compute_pr_curves``, so the whole set gives its value exactly.
    precision = n_correct / n_kept if n_kept else 0.0
    recall = n_correct / n_gold
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


def accuracy_by_type(gold: GoldTable, scored: ScoredAnswers, t: Thresholds) -> dict[str, tuple[int, float]]:
    """Gold answer type -> (examples of that type, fraction right); NaN for a type with none."""
    types = gold_answer_types(gold)
    right = example_right(scored, t)
    out = {}
    for k, name in enumerate(ANSWER_TYPES):
        mask = types == k
        n = int(mask.sum())
        out[name] = (n, float(right[mask].mean()) if n else float("nan"))
    return out


def length_buckets(lengths: np.ndarray, n_buckets: int = 4, edges: Sequence[int] | None = None) -> tuple[np.ndarray, list[str]]:
    """Bucket of each length and the bucket labels ``[lo, hi)`` (tokens).

    Default edges are the length quantiles (quartiles for 4 buckets), rounded up to whole tokens,
    so the buckets hold about equal numbers of examples; ``edges`` gives the inner edges instead.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    if edges is None:
        qs = np.quantile(lengths, np.arange(1, n_buckets) / n_buckets) if len(lengths) else []
        edges = np.ceil(qs).astype(np.int64)
    inner = np.unique(np.asarray(edges, dtype=np.int64))
    lo, hi = (int(lengths.min()), int(lengths.max()) + 1) if len(lengths) else (0, 1)
    inner = inner[(inner > lo) & (inner < hi)]
    bounds = [lo, *inner.tolist(), hi]
    labels = [f"[{a}, {b})" for a, b in zip(bounds[:-1], bounds[1:])]
    return np.searchsorted(inner, lengths, side="right"), labels


def agreement_matrix(picks: dict[str, np.ndarray]) -> pd.DataFrame:
    """Fraction of examples on which each pair picks the same long candidate (rows = columns = models)."""
    names = list(picks)
    m = np.array([[float(np.mean(picks[a] == picks[b])) if len(picks[a]) else float("nan") for b in names] for a in names])
    return pd.DataFrame(m, index=pd.Index(names, name="model"), columns=names)


# -- one model's answers ------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class ModelAnswers:
    """One model's (or the ensemble's) dev answers: scored outcomes and decoded answers, in gold order."""

    name: str
    scored: ScoredAnswers
    decoded: list[dec.DecodedAnswer]
    thresholds: Thresholds | None = None
    """Default: the model's own official best thresholds."""

    @property
    def at(self) -> Thresholds:
        return self.thresholds or Thresholds.best(self.scored)

    @property
    def objective(self) -> float:
        """Long + short F1 at ``at`` (by default the best-threshold F1s); no gold counts 0."""
        every = np.ones(len(self.decoded), dtype=bool)
        f1s = (slice_f1(self.scored.long, self.at.long, every), slice_f1(self.scored.short, self.at.short, every))
        return sum(0.0 if math.isnan(f) else f for f in f1s)

    def long_picks(self) -> np.ndarray:
        return np.array([p.long_candidate_index for p in self.decoded], dtype=np.int64)


@dataclass(frozen=True, eq=False)
class ErrorAnalysis:
    slices: pd.DataFrame
    """model, by (``all`` | ``answer_type`` | ``doc_length``), slice, n, accuracy, long_f1, short_f1."""
    agreement: pd.DataFrame
    ensemble_changes: pd.DataFrame
    """One row per example the ensemble fixed or broke relative to ``best_member``."""
    best_member: str
    ensemble: str


def analyse(
    examples: Sequence[Example],
    gold: GoldTable,
    members: Sequence[ModelAnswers],
    ensemble: ModelAnswers,
    *,
    n_buckets: int = 4,
    length_edges: Sequence[int] | None = None,
) -> ErrorAnalysis:
    """The analysis of ``members`` and their ``ensemble`` on ``examples`` (in ``gold``'s row order)."""
    if not members:
        raise ValueError("error analysis needs at least one ensemble member")
    if [ex.example_id for ex in examples] != list(gold.example_ids):
        raise ValueError("examples and gold rows must be the same examples in the same order")
    for m in (*members, ensemble):
        if [p.example_id for p in m.decoded] != list(gold.example_ids):
            raise ValueError(f"{m.name}: decoded answers must follow the gold rows")
    types = gold_answer_types(gold)
    bucket, bucket_labels = length_buckets(np.array([len(ex.words) for ex in examples]), n_buckets, length_edges)
    groups = [("all", "all", np.ones(len(gold), dtype=bool))]
    groups += [("answer_type", name, types == k) for k, name in enumerate(ANSWER_TYPES)]
    groups += [("doc_length", label, bucket == k) for k, label in enumerate(bucket_labels)]

    rows = []
    for m in (*members, ensemble):
        t = m.at
        right = example_right(m.scored, t)
        for by, label, mask in groups:
            n = int(mask.sum())
            if not n:
                continue
            rows.append(
                {
                    "model": m.name,
                    "by": by,
                    "slice": label,
                    "n": n,
                    "accuracy": float(right[mask].mean()),
                    "long_f1": slice_f1(m.scored.long, t.long, mask),
                    "short_f1": slice_f1(m.scored.short, t.short, mask),
                }
            )
    slices = pd.DataFrame(rows, columns=["model", "by", "slice", "n", "accuracy", "long_f1", "short_f1"])

    agreement = agreement_matrix({m.name: m.long_picks() for m in (*members, ensemble)})
    best = max(members, key=lambda m: m.objective)  # max keeps the first of equal objectives
    changes = ensemble_changes(examples, types, best, ensemble)
    return ErrorAnalysis(slices, agreement, changes, best.name, ensemble.name)


# -- the examples the ensemble changed ----------------------------------------------------------------
def _text(ex: Example, start: int, end: int, limit: int = 12) -> str:
    words = [w for w, h in zip(ex.words[start:end], ex.is_html[start:end]) if not h]
    return " ".join(words[:limit]) + (" ..." if len(words) > limit else "")


def gold_summary(ex: Example) -> tuple[str, str]:
    """(long, short) gold as people read them: every distinct annotated span, with its words."""
    longs = sorted({(a.long_answer.start_token, a.long_answer.end_token) for a in ex.annotations if a.long_answer})
    shorts: list[str] = []
    for a in ex.annotations:
        if a.yes_no != "NONE":
            item = a.yes_no
        elif a.short_answers:
            item = " / ".join(f"'{_text(ex, s.start_token, s.end_token)}'" for s in a.short_answers)
        else:
            continue
        if item not in shorts:
            shorts.append(item)
    long = " | ".join(f"tokens {s}-{e}" for s, e in longs) or "none"
    return long, " | ".join(shorts) or "none"


def answer_summary(ex: Example, p: dec.DecodedAnswer, t: Thresholds) -> tuple[str, str]:
    """(long, short) as the scorer counts them at ``t``: the kept answer, or none with its score."""
    if p.has_long and p.long_score >= t.long:
        long = f"tokens {p.long_start_token}-{p.long_end_token} ({p.long_score:.3f})"
    else:
        long = f"none ({p.long_score:.3f})"
    if p.has_short and p.short_score >= t.short:
        what = p.yes_no if p.yes_no != "NONE" else f"'{_text(ex, p.short_start_token, p.short_end_token)}'"
        short = f"{what} ({p.short_score:.3f})"
    else:
        short = f"none ({p.short_score:.3f})"
    return long, short


def ensemble_changes(examples: Sequence[Example], types: np.ndarray, best: ModelAnswers, ens: ModelAnswers) -> pd.DataFrame:
    best_right = example_right(best.scored, best.at)
    ens_right = example_right(ens.scored, ens.at)
    rows = []
    for i in np.flatnonzero(best_right != ens_right):
        ex = examples[i]
        gold_long, gold_short = gold_summary(ex)
        best_long, best_short = answer_summary(ex, best.decoded[i], best.at)
        ens_long, ens_short = answer_summary(ex, ens.decoded[i], ens.at)
        rows.append(
            {
                "example_id": ex.example_id,
                "change": "fixed" if ens_right[i] else "broken",
                "gold_type": ANSWER_TYPES[types[i]],
                "question": ex.question,
                "gold_long": gold_long,
                "gold_short": gold_short,
                "best_member": best.name,
                "best_long": best_long,
                "best_short": best_short,
                "ensemble_long": ens_long,
                "ensemble_short": ens_short,
            }
        )
    columns = [
        "example_id",
        "change",
        "gold_type",
        "question",
        "gold_long",
        "gold_short",
        "best_member",
        "best_long",
        "best_short",
        "ensemble_long",
        "ensemble_short",
    ]
    return pd.DataFrame(rows, columns=columns).sort_values(["change", "example_id"], kind="stable", ignore_index=True)


# -- on disk ------------------------------------------------------------------------------------------
def write(analysis: ErrorAnalysis, out_dir: str | Path) -> list[Path]:
    """Each table as CSV and as an MLflow table (``pandas`` "split" JSON, what ``mlflow.log_table``
    writes), the slice figures and the agreement heatmap as PNGs; returns the files."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for name in TABLES:
        frame = getattr(analysis, name)
        if name == "agreement":
            frame = frame.reset_index()
        with written_whole(out / f"{name}.csv") as tmp:
            frame.to_csv(tmp, index=False)
        with written_whole(out / f"{name}.json") as tmp:
            # pandas' default keeps 10 decimals; 15 (its most) keeps a logged F1 as the metric has it.
            frame.to_json(tmp, orient="split", index=False, double_precision=15)
        files += [out / f"{name}.csv", out / f"{name}.json"]
    files.append(slices_plot(analysis, out / "slices.png"))
    files.append(agreement_plot(analysis, out / "agreement.png"))
    write_text_whole(
        out / "summary.json",
        json.dumps(
            {
                "best_member": analysis.best_member,
                "ensemble": analysis.ensemble,
                "fixed": int((analysis.ensemble_changes["change"] == "fixed").sum()),
                "broken": int((analysis.ensemble_changes["change"] == "broken").sum()),
            },
            indent=1,
        ),
    )
    return [*files, out / "summary.json"]


def table_tags(artifact_dir: str) -> dict[str, str]:
    """The run tag by which MLflow knows logged tables (``mlflow.log_table`` sets it), for the
    tables ``write`` put under ``artifact_dir``; ``mlflow.load_table`` then reads them."""
    tables = [{"path": f"{artifact_dir}/{name}.json", "type": "table"} for name in TABLES]
    return {LOGGED_ARTIFACTS_TAG: json.dumps(tables)}


def slices_plot(analysis: ErrorAnalysis, path: Path) -> Path:
    """Accuracy, long F1 and short F1 per model: by gold answer type (top), by length (bottom)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = analysis.slices
    models = list(dict.fromkeys(s["model"]))
    fig, axes = plt.subplots(2, 3, figsize=(15, 8), squeeze=False)
    for r, by in enumerate(("answer_type", "doc_length")):
        part = s[s["by"] == by]
        labels = list(dict.fromkeys(part["slice"]))
        width = 0.8 / max(len(models), 1)
        for c, metric in enumerate(("accuracy", "long_f1", "short_f1")):
            ax = axes[r][c]
            for k, model in enumerate(models):
                rows = part[part["model"] == model].set_index("slice").reindex(labels)
                x = np.arange(len(labels)) + (k - (len(models) - 1) / 2) * width
                ax.bar(x, rows[metric].fillna(0.0), width, label=model)
                for xi in x[rows[metric].isna().to_numpy()]:  # no gold of that kind: not a zero
                    ax.text(xi, 0.01, "n/a", ha="center", va="bottom", fontsize=7, rotation=90)
            ax.set_xticks(
                np.arange(len(labels)),
                [f"{lab}\nn={int(n)}" for lab, n in zip(labels, part.groupby("slice", sort=False)["n"].first())],
                fontsize=8,
            )
            ax.set_ylim(0, 1.02)
            ax.set_title(f"{metric} by {'gold answer type' if by == 'answer_type' else 'document length (tokens)'}", fontsize=10)
            ax.grid(axis="y", alpha=0.3)
    fig.legend(*axes[0][0].get_legend_handles_labels(), loc="upper right", ncol=len(models), fontsize=8)
    fig.suptitle(f"best member: {analysis.best_member}; n/a: the slice has no gold answer of that kind", fontsize=10, x=0.3)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    save_png(fig, path, dpi=90)
    return path


def agreement_plot(analysis: ErrorAnalysis, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    a = analysis.agreement
    fig, ax = plt.subplots(figsize=(1.2 * len(a) + 2.5, 1.0 * len(a) + 1.5))
    im = ax.imshow(a.to_numpy(), vmin=0, vmax=1, cmap="viridis")
    ax.set_xticks(range(len(a)), a.columns, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(a)), a.index, fontsize=8)
    for i in range(len(a)):
        for j in range(len(a)):
            v = a.iat[i, j]
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=8, color="white" if v < 0.6 else "black")
    ax.set_title("same long answer picked (before thresholds)", fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    save_png(fig, path, dpi=90)
    return path


def save_png(fig, path: Path, dpi: int) -> None:
    """A matplotlib figure as a PNG that appears whole or not at all; the figure is closed."""
    import matplotlib.pyplot as plt

    try:
        with written_whole(path) as tmp:
            fig.savefig(tmp, format="png", dpi=dpi)
    finally:
        plt.close(fig)
