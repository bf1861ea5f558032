"""The training stages of the original, as one table of settings rather than five scripts.

Variants of one backbone differ in seed and in how negatives are sampled, which is what makes
their errors differ and the ensemble pay off:

- ``bert_base`` (the original's 1_1): random negatives; the model the mining stage uses.
- ``1``: bert-base trained afresh on the negatives ``bert_base`` found hardest.
- ``2`` / ``3``: albert-xxlarge-v2 from the SQuAD 2.0 fine-tuned run; negatives from all
  candidates (seed 2) vs. from top-level candidates only (seed 3).

Every variant after mining takes the 2 top-scored negatives of each example plus 1 drawn at
random from the rest. Mined negatives alone can all be of one kind: on the demo's pages all of
them were paragraphs, and variant 1 trained on them took tables and lists for answers (dev long
F1 0.353; with the one random negative, 0.667, from the same bert_base and mining run). Random
negatives alone, the choice of variants 3 and 5 before, gave two of the demo's weakest models
(0.52, 0.57).
- ``4`` / ``5``: bert-large-uncased-whole-word-masking-finetuned-squad; the same split of
  negative pools as 2 / 3 (seeds 4 and 5).

Every field can be overridden from the command line (``-P key=value``).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any


@dataclass(frozen=True)
class Variant:
    key: str
    """``bert_base`` or ``1``..``5``."""
    entry_point: str
    """The MLflow entry point that trains it."""
    backbone_name: str
    """The pretrained model it starts from, as the registry names it (checked by ``promote``)."""
    registered_model: str
    init: str = "backbone"
    """``backbone`` (the backbone dir as given) or ``squad`` (the finetune_squad run's model)."""
    negatives: str = "random"
    """Negative sampling: ``random`` or ``hard`` (needs a mining run)."""
    negatives_per_example: int = 2
    random_negatives: int = 0
    """With ``hard`` sampling: this many random negatives besides the mined ones (see
    ``SelectionConfig.random_negatives``); ignored with ``random`` sampling."""
    top_level_only: bool = False
    """Train on top-level candidates only; the model then also answers with top-level candidates
    only (it never learnt to tell a nested candidate from its parent; see ``score_candidates``)."""
    epochs: float = 1.0
    lr: float = 3e-5
    batch_size: int = 32
    grad_accum_steps: int = 1
    warmup_fraction: float = 0.1
    weight_decay: float = 0.01
    seed: int = 0
    max_seq_len: int = 360
    max_question_len: int = 64
    html_tokens: str = "tfqa"
    """``original`` or ``tfqa`` tag tokens (``FeatureConfig.html_tokens``)."""
    decode: str = "original"
    """How this model's own outputs are decoded (``DecodeConfig.decode``): its dev evaluation and
    when it is served alone. An ensemble decodes as its manifest says."""

    def __post_init__(self) -> None:
        # Checked here so a bad -P value fails before any model or data is loaded.
        from tfqa.features.tokenization import check_html_tokens
        from tfqa.inference.decode import DECODE_MODES

        check_html_tokens(self.html_tokens)
        if self.decode not in DECODE_MODES:
            raise ValueError(f"decode must be one of {', '.join(DECODE_MODES)}, got {self.decode!r}")


VARIANTS: dict[str, Variant] = {
    v.key: v
    for v in [
        Variant(
            "bert_base", "train_bert_base", "bert-base-uncased", "tfqa-bert-base", negatives="random", epochs=1.0, lr=5e-5, seed=1
        ),
        Variant(
            "1",
            "train_bert",
            "bert-base-uncased",
            "tfqa-v1-bert-base",
            negatives="hard",
            random_negatives=1,
            epochs=1.0,
            lr=5e-5,
            seed=11,
        ),
        Variant(
            "2",
            "train_albert",
            "albert-xxlarge-v2",
            "tfqa-v2-albert",
            init="squad",
            negatives="hard",
            random_negatives=1,
            epochs=2.0,
            lr=1.5e-5,
            batch_size=32,
            seed=2,
        ),
        Variant(
            "3",
            "train_albert",
            "albert-xxlarge-v2",
            "tfqa-v3-albert",
            init="squad",
            negatives="hard",
            random_negatives=1,
            top_level_only=True,
            epochs=2.0,
            lr=1.5e-5,
            seed=3,
        ),
        Variant(
            "4",
            "train_bert_large",
            "bert-large-uncased-whole-word-masking-finetuned-squad",
            "tfqa-v4-bert-large",
            negatives="hard",
            random_negatives=1,
            epochs=3.0,
            lr=2e-5,
            seed=4,
        ),
        Variant(
            "5",
            "train_bert_large",
            "bert-large-uncased-whole-word-masking-finetuned-squad",
            "tfqa-v5-bert-large",
            negatives="hard",
            random_negatives=1,
            top_level_only=True,
            epochs=3.0,
            lr=2e-5,
            seed=5,
        ),
    ]
}

TRAINING_STAGES: tuple[str, ...] = tuple(dict.fromkeys(v.entry_point for v in VARIANTS.values()))
"""The training entry points, in pipeline order: train_bert_base, train_bert, train_albert, train_bert_large."""


def variant_for(entry_point: str, key: str) -> Variant:
    """The variant ``key`` of ``entry_point``; a clear error when it belongs to another one."""
    key = str(key).strip()
    if key.endswith(".0"):  # MLflow hands numeric -P values through as typed, e.g. "2.0"
        key = key[:-2]
    allowed = [v.key for v in VARIANTS.values() if v.entry_point == entry_point]
    if not allowed:
        raise ValueError(f"unknown training entry point {entry_point!r}")
    if key not in allowed:
        owner = VARIANTS[key].entry_point if key in VARIANTS else None
        hint = f"; variant {key} is trained by {owner}" if owner else ""
        raise ValueError(f"{entry_point} trains variant(s) {', '.join(allowed)}, not {key!r}{hint}")
    return VARIANTS[key]


def with_overrides(variant: Variant, overrides: dict[str, Any]) -> Variant:
    """Apply command-line overrides (strings are cast to the field's type); unknown keys fail."""
    types = {f.name: f.type for f in fields(Variant)}
    changes: dict[str, Any] = {}
    for name, raw in overrides.items():
        if raw is None or raw == "":
            continue
        if name not in types or name in ("key", "entry_point"):
            raise ValueError(f"unknown or fixed variant setting {name!r}")
        kind = types[name]
        if kind in ("bool", bool):
            value: Any = raw if isinstance(raw, bool) else str(raw).lower() in ("1", "true", "yes")
        elif kind in ("int", int):
            value = int(float(raw))
        elif kind in ("float", float):
            value = float(raw)
        else:
            value = str(raw)
        changes[name] = value
    return replace(variant, **changes)
