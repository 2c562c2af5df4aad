"""Shared set-up of the round tests: agent trajectories with a realistic length spread (random
maze episodes of several difficulties, logged as canonical JSONL) and a small recipe that trains
the tiny model on them without collecting (so a round takes seconds)."""
from __future__ import annotations

from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent


def write_maze_episodes(path: Path, per_difficulty: int = 16, difficulties=(1, 2, 3, 4)) -> Path:
    from eval.rollout import RandomPolicy, run_episodes, write_jsonl
    from eval.suites import get_suite

    suite = get_suite("maze")
    trajs = []
    for d in difficulties:
        trajs += run_episodes(suite, d, suite.train_seeds(per_difficulty, offset=0), RandomPolicy(),
                              batch_size=per_difficulty, rng_seed=d, progress=False)
    write_jsonl(trajs, path)
    return path


def write_recipe(path: Path, run_dir: Path, episodes: Path, **train) -> Path:
    """A recipe whose round 1 trains on `episodes` (a live log, ingested at the start of round 1)."""
    doc = {
        "experiment": "roundtest", "seed": 0, "run_dir": str(run_dir),
        "model": {"name_or_path": "tiny"},
        "collect": {"suites": [], "logs": [str(episodes)]},
        "data": {"success_only": False},
        "train": {"method": "sft", "rounds": 1, "learning_rate": 5e-3, "epochs": 1, "batch_size": 8,
                  "max_length": 512, "save_steps": 2, "lora": {"r": 8, "alpha": 16}, **train},
        "eval": {"suites": [{"name": "maze", "difficulty": 3, "episodes": 4}]},
        "tracking": {"wandb": {"mode": "disabled"}},
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path
