"""The dev subset cache (``write_subset``) is keyed by its source, not only by the line count."""

from __future__ import annotations

import os

from tfqa.evaluation.dev import write_subset


def _lines(path, *ids):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f'{{"example_id": "{i}"}}\n' for i in ids))
    return str(path)


def test_another_dev_file_with_the_same_limit_gets_its_own_subset(tmp_path):
    cache = tmp_path / "features"
    a = _lines(tmp_path / "a" / "dev.jsonl", 1, 2, 3)
    b = _lines(tmp_path / "b" / "dev.jsonl", 7, 8, 9)
    first, second = write_subset(a, cache, 2), write_subset(b, cache, 2)
    assert first != second
    assert first.read_text() == '{"example_id": "1"}\n{"example_id": "2"}\n'
    assert second.read_text() == '{"example_id": "7"}\n{"example_id": "8"}\n'
    assert write_subset(a, cache, 2) == first  # the same source again: reused
    assert write_subset(a, cache, 0).read_text().count("\n") == 3


def test_a_rewritten_dev_file_is_not_served_its_old_subset(tmp_path):
    cache = tmp_path / "features"
    dev = _lines(tmp_path / "dev.jsonl", 1, 2, 3)
    old = write_subset(dev, cache, 2)
    _lines(tmp_path / "dev.jsonl", 40, 50, 60)
    st = os.stat(dev)
    os.utime(dev, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # a coarse clock must not hide the change
    new = write_subset(dev, cache, 2)
    assert new != old and new.read_text() == '{"example_id": "40"}\n{"example_id": "50"}\n'
