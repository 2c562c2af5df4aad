"""The experience study's statistics and report: from the arms' results (trainer/study.py
`ArmResult`, per arm and seed) to RUN_DIR/study/report.md, study.png, study.json and curve/."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from eval.stats import difference_of_proportions
from trainer.recipe import Recipe
from trainer.rundir import atomic_write_json, atomic_write_text
from trainer.study_controls import ArmResult

Results = Mapping[str, Mapping[int, ArmResult]]  # arm name -> seed -> the arm's result


# ---- statistics ---------------------------------------------------------------------------------------
def budget_check(hours: dict[str, list[float]], tolerance: float) -> list[dict]:
    """Per round: every run's cumulative interaction hours against the median of all runs."""
    rows = []
    for r in range(min(len(v) for v in hours.values())):
        values = {name: v[r] for name, v in hours.items()}
        med = float(np.median(list(values.values())))
        worst = max(abs(h - med) / med for h in values.values()) if med > 0 else 0.0
        rows.append({"round": r, "median_hours": med, "min_hours": min(values.values()),
                     "max_hours": max(values.values()), "max_relative_deviation": worst,
                     "within_tolerance": worst <= tolerance})
    return rows


# ---- the arms' points for the curve fit ----------------------------------------------------------------
def curve_points(data: Results, metric: str) -> dict[str, list]:
    from eval.curve import CurvePoint

    out: dict[str, list] = {}
    for arm, by_seed in data.items():
        for seed, result in sorted(by_seed.items()):
            for row in result.rounds:
                lo, hi = row.ci95 if metric == "success_rate" else (None, None)
                tasks = row.per_task_success if metric == "success_rate" else row.per_task
                out.setdefault(arm, []).append(CurvePoint(
                    x=row.hours, score=getattr(row, metric), n=row.episodes, lo=lo, hi=hi,
                    task_scores=dict(tasks) or None, label=f"seed{seed} round-{row.round}", arm=arm))
    return out


# ---- the report ------------------------------------------------------------------------------------------------
HEADLINE = "Does accumulating experience beat retrying?"


def _kinds(study: Recipe) -> dict[str, str]:
    return {a.name: a.kind for a in study.study.arms}


def curriculum_of(arm) -> str:
    """The arm's collection curriculum as its overrides set it (fixed when they do not)."""
    for o in arm.overrides:
        key, _, value = o.partition("=")
        if key.strip() == "collect.curriculum":
            return value.strip()
    return "fixed"


def questions(study: Recipe, data: Results) -> list[tuple[str, dict]]:
    """The study's questions, each a comparison of two finished arms at the final budget: accumulate
    vs retry (the headline), memory vs retry, accumulate vs memory, accumulate+memory vs accumulate,
    each curriculum arm vs the fixed-mix arm of its kind; then every other arm against retry and
    accumulate. A question whose arms are not both there is left out."""
    kinds = _kinds(study)
    first = {}
    for arm in study.study.arms:
        if arm.name in data and curriculum_of(arm) == "fixed":
            first.setdefault(arm.kind, arm.name)
    acc, retry, mem, both = (first.get(k) for k in ("accumulate", "retry", "memory", "accumulate+memory"))
    pairs: list[tuple[str, str | None, str | None]] = [
        (HEADLINE, acc, retry),
        ("Does memory without gradients beat retrying?", mem, retry),
        ("Do gradients beat memory?", acc, mem),
        ("Do gradients and memory add up?", both, acc),
    ]
    for arm in study.study.arms:
        if arm.name in data and curriculum_of(arm) != "fixed":
            rule = curriculum_of(arm)
            pairs.append((f"Does {'an' if rule[:1] in 'aeiou' else 'a'} {rule} curriculum beat the fixed mix "
                          f"({arm.kind})?", arm.name,
                          first.get(arm.kind)))
    asked = {(a, b) for _, a, b in pairs if a and b}
    for name in data:
        if name not in (acc, retry) and kinds.get(name) != "memory" and (name, retry) not in asked:
            pairs.append((f"Does {name} beat retrying?", name, retry))
        if name not in (acc, retry) and (acc, name) not in asked and (name, acc) not in asked:
            pairs.append((f"Does accumulate beat {name}?", acc, name))
    out, seen = [], set()
    for q, a, b in pairs:
        if a and b and a != b and (a, b) not in seen:
            seen.add((a, b))
            c = final_comparison(data, a, b)
            if c:
                out.append((q, {**c, "question": q}))
    return out


