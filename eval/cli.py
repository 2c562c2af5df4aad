"""Command-line entry points of eval/ (`flywheel eval`, `flywheel curve`, ...). Each is a function
`NAME_main(argv) -> int` that trainer/cli.py dispatches to; the logic lives next to the code it drives."""
from __future__ import annotations


# ---------------------------------------------------------------------------------------------
# flywheel curve (issue 6): the fit, outputs and argument parsing live in eval/curve_report.py.

def curve_main(argv: list[str]) -> int:
    """flywheel curve RUN_DIR... [--x hours|gpu_hours|tokens|round] [--form edgebench|scalerl] [--json]
    flywheel curve --points FILE.csv"""
    from eval.curve_report import curve_command

    return curve_command(argv)
