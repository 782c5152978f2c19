"""The grading benchmark's statistics against values worked by hand."""

from __future__ import annotations

import pytest

from benchmarks.grading_stats import confusion, quadratic_weighted_kappa, spearman


def test_qwk() -> None:
    assert quadratic_weighted_kappa([0, 1, 2, 3], [0, 1, 2, 3], 0, 3) == 1.0
    # Independent halves: observed equals what chance gives.
    assert quadratic_weighted_kappa([0, 0, 1, 1], [0, 1, 0, 1], 0, 1) == pytest.approx(0.0)
    # Worked by hand: O = [[1,0,0],[0,1,1],[0,0,1]] over 0..2, weights (i-j)^2/4.
    # num = 1/4 (the 1->2 cell); E = hist_a (1,2,1) x hist_b (1,1,2) / 4; den = 5/4.
    assert quadratic_weighted_kappa([0, 1, 1, 2], [0, 1, 2, 2], 0, 2) == pytest.approx(0.8)
    assert quadratic_weighted_kappa([0, 2], [2, 0], 0, 2) < 0  # worse than chance
    with pytest.raises(ValueError):
        quadratic_weighted_kappa([0, 11], [0, 1], 0, 10)


def test_spearman() -> None:
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # Ties share ranks: [1, 2.5, 2.5, 4] against [1, 2, 3, 4] -> r = 4.5 / sqrt(4.5 * 5).
    assert spearman([0, 5, 5, 9], [1, 2, 3, 4]) == pytest.approx(4.5 / (4.5 * 5) ** 0.5)
    assert spearman([3, 3, 3], [1, 2, 3]) is None


def test_confusion() -> None:
    out = confusion(["a", "a", "b"], ["a", "b", "b"], ["a", "b"])
    assert out == {"a": {"a": 1, "b": 1}, "b": {"a": 0, "b": 1}}