def cost_lines(data: Results) -> list[str]:
    """Per arm, mean over seeds: training compute and the prompt tokens the memory adds."""
    lines = ["| arm | final held-out success | interaction h | training (device-hours) | memory tokens per held-out "
             "episode: block / all steps | memory tokens per training episode | memory library (episodes) |",
             "|---|---|---|---|---|---|---|"]
    for arm, by_seed in data.items():
        runs = list(by_seed.values())
        costs = [v.cost for v in runs if v.cost is not None]
        if not costs:
            continue

        def mean(attr: str) -> float | None:
            vals = [getattr(c, attr) for c in costs if getattr(c, attr) is not None]
            return float(np.mean(vals)) if vals else None

        device = "GPU" if any(c.train_device == "gpu" for c in costs) else "CPU"
        train = mean("train_hours")
        block, steps, coll, lib = (mean(a) for a in ("memory_block_tokens", "memory_prompt_tokens",
                                                       "memory_collect_prompt_tokens", "memory_library"))
        lines.append(f"| {arm} | {_pct(np.mean([v.rounds[-1].success_rate for v in runs]))} | "
                     f"{np.mean([v.rounds[-1].hours for v in runs]):.1f} | "
                     + (f"{train:.4f} {device}-h" if train else "none") + " | "
                     + (f"{block:.0f} / {steps:,.0f}" if block is not None else "none") + " | "
                     + (f"{coll:,.0f}" if coll is not None else "none") + " | "
                     + (f"{lib:.0f}" if lib is not None else "none") + " |")
    lines += ["", "Training device-hours: each round's fit wall time x its processes (GPUs on a GPU node). Memory "
              "tokens: the retrieved block goes into the system prompt of every step of an episode; \"all steps\" "
              "counts it once per step, as a stateless API would be billed (the local policy caches it and encodes it "
              "once per episode)."]
    return lines


def final_comparison(data: Mapping[str, Mapping[int, ArmResult | dict]], a: str, b: str) -> dict[str, Any] | None:
    """Held-out success of arm a minus arm b at the final round, pooled over their seeds, with the
    per-seed differences."""
    if a not in data or b not in data:
        return None
    final = {arm: {s: ArmResult.of(result).rounds[-1] for s, result in data[arm].items()} for arm in (a, b)}

    def pooled(arm: str) -> tuple[float, int, float]:
        finals = list(final[arm].values())
        n = sum(f.episodes for f in finals)
        p = sum(f.success_rate * f.episodes for f in finals) / n
        return p, n, float(np.mean([f.hours for f in finals]))

    pa, na, ha = pooled(a)
    pb, nb, hb = pooled(b)
    out = difference_of_proportions(pa, na, pb, nb)
    out.update({"arms": [a, b], "hours": [ha, hb]})
    shared = sorted(set(data[a]) & set(data[b]))
    out["per_seed"] = {str(s): difference_of_proportions(final[a][s].success_rate, final[a][s].episodes,
                                                         final[b][s].success_rate, final[b][s].episodes)
                       for s in shared}
    lo, hi = out["ci95"]
    out["verdict"] = "wins" if lo > 0 else "loses" if hi < 0 else "no_detectable_difference"
    return out


