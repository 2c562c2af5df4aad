"""Command-line entry points of eval/ (`flywheel eval`, `flywheel curve`, ...). Each is a function
`NAME_main(argv) -> int` that trainer/cli.py dispatches to; the logic lives next to the code it drives."""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

from eval.config import EvalConfig
from eval.errors import EvalError, read_yaml_mapping
from eval.models import LoadOptions
from eval.records import EvalSummary


# ---------------------------------------------------------------------------------------------
# flywheel curve (issue 6): the fit, outputs and argument parsing live in eval/curve_report.py.

def curve_main(argv: list[str]) -> int:
    """flywheel curve RUN_DIR... [--x hours|gpu_hours|tokens|round] [--form edgebench|scalerl] [--json]
    flywheel curve --points FILE.csv"""
    from eval.curve_report import curve_command

    return curve_command(argv)


# ---------------------------------------------------------------------------------------------
# flywheel eval (issue 5): one checkpoint on the held-out suites, whole or as shards.
#
# eval/ never imports trainer/ (DESIGN.md), so the recipe is read here with a small reader of its
# own: the file's `base:` chain is merged (mappings key by key, lists replaced whole, as the trainer
# does), then `eval.*` / `model.*` overrides, and only the `eval` section (validated by EvalConfig)
# and `model.dtype` are used. A run directory's recipe.resolved.yaml is self-contained and reads the
# same way. Overrides of other sections cannot change an evaluation and are accepted unchecked, so
# a job can pass the experiment's whole override list.

RESOLVED_META_KEYS = ("recipe_hash", "code_version", "sources", "history")


def _merge(base: dict, top: dict) -> dict:
    out = dict(base)
    for k, v in top.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _recipe_chain(path: Path, seen: tuple = ()) -> dict:
    if path.resolve() in seen:
        raise EvalError(f"{path}: cycle of base recipes")
    data = read_yaml_mapping(path, EvalError, "recipe", "experiment:, model:, eval:, ...")
    for key in RESOLVED_META_KEYS:
        data.pop(key, None)
    base = data.pop("base", None)
    if base is None:
        return data
    if not (path.parent / str(base)).is_file():
        raise EvalError(f"{path}: key 'base': base recipe '{base}' does not exist (looked for {path.parent / str(base)})")
    return _merge(_recipe_chain(path.parent / str(base), (*seen, path.resolve())), data)


def _apply_override(data: dict, text: str) -> None:
    import yaml

    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise EvalError(f"override '{text}': expected key.sub=value")
    parts: list[Any] = [int(p) if p.isdigit() else p for p in key.strip().split(".")]
    if parts[0] not in ("eval", "model"):
        return
    node: Any = data
    for p, nxt in zip(parts[:-1], parts[1:]):
        if isinstance(node, list) and isinstance(p, int) and p < len(node):
            node = node[p]
        elif isinstance(node, dict):
            node = node.setdefault(p, [] if isinstance(nxt, int) else {})
        else:
            raise EvalError(f"override '{text}': no key '{p}' there")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as e:
        raise EvalError(f"override '{text}': value is not YAML: {e}") from None
    last = parts[-1]
    if isinstance(node, list) and isinstance(last, int) and last <= len(node):
        node[last:last + 1] = [value]
    elif isinstance(node, dict):
        node[last] = value
    else:
        raise EvalError(f"override '{text}': no key '{last}' there")


def read_eval_recipe(path: str | Path, overrides: list[str] = ()) -> tuple[EvalConfig, LoadOptions, str]:
    """(EvalConfig, how to load the model, experiment name) of a recipe file or a run's
    recipe.resolved.yaml."""
    from pydantic import ValidationError

    path = Path(path)
    if path.is_dir() and (path / "recipe.resolved.yaml").is_file():
        path = path / "recipe.resolved.yaml"
    if not path.is_file():
        raise EvalError(f"{path}: recipe file not found")
    data = _recipe_chain(path)
    for text in overrides:
        _apply_override(data, text)
    try:
        cfg = EvalConfig.model_validate(data.get("eval") or {})
    except ValidationError as e:
        err = e.errors()[0]
        key = ".".join(str(p) for p in ("eval", *err["loc"]))
        raise EvalError(f"{path}: key '{key}': {err['msg']}") from None
    model = data.get("model") or {}
    template = model.get("chat_template")
    if template and not Path(template).expanduser().is_absolute():
        template = str(path.parent / template)  # relative to the recipe, as trainer/recipe.py resolves it
    load = LoadOptions(dtype=str(model.get("dtype", "float32")),
                       attn_implementation=str(model.get("attn_implementation", "sdpa")),
                       trust_remote_code=bool(model.get("trust_remote_code", False)), chat_template=template)
    return cfg, load, str(data.get("experiment", path.stem))


def resolve_checkpoint(directory: str | Path) -> tuple[Path, Path | None]:
    """(base model folder, adapter folder or None) of a round checkpoint dir (manifest.json), a
    plain model folder (config.json) or a bare LoRA adapter folder (adapter_config.json)."""
    from eval.records import CheckpointManifest

    d = Path(directory)
    if (d / CheckpointManifest.FILE).is_file():
        try:
            manifest = CheckpointManifest.load(d / CheckpointManifest.FILE)
            if manifest.base_model is None:
                raise KeyError("base_model")
            base, adapter = Path(manifest.base_model), manifest.adapter
        except (ValueError, KeyError, TypeError) as e:
            raise EvalError(f"{d / CheckpointManifest.FILE}: not a checkpoint manifest ({e!r}): "
                            "needs base_model and adapter") from None
        # base_model is written relative to where the run was started; the run root holds it too
        for candidate in (base, d.parent.parent / base.name):
            if (candidate / "config.json").is_file():
                return candidate, (d / adapter) if adapter else None
        raise EvalError(f"{d / CheckpointManifest.FILE}: base_model {str(base)!r}: no model folder there")
    if (d / "adapter_config.json").is_file():
        base = json.loads((d / "adapter_config.json").read_text()).get("base_model_name_or_path")
        if not base or not (Path(base) / "config.json").is_file():
            raise EvalError(f"{d / 'adapter_config.json'}: base_model_name_or_path {base!r} is not a local model folder")
        return Path(base), d
    if (d / "config.json").is_file():
        return d, None
    raise EvalError(f"{d}: not a checkpoint: expected manifest.json (a round), config.json (a model) "
                    "or adapter_config.json (an adapter)")


