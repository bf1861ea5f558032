"""The final model is saved and logged by rank 0 alone (both training stages go through it)."""

from __future__ import annotations

from tfqa.training.checkpoint import save_final_model


class _Untouchable:
    def __getattr__(self, name):
        raise AssertionError(f"rank 1 used {name}")


def test_only_rank_zero_saves_and_logs_the_final_model(tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    assert save_final_model(_Untouchable(), _Untouchable(), _Untouchable(), tmp_path, {}) is None
    assert not (tmp_path / "final").exists()