def verdict_text(c: dict[str, Any]) -> str:
    a, b = c["arms"]
    lo, hi = c["ci95"]
    nums = (f"{a} {100 * c['p1']:.1f}% ({c['n1']} episodes) vs {b} {100 * c['p2']:.1f}% ({c['n2']}); "
            f"difference {100 * c['difference']:+.1f} points, 95% CI [{100 * lo:+.1f}, {100 * hi:+.1f}]")
    signs = [v["difference"] for v in c["per_seed"].values()]
    seeds = (f"; per seed: {', '.join(f'{100 * d:+.1f}' for d in signs)} points "
             f"({sum(d > 0 for d in signs)} of {len(signs)} seeds favour {a})") if signs else ""
    if c["verdict"] == "wins":
        head = f"**{a} beats {b}** on held-out success at the final interaction budget"
    elif c["verdict"] == "loses":
        head = f"**{a} loses to {b}** on held-out success at the final interaction budget"
    else:
        head = f"**no detectable difference** between {a} and {b} on held-out success at the final interaction budget"
    return f"{head}: {nums}{seeds}."


def _pct(v: float) -> str:
    return f"{100 * v:.1f}%"


def seed_table(data: Results) -> list[str]:
    """Per arm and round: mean over seeds, [min, max], and every seed's value."""
    lines = ["| arm | round | interaction h (mean) | held-out success: mean [min, max] | per seed |", "|---|---|---|---|---|"]
    for arm, by_seed in data.items():
        n_rounds = min(len(v.rounds) for v in by_seed.values())
        for r in range(n_rounds):
            vals = {s: v.rounds[r] for s, v in sorted(by_seed.items())}
            scores = [row.success_rate for row in vals.values()]
            hours = np.mean([row.hours for row in vals.values()])
            k = vals[next(iter(vals))].k
            label = f"{arm} (best-of-{k})" if k > 1 else arm
            per = ", ".join(f"s{s}: {_pct(row.success_rate)}" for s, row in vals.items())
            lines.append(f"| {label} | {r} | {hours:.1f} | {_pct(np.mean(scores))} [{_pct(min(scores))}, "
                         f"{_pct(max(scores))}] | {per} |")
    return lines


def forgetting_table(data: Results) -> list[str]:
    lines = ["| arm | " + " | ".join(f"round {r}" for r in range(_max_rounds(data))) + " | drop from best to final |",
             "|---|" + "---|" * (_max_rounds(data) + 1)]
    for arm, by_seed in data.items():
        runs = [v.forgetting for v in by_seed.values() if v.forgetting]
        if not runs:
            continue
        n = min(len(f) for f in runs)
        means = [float(np.mean([f[r].success_rate for f in runs])) for r in range(n)]
        cells = [f"{_pct(m)} [{_pct(min(f[r].success_rate for f in runs))}, "
                 f"{_pct(max(f[r].success_rate for f in runs))}]" for r, m in enumerate(means)]
        drop = max(means[1:] or means) - means[-1]
        lines.append(f"| {arm} | " + " | ".join(cells) + f" | {100 * drop:.1f} points |")
    return lines


def _max_rounds(data: Results) -> int:
    return max(len(v.rounds) for by_seed in data.values() for v in by_seed.values())


def budget_lines(check: list[dict], tolerance: float) -> list[str]:
    lines = ["| round | median h | min h | max h | max deviation | within tolerance |", "|---|---|---|---|---|---|"]
    for row in check:
        lines.append(f"| {row['round']} | {row['median_hours']:.2f} | {row['min_hours']:.2f} | {row['max_hours']:.2f} | "
                     f"{100 * row['max_relative_deviation']:.1f}% | {'yes' if row['within_tolerance'] else '**NO**'} |")
    ok = all(r["within_tolerance"] for r in check)
    lines.append("")
    lines.append(f"Every run consumed the same interaction budget within {100 * tolerance:g}% in every round."
                 if ok else f"**Budget check failed**: some run's interaction hours differ by more than "
                 f"{100 * tolerance:g}% from the median (raise `collect.suites[].episodes` so the budget is spent).")
    return lines


