"""report.md of a run directory: what was trained on what, how every checkpoint scored on the
held-out suites, and the improvement curve. Reads only the run directory's own files."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from eval.records import CheckpointManifest, EvalSummary


def _rounds(run_dir: Path) -> list[tuple[CheckpointManifest, EvalSummary | None]]:
    out = []
    for d in sorted((run_dir / "rounds").glob("round-*")):
        m = CheckpointManifest.read(d)
        if m is not None:
            out.append((m, EvalSummary.read(d / "eval")))
    return out


def _pct(v: float) -> str:
    return f"{100 * v:.1f}%"


def rounds_table(run_dir: Path) -> list[str]:
    lines = ["| round | interaction h | trajectories used | train loss | held-out success (95% CI) | mean score | episodes |",
             "|---|---|---|---|---|---|---|"]
    for m, s in _rounds(run_dir):
        loss = m.metrics.get("train_loss")
        evals = (f"{_pct(s.success_rate)} ({_pct(s.ci95[0])}-{_pct(s.ci95[1])}) | {s.mean_score:.3f} | "
                 f"{s.episodes}") if s else "not evaluated | | "
        lines.append(f"| {m.round} | {m.cumulative_interaction_hours:.2f} | {m.trajectories_used} | "
                     f"{'' if loss is None else f'{loss:.3f}'} | {evals} |")
    return lines


ROUND_COLUMNS = (("round", "round"), ("parent", "parent"), ("new_records", "new records"),
                 ("labels", "labels by source"), ("trained_on", "trained on: rows (of selected)"),
                 ("curriculum", "collect difficulty"), ("score", "held-out {metric} [95% CI]"), ("verdict", "verdict"))
# columns shown only when some row has the cell (collect.curriculum: runs without one keep their table)
OPTIONAL_COLUMNS = {"curriculum"}


def lineage_table(rows: list[Mapping[str, Any]], metric: str = "success_rate") -> list[str]:
    """The per-round table of a run with a promotion gate: one row per round, its cells given by the
    trainer (trainer/promote.py `report_rows`: eval never reads the trainer's records itself); a
    missing cell prints as "-" (an optional column no row has is left out)."""
    columns = [(key, title) for key, title in ROUND_COLUMNS
               if key not in OPTIONAL_COLUMNS or any(key in row for row in rows)]
    head = [title.format(metric=metric) for _, title in columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [str(row.get(key, "-")).replace("|", "\\|").replace("\n", " ") for key, _ in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def write_report(run_dir: Path, title: str, curve_markdown: str = "", extra: list[str] = (),
                 rounds: list[Mapping[str, Any]] | None = None, promoted: str | None = None,
                 metric: str = "success_rate") -> Path:
    """report.md. `rounds`: the per-round rows of the lineage table (new records, labels by source,
    trained-on counts, held-out score, promotion verdict), `promoted`: the line saying which
    checkpoint is promoted now; both from the trainer side."""
    run_dir = Path(run_dir)
    checkpoints = _rounds(run_dir)
    evaluated = [(m, s) for m, s in checkpoints if s]
    lines = [f"# {title}", ""]
    if len(evaluated) >= 2:
        (m0, s0), (m1, s1) = evaluated[0], evaluated[-1]
        gain = s1.success_rate - s0.success_rate
        lines += [f"Held-out success went from **{_pct(s0.success_rate)}** (round {m0.round}) to "
                  f"**{_pct(s1.success_rate)}** (round {m1.round}) after "
                  f"{m1.cumulative_interaction_hours:.1f} h of interaction: {gain:+.3f} absolute, "
                  f"{len(evaluated)} checkpoints evaluated on {s1.episodes} held-out episodes each.", ""]
    if rounds:
        lines += ["## Rounds", ""] + ([promoted, ""] if promoted else []) + lineage_table(rounds, metric) + [""]
    lines += ["## Checkpoints", ""] + rounds_table(run_dir) + [""]
    if curve_markdown:
        lines += [curve_markdown, ""]
    lines += list(extra)
    lines += ["## Files", "", "- checkpoints: `rounds/round-XXXX/` (adapter/, manifest.json, eval/)",
              "- curve: `curve/curve.json`, `curve/curve.png`", "- experience store: `store/`",
              "- recipe: `recipe.resolved.yaml`"]
    if promoted:
        lines += ["- promotion: `promoted/` (the checkpoint to deploy, SERVING.md), `promotion/` (verdicts, history)"]
    lines += [""]
    path = run_dir / "report.md"
    tmp = path.with_name(".report.md.tmp")
    tmp.write_text("\n".join(lines))
    tmp.replace(path)
    return path
