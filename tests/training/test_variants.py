"""The variants table: what each training entry point trains, overrides, and the sampling it implies."""

from __future__ import annotations

import pytest

from tfqa.features.selection import SelectionConfig
from tfqa.stages.train import selection_for
from tfqa.training.variants import VARIANTS, variant_for, with_overrides


def test_each_entry_point_trains_its_own_variants_and_names_the_owner_of_others():
    assert variant_for("train_albert", "2").key == "2" and variant_for("train_albert", "3.0").key == "3"
    with pytest.raises(ValueError, match="variant 4 is trained by train_bert_large"):
        variant_for("train_albert", "4")
    with pytest.raises(ValueError, match="unknown training entry point"):
        variant_for("train_gpt", "1")


def test_variants_after_mining_mix_mined_and_random_negatives():
    for key in ("1", "2", "4"):
        assert selection_for(VARIANTS[key]) == SelectionConfig("hard", 2, False, VARIANTS[key].seed, random_negatives=1)
    for key in ("3", "5"):  # the other variant of each backbone draws from top-level candidates only
        assert selection_for(VARIANTS[key]) == SelectionConfig("hard", 2, True, VARIANTS[key].seed, random_negatives=1)
    sel = selection_for(VARIANTS["bert_base"])  # it comes before mining
    assert sel.strategy == "random" and sel.random_negatives == 0
    # Switching a hard variant to random sampling from the command line is not an error.
    sel = selection_for(with_overrides(VARIANTS["2"], {"negatives": "random", "negatives_per_example": "3"}))
    assert (sel.strategy, sel.negatives, sel.random_negatives) == ("random", 3, 0)


def test_overrides_cast_to_the_field_type_and_reject_unknown_or_fixed_settings():
    v = with_overrides(
        VARIANTS["4"],
        {"lr": "1e-5", "epochs": "2", "top_level_only": "true", "random_negatives": "0", "seed": "7.0", "max_steps": None},
    )
    assert (v.lr, v.epochs, v.top_level_only, v.random_negatives, v.seed) == (1e-5, 2.0, True, 0, 7)
    for bad in ({"learning_rate": "1"}, {"entry_point": "train_bert"}):
        with pytest.raises(ValueError, match="unknown or fixed"):
            with_overrides(VARIANTS["4"], bad)