def _shard_arg(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"(\d+)/(\d+)", text.strip())
    if not m or not int(m.group(1)) < int(m.group(2)):
        raise EvalError(f"--shard {text}: expected I/N with 0 <= I < N (e.g. 0/4)")
    return int(m.group(1)), int(m.group(2))


def _select_suites(cfg: EvalConfig, names: list[str]) -> EvalConfig:
    """Only the named suites: the recipe's settings when it lists them, else the suite's defaults."""
    from eval.config import SuiteConfig
    from eval.external import is_external_suite
    from eval.suites import SUITES

    picked = []
    for name in names:
        mine = [s for s in cfg.suites if s.name == name]
        if not mine and name not in SUITES and not is_external_suite(name):
            raise EvalError(f"--suite {name}: not in the recipe and not a built-in suite "
                            f"({', '.join(sorted(SUITES))}) or an external suite .yaml")
        picked += mine or [SuiteConfig(name=name, difficulty=SUITES[name].default_difficulty if name in SUITES else 1)]
    return cfg.model_copy(update={"suites": picked})


def _print_summary(summary: EvalSummary, out: Path, as_json: bool) -> None:
    if as_json:
        print(json.dumps(summary.to_dict(), sort_keys=True))
        return
    for name, s in summary.suites.items():
        lo, hi = s.ci95
        passes = " ".join(f"pass@{j}={v:.3f}" for j, v in s.pass_at_k.items())
        print(f"{name}: success {s.success_rate:.3f} [{lo:.3f}, {hi:.3f}] mean score {s.mean_score:.3f} "
              f"{passes} on {s.episodes} episodes ({s.tasks} tasks)")
    print(f"results: {out}")


def eval_main(argv: list[str]) -> int:
    """flywheel eval RECIPE --checkpoint DIR [--suite NAME] [--shard I/N] [--merge-shards N] [--json] [overrides]"""
    ap = argparse.ArgumentParser(prog="flywheel eval", description="Evaluate a checkpoint on held-out suites. "
                                 "Results go to DIR/eval/ (summary.json, results.jsonl, episodes.jsonl).")
    ap.add_argument("recipe", help="recipe .yaml, a run's recipe.resolved.yaml, or the run directory")
    ap.add_argument("overrides", nargs="*", help="eval.key=value (or model.dtype=...) overrides")
    ap.add_argument("--checkpoint", required=True, help="round checkpoint dir (rounds/round-XXXX) or model folder")
    ap.add_argument("--suite", action="append", default=[], help="evaluate only this suite (repeatable); "
                    "results then go to DIR/eval-NAME/ so the full evaluation stays")
    ap.add_argument("--shard", type=_shard_arg, default=None, metavar="I/N",
                    help="evaluate tasks I, I+N, ...; writes DIR/eval/shards/I-of-N.json; merges when all N exist")
    ap.add_argument("--merge-shards", type=int, default=None, metavar="N", help="only merge N finished shards")
    ap.add_argument("--endpoint", default=None, help="OpenAI-compatible base URL for external suites' {endpoint} "
                    "(default: serve the checkpoint in-process while they run)")
    ap.add_argument("--out", type=Path, default=None, help="results folder (default DIR/eval)")
    ap.add_argument("--json", action="store_true", help="print the summary as one JSON line")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    args = ap.parse_intermixed_args(argv)
    from eval.evaluator import evaluate, evaluate_shard, merge_shards, missing_shards

    cfg, load, experiment = read_eval_recipe(args.recipe, args.overrides)
    if args.suite:
        cfg = _select_suites(cfg, args.suite)
    ckpt = Path(args.checkpoint)
    out = args.out or ckpt / ("eval" if not args.suite else "eval-" + "+".join(Path(s).stem for s in args.suite))
    if args.merge_shards is not None:
        _print_summary(merge_shards(out, args.merge_shards), out, args.json)
        return 0
    base, adapter = resolve_checkpoint(ckpt)
    policy = _policy(cfg, base, adapter, load, f"{experiment}/{ckpt.resolve().name}")
    label = str(adapter or base)
    if args.shard is None:
        _print_summary(evaluate(policy, cfg, out, checkpoint=label, progress=not args.quiet, endpoint=args.endpoint),
                       out, args.json)
        return 0
    path = evaluate_shard(policy, cfg, out, args.shard, checkpoint=label, progress=not args.quiet, endpoint=args.endpoint)
    if missing_shards(out, args.shard[1]):
        print(json.dumps({"shard": list(args.shard), "result": str(path), "merged": False}) if args.json
              else f"shard {args.shard[0]}/{args.shard[1]}: {path}")
        return 0
    _print_summary(merge_shards(out, args.shard[1]), out, args.json)
    return 0


def _policy(cfg: EvalConfig, base: Path, adapter: Path | None, load: LoadOptions, name: str):
    from eval.policy import policy_for

    try:
        return policy_for((base, adapter), cfg.policy, load, name)
    except (OSError, ValueError) as e:
        raise EvalError(f"cannot load checkpoint {adapter or base}: {e}") from None
