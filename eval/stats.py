"""Intervals of proportions, shared by the evaluator's summaries and the experience study."""
from __future__ import annotations

import math

Z95 = 1.959963984540054  # the exact two-sided 95% normal quantile (the evaluator's summaries use 1.96)


def wilson_interval(p: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a proportion p observed over n trials (well-behaved near 0 and 1);
    (0, 1) for no trials. p may be a mean of per-task values in [0, 1] (best-of-k)."""
    if n <= 0:
        return (0.0, 1.0)
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(max(p * (1 - p), 0.0) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def difference_of_proportions(p1: float, n1: int, p2: float, n2: int) -> dict[str, float]:
    """p1 - p2 with Newcombe's hybrid score 95% interval (method 10: from the two Wilson intervals).
    A proportion may be a mean of per-task values in [0, 1] (best-of-k): their variance is at most
    p(1 - p), so the interval is then conservative."""
    l1, u1 = wilson_interval(p1, n1, Z95)
    l2, u2 = wilson_interval(p2, n2, Z95)
    d = p1 - p2
    lo = d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    hi = d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return {"difference": d, "ci95": [lo, hi], "p1": p1, "n1": n1, "p2": p2, "n2": n2}
