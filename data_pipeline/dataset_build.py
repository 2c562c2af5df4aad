"""A training dataset from an experience store, saved for TRL (`flywheel dataset build`,
trainer/cli/dataset.py): the builders' rows written with their provenance."""
from __future__ import annotations

import json
from pathlib import Path

from .errors import IngestError
from .ingest import existing_store

_LABEL_HINT = ("label them (an outcome field: outcome.success / outcome.score, or metadata.success / "
               "metadata.reward)")


def no_rows_message(kind: str, trajs: list, root: Path, all_scores: bool = False, min_score: float = 0.0,
                    unlabeled: str = "skip") -> str:
    """Why `dataset build` produced no rows, and the way forward: no trajectory has an outcome
    (label them, or imitate them), none succeeded (sft), none pairs up (dpo)."""
    from .builders import outcome_counts

    c = outcome_counts(trajs)
    head = f"no {kind} rows: {c['trajectories']} usable trajectories in {root} (held-out tasks excluded)"
    if not c["trajectories"] or kind == "rl":
        return f"{head}; nothing written"
    imitate = kind == "sft" and unlabeled == "imitate"
    if not c["labeled"] and not imitate:
        way = ("or build with --unlabeled imitate to imitate them all" if kind == "sft" else
               "or build --kind sft --unlabeled imitate to imitate them all (--kind rl needs no outcome)")
        return f"{head}, 0 with an outcome (all unlabeled); {_LABEL_HINT}, {way}; nothing written"
    head += f", {c['labeled']} with an outcome ({c['successes']} successful, {c['unlabeled']} unlabeled)"
    if kind == "sft" and not all_scores and not c["successes"] and not imitate:
        why = "none successful: build with --all-scores to keep failures weighted by score"
    else:
        why = {"sft": f"none kept has an assistant turn and scores at least --min-score {min_score}",
               "kto": "no labeled trajectory has an assistant turn",
               "dpo": "no task has two labeled trajectories with different scores and the same prompt"}[kind]
    return f"{head}; {why}; nothing written"


def build_dataset_dir(store_dir: str | Path, kind: str, out: str | Path, batches: list[str] | None = None,
                      all_scores: bool = False, min_score: float = 0.0, unlabeled: str = "skip") -> dict:
    """Build a `kind` (sft / kto / dpo / rl) dataset from the store's `batches` (default: all) and
    save it to `out` (datasets.save_to_disk) with provenance.json; returns the provenance."""
    from . import builders

    root = Path(store_dir)
    store = existing_store(root)
    trajs = store.trajectories(batches)
    spec = store.heldout
    if kind == "sft":
        ds = builders.build_sft(trajs, success_only=not all_scores, min_score=min_score, heldout=spec,
                                unlabeled=unlabeled)
    else:
        ds = getattr(builders, f"build_{kind}")(trajs, heldout=spec)
    if len(ds) == 0:  # datasets cannot reload an empty save, and a trainer cannot use one
        raise IngestError(no_rows_message(kind, trajs, root, all_scores, min_score, unlabeled))
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise IngestError(f"output folder {out} exists and is not empty")
    ds.save_to_disk(str(out))
    prov = builders.provenance(ds)
    (out / "provenance.json").write_text(json.dumps(prov, indent=2, sort_keys=True))
    return prov
