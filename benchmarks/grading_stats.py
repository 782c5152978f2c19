"""Agreement statistics for benchmarks/grading.py: quadratic weighted kappa, Spearman's rank
correlation and a confusion matrix. Pure and small, checked by tests/unit/test_grading_stats.py
against hand-worked values (no SciPy or scikit-learn in the worker's environment for three
formulas)."""

from __future__ import annotations

import math
from collections.abc import Sequence


def quadratic_weighted_kappa(a: Sequence[int], b: Sequence[int], lo: int, hi: int) -> float:
    """Cohen's kappa with quadratic weights over the integer categories lo..hi (the usual QWK:
    1 is perfect agreement, 0 what chance gives, negative worse than chance)."""
    if len(a) != len(b) or not a:
        raise ValueError("two equally long, non-empty sequences of marks")
    n = hi - lo + 1
    observed = [[0.0] * n for _ in range(n)]
    for x, y in zip(a, b, strict=True):
        if not (lo <= x <= hi and lo <= y <= hi):
            raise ValueError(f"marks must be in {lo}..{hi}")
        observed[x - lo][y - lo] += 1
    hist_a = [sum(row) for row in observed]
    hist_b = [sum(observed[i][j] for i in range(n)) for j in range(n)]
    total = float(len(a))
    num = den = 0.0
    for i in range(n):
        for j in range(n):
            weight = (i - j) ** 2 / (n - 1) ** 2
            num += weight * observed[i][j]
            den += weight * hist_a[i] * hist_b[j] / total
    return 1.0 if den == 0 else 1.0 - num / den


def _ranks(values: Sequence[float]) -> list[float]:
    """Ranks from 1, ties sharing their average rank."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Spearman's rho (Pearson's r of the ranks); None when either side is constant."""
    if len(a) != len(b) or len(a) < 2:
        raise ValueError("two equally long sequences of at least two values")
    ra, rb = _ranks(a), _ranks(b)
    ma, mb = sum(ra) / len(ra), sum(rb) / len(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb, strict=True))
    va = sum((x - ma) ** 2 for x in ra)
    vb = sum((y - mb) ** 2 for y in rb)
    return None if va == 0 or vb == 0 else cov / math.sqrt(va * vb)


def confusion(
    reference: Sequence[str], predicted: Sequence[str], labels: Sequence[str]
) -> dict[str, dict[str, int]]:
    """{reference label: {predicted label: count}}."""
    out = {r: dict.fromkeys(labels, 0) for r in labels}
    for r, p in zip(reference, predicted, strict=True):
        out[r][p] += 1
    return out
