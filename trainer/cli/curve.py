"""`flywheel curve RUN_DIR... | --points FILE.csv`: fit and write the improvement curve
(eval/curve_report.py). Exit 0: at least one arm fitted; 1: no arm could be fitted; 2: bad input."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from eval.config import CurveConfig
from eval.curve_report import FLAG_TO_FIELD, X_LABELS, curve_inputs, write_curve_outputs
from trainer.cli.common import add_quiet, parse

_D = {name: f.default for name, f in CurveConfig.model_fields.items()}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="flywheel curve",
        description="Fit the improvement curve of one or more runs (each run is one arm) or of a CSV of points. "
                    "Writes curve.json, curve.png and curve.md. Exit 0: at least one arm fitted; 1: no arm could "
                    "be fitted (outputs still written, with the reason); 2: bad input. A setting not given on the "
                    "command line comes from the first run's recipe (its curve section), else the default shown.")
    p.add_argument("run_dirs", nargs="*", type=Path, metavar="RUN_DIR", help="run directories (rounds/round-XXXX/...)")
    p.add_argument("--points", type=Path, help="CSV with columns arm, x, score (optional task, date, n, lo, hi, label)")
    p.add_argument("--x", choices=sorted(X_LABELS), help=f"x-axis (default: the recipe's curve.x, else {_D['x']})")
    p.add_argument("--form", choices=["edgebench", "scalerl"],
                   help=f"curve form (default: the recipe's curve.form, else {_D['form']})")
    p.add_argument("--metric", choices=["mean_score", "success_rate"],
                   help="run dirs: the summary.json key used as the score (default: each run's recipe curve.metric, "
                        f"{_D['metric']} unless the recipe sets it; a run without a recipe: mean_score when its "
                        "summaries have it, else success_rate)")
    p.add_argument("--bootstrap", type=int,
                   help=f"bootstrap resamples, 0 = no intervals (default: the recipe's, else {_D['bootstrap']})")
    p.add_argument("--horizon", type=float,
                   help=f"learning speed horizon, x units (default: the recipe's curve.horizon_hours, else {_D['horizon_hours']})")
    p.add_argument("--target", type=float, help="report the x needed to reach this score (default: the recipe's "
                   "curve.target_score, else none)")
    p.add_argument("--forecast-fraction", type=float, help="forecast check: fit on this first share of checkpoints "
                   f"(default: the recipe's, else {_D['forecast_fraction']})")
    p.add_argument("--skip-initial-x", type=float, help="leave points with 0 < x < this out of the fit "
                   f"(default: the recipe's, else {_D['skip_initial_x']})")
    p.add_argument("--margin", type=float, help="asymptote margin of the comparison of arms "
                   f"(default: the recipe's, else {_D['margin']})")
    p.add_argument("--seed", type=int, help=f"bootstrap seed (default: the recipe's, else {_D['seed']})")
    p.add_argument("--out", type=Path, help="output folder (default: RUN_DIR/curve for one run, else ./curve)")
    p.add_argument("--title", default="", help="plot title (default: none)")
    p.add_argument("--json", action="store_true", help="print curve.json to stdout instead of the summary")
    add_quiet(p)
    return p


def main(argv: list[str]) -> int:
    from data_pipeline.errors import FlywheelError

    args = parse(parser(), argv)
    if bool(args.run_dirs) == (args.points is not None):
        print("flywheel curve: give RUN_DIR... or --points FILE.csv (exactly one of them)", file=sys.stderr)
        return 2
    try:
        settings = {field: getattr(args, flag) for flag, field in FLAG_TO_FIELD.items()}
        from trainer.recipe import run_curve_section

        recipes = [run_curve_section(d) for d in args.run_dirs]
        cfg, points_by_arm, notes = curve_inputs(args.run_dirs, args.points, settings, args.metric, recipes)
    except FlywheelError as e:
        print(f"flywheel curve: error: {e}", file=sys.stderr)
        return 2
    one_run = len(args.run_dirs) == 1
    out = args.out or (args.run_dirs[0] / "curve" if one_run else Path("curve"))
    try:
        result = write_curve_outputs(points_by_arm, out, cfg, args.title,
                                     image_link="curve/curve.png" if one_run and args.out is None else "curve.png")
    except OSError as e:
        print(f"flywheel curve: error: cannot write to {out} ({e.strerror})", file=sys.stderr)
        return 2
    for note in notes:
        print(f"flywheel curve: note: {note}", file=sys.stderr)
    try:
        if args.json:
            print(json.dumps(result, indent=2))
        else:
            print(result["markdown"])
            print(f"wrote {out / 'curve.json'}, {out / 'curve.png'}, {out / 'curve.md'}")
    except BrokenPipeError:  # stdout closed early (| head): the files are written, nothing to report
        pass
    fitted = [arm for arm, rec in result["arms"].items() if rec["fit"]["status"] == "ok"]
    if not fitted:
        print("flywheel curve: no arm could be fitted: " + "; ".join(
            f"{arm}: {rec['fit']['reason']}" for arm, rec in result["arms"].items()), file=sys.stderr)
        return 1
    return 0