def plot_study(data: Results, path: Path, title: str) -> None:
    """Left: held-out success against interaction hours (seed mean line, min-max band, per-seed
    points). Right: success on the earliest training tasks after each round."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 5))
    FigureCanvasAgg(fig)
    ax, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for i, (arm, by_seed) in enumerate(data.items()):
        color = f"C{i % 10}"
        n = min(len(v.rounds) for v in by_seed.values())
        grid = np.array([[v.rounds[r].success_rate for r in range(n)] for v in by_seed.values()])
        hours = np.array([[v.rounds[r].hours for r in range(n)] for v in by_seed.values()]).mean(0)
        ax.plot(hours, grid.mean(0), "-", color=color, lw=2, label=f"{arm} (mean of {len(by_seed)} seeds)")
        ax.fill_between(hours, grid.min(0), grid.max(0), color=color, alpha=0.15, lw=0)
        for v in by_seed.values():
            ax.plot([row.hours for row in v.rounds], [row.success_rate for row in v.rounds], "o",
                    color=color, ms=3, alpha=0.6)
        runs = [v.forgetting for v in by_seed.values() if v.forgetting]
        if runs:
            m = min(len(f) for f in runs)
            fg = np.array([[f[r].success_rate for r in range(m)] for f in runs])
            ax2.plot(range(m), fg.mean(0), "-o", color=color, lw=2, ms=3, label=arm)
            ax2.fill_between(range(m), fg.min(0), fg.max(0), color=color, alpha=0.15, lw=0)
    ax.set_xlabel("cumulative interaction hours")
    ax.set_ylabel("held-out success (retry: best-of-k)")
    ax.set_title(title)
    ax2.set_xlabel("round")
    ax2.set_ylabel("success on round 1's training tasks")
    ax2.set_title("forgetting: the earliest tasks")
    for a in (ax, ax2):
        a.grid(True, alpha=0.3)
        a.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def write_study_report(study: Recipe, data: Results, timings: dict[str, float], missing: list[str]) -> Path:
    from eval.curve_report import write_curve_outputs

    out = study.run_path() / "study"
    out.mkdir(parents=True, exist_ok=True)
    tol = study.study.budget_tolerance
    check = budget_check({f"{arm}-seed{s}": [r.hours for r in v.rounds]
                          for arm, by_seed in data.items() for s, v in by_seed.items()}, tol)
    curve = write_curve_outputs(curve_points(data, study.curve.metric), out / "curve", study.curve,
                                title=f"{study.experiment}: held-out {study.curve.metric} by arm",
                                image_link="curve/curve.png")
    plot_study(data, out / "study.png", f"{study.experiment}: held-out success by arm")
    asked = questions(study, data)
    headline = next((c for q, c in asked if q == HEADLINE), None)
    others = [c for q, c in asked if q != HEADLINE]
    lines = [f"# Experience study: {study.experiment}", ""]
    lines += ["## Verdict", ""]
    lines.append(verdict_text(headline) if headline else
                 "Accumulate vs retry: not available (both arms must have finished; missing: "
                 f"{', '.join(missing) or 'an accumulate or retry arm in study.arms'}).")
    lines += [""] + [f"- {q}: {verdict_text(c)}" for q, c in asked if q != HEADLINE]
    lines += ["", "Intervals: Newcombe's 95% interval of a difference of two proportions, episodes pooled over seeds "
              "(it covers episode sampling; the seed spread below shows run-to-run variation).", ""]
    lines += _design_lines(study, data)
    lines += ["", "## Interaction budget per round", ""] + budget_lines(check, tol)
    lines += ["", "## Cost besides interaction time", ""] + cost_lines(data)
    lines += ["", "## Held-out success per round and seed", "", "![study](study.png)", ""] + seed_table(data)
    lines += ["", "## Forgetting: success on the earliest training tasks", "",
              f"Each checkpoint re-evaluated (pass@1) on the first {study.study.forgetting_episodes} training tasks "
              "of round 1; mean over seeds [min, max].", ""] + forgetting_table(data)
    lines += ["", curve.get("markdown", "").replace("## Improvement curve", "## Fitted curves of all arms")]
    if not curve.get("comparisons"):
        # say why there is no curve comparison instead of leaving the section out silently
        reasons = sorted({str(rec.get("fit", {}).get("reason")) for rec in curve.get("arms", {}).values()
                          if rec.get("fit", {}).get("status") != "ok"})
        lines += ["", "**Comparison of arms** (ScaleRL-style): not possible: fewer than two arms have a fitted "
                  f"curve ({'; '.join(reasons) or 'no fits'}). The verdict above compares final held-out success."]
    lines += _run_lines(study, data, timings, missing)
    report = out / "report.md"
    atomic_write_text(report, "\n".join(lines) + "\n")
    atomic_write_json(out / "study.json", {"budget_check": check, "headline": headline,
                                           "comparisons": others, "timings_s": timings,
                                           "missing": missing, "arms": _without_tasks(data)})
    return report


def _design_lines(study: Recipe, data: Results) -> list[str]:
    kinds = {a.name: a.kind for a in study.study.arms}
    retry = next((n for n in data if kinds.get(n) == "retry"), None)
    ks = ""
    if retry:
        any_seed = next(iter(data[retry].values()))
        ks = f" (here k = {', '.join(str(r.k) for r in any_seed.rounds)} for rounds 0..{len(any_seed.rounds) - 1})"
    return ["## Design", "",
            f"Same base policy, same training tasks (seed order), {study.collect.hours_per_round:g} interaction hours "
            f"per round, {study.train.rounds} rounds, {max(len(v) for v in data.values())} seed(s) per arm.",
            "- accumulate: each round trains on all experience so far, continuing the adapter",
            "- latest: each round trains on the newest round's experience only, continuing the adapter",
            "- reset: each round trains from the base on all experience so far",
            "- memory: no training; the base policy with the k past episodes of its own most similar to the task in its "
            "prompt (BM25 on the task text; successes as worked examples, failures as notes), in collection and "
            "evaluation alike (memory.k, memory.max_tokens)",
            "- accumulate+memory: accumulate's training and memory's retrieval together",
            "- an arm with `collect.curriculum` in its overrides: its kind, collecting at the difficulty its curriculum "
            "picks; the held-out tasks and their difficulty are the same for every arm",
            "- retry: no training; it spends the same budget on training tasks and is scored by best-of-k on the "
            "held-out tasks, k = 1 + round(interaction hours so far / hours of one base pass over the held-out "
            f"suite){ks}: the attempts the same interaction time buys, picked by an oracle. A generous control.",
            "Learning arms are scored with one attempt per held-out task. Retry's best-of-k is estimated from all "
            "n = max k samples per task (unbiased), so its round-0 value averages n attempts where the other arms' "
            "round 0 is one evaluation of the same base policy."]


def _run_lines(study: Recipe, data: Results, timings: dict[str, float], missing: list[str]) -> list[str]:
    lines = ["", "## Runs", "", "| run | directory | wall time (s) |", "|---|---|---|"]
    for arm, by_seed in data.items():
        for s, v in sorted(by_seed.items()):
            label = f"{arm}-seed{s}"
            lines.append(f"| {label} | `{v.run_dir}` | {timings.get(label, 0.0):.0f} |")
    if missing:
        lines += ["", f"Not finished (left out): {', '.join(missing)}"]
    lines += ["", f"Total wall time of the arms: {sum(timings.values()):.0f} s. Each run directory works with "
              "`flywheel curve` and `flywheel compare`."]
    return lines


def _without_tasks(data: Results) -> dict[str, Any]:
    """study.json's "arms": every arm's result without the per-task values."""
    return {arm: {str(s): v.without_tasks() for s, v in by_seed.items()} for arm, by_seed in data.items()}
