"""The built-in suites by name. A new suite: one module in eval/envs/ exporting SUITE, listed here."""
from __future__ import annotations

from eval.envs import hidden_rule, knapsack, lookup, maze, repair, rewrite
from eval.envs.base import Suite

SUITES: dict[str, Suite] = {s.name: s for s in [maze.SUITE, knapsack.SUITE, rewrite.SUITE, repair.SUITE,
                                                hidden_rule.SUITE, lookup.SUITE]}


def get_suite(name: str) -> Suite:
    try:
        return SUITES[name]
    except KeyError:
        raise KeyError(f"unknown suite {name!r}; built-in suites: {', '.join(sorted(SUITES))}") from None
