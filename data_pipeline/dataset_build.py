"""A training dataset from an experience store, saved for TRL (`flywheel dataset build`,
trainer/cli/dataset.py): the builders' rows written with their provenance.

The build streams: the store is read batch by batch and row group by row group
(`ExperienceStore.iter_trajectories`), labels are applied chunk by chunk (data_pipeline/labels.py),
and rows go to disk in chunks of `CHUNK_ROWS` through `datasets.Dataset.from_list` (the same
encoding as the in-memory builders) into one Arrow file, which is then saved with `save_to_disk`.
Memory holds one chunk, not the store. DPO pairs trajectories within a task, so `--kind dpo` reads
its trajectories whole (the builders' `build_dpo`)."""
from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path
from typing import Any, Iterable, Iterator

from .errors import IngestError
from .ingest import existing_store

CHUNK_ROWS = 1000  # rows encoded and written at a time

_LABEL_HINT = ("label them: an outcome field in the logs (outcome.success / outcome.score, metadata.success / "
               "metadata.reward, or top-level reward / score / success), a side file (--label-file, label.file) "
               "or your verifier (--label-command, label.command)")


def no_rows_message(kind: str, counts: dict[str, int] | list, root: Path, all_scores: bool = False,
                    min_score: float = 0.0, unlabeled: str = "drop") -> str:
    """Why `dataset build` produced no rows, in numbers, and the way forward: no trajectory has an
    outcome (label them, or keep them), none succeeded (sft), none pairs up (dpo). `counts`: the
    builders' outcome counts {trajectories, labeled, successes, unlabeled} (or the trajectories)."""
    from .builders import outcome_counts

    c = outcome_counts(counts) if isinstance(counts, list) else counts
    head = f"no {kind} rows: {c['trajectories']} usable trajectories in {root} (held-out tasks excluded)"
    if not c["trajectories"] or kind == "rl":
        return f"{head}; nothing written"
    keep = kind == "sft" and unlabeled == "keep"
    if not c["labeled"] and not keep:
        way = ("or build with --unlabeled keep to train on them all (imitated)" if kind == "sft" else
               "or build --kind sft --unlabeled keep to train on them all (imitated; --kind rl needs no outcome)")
        return (f"{head}, {c['unlabeled']} without an outcome (all unlabeled: never used as failures); "
                f"{_LABEL_HINT}, {way}; nothing written")
    head += f", {c['labeled']} with an outcome ({c['successes']} successful, {c['unlabeled']} without an outcome)"
    if kind == "sft" and not all_scores and not c["successes"] and not keep:
        why = "none successful: build with --all-scores to keep failures weighted by score"
        if c["unlabeled"]:
            why += f", or --unlabeled keep to imitate the {c['unlabeled']} without an outcome"
    else:
        why = {"sft": f"none kept has an assistant turn and scores at least --min-score {min_score}",
               "kto": "no labeled trajectory has an assistant turn",
               "dpo": "no task has two labeled trajectories with different scores and the same prompt"}[kind]
    return f"{head}; {why}; nothing written"


def _progress(items: Iterable, total: int, desc: str, progress: bool) -> Iterator:
    if not progress:
        yield from items
        return
    from tqdm.auto import tqdm

    with tqdm(total=total, desc=desc, unit="traj", mininterval=0.5) as bar:
        for x in items:
            bar.update(1)
            yield x


def _write_streamed(rows: Iterable[dict[str, Any]], features: dict[str, Any], path: Path) -> int:
    """`rows` encoded CHUNK_ROWS at a time by Dataset.from_list into one Arrow stream file (the
    format `Dataset.from_file` maps); the number of rows."""
    import pyarrow as pa
    from datasets import Dataset, Features

    feats = Features(features)
    writer, n, chunk = None, 0, []

    def flush() -> None:
        nonlocal writer
        table = Dataset.from_list(chunk, features=feats).data.table
        if writer is None:
            writer = pa.ipc.new_stream(str(path), table.schema)
        writer.write_table(table)
        chunk.clear()

    try:
        for row in rows:
            chunk.append(row)
            n += 1
            if len(chunk) >= CHUNK_ROWS:
                flush()
        if chunk:
            flush()
    finally:
        if writer is not None:
            writer.close()
    return n


def build_dataset_dir(store_dir: str | Path, kind: str, out: str | Path, batches: list[str] | None = None,
                      all_scores: bool = False, min_score: float = 0.0, unlabeled: str = "drop",
                      label_file: str | None = None, label_command: str | None = None,
                      label_timeout_s: float = 60.0, label_workers: int = 4, label_workdir: str | None = None,
                      progress: bool = False) -> dict:
    """Build a `kind` (sft / kto / dpo / rl) dataset from the store's `batches` (default: all),
    labels applied (the log's own outcome, `label_file`, `label_command`; data_pipeline/labels.py),
    and save it to `out` (datasets.save_to_disk) with provenance.json; returns the provenance (its
    `labels` key: the label counts). Streams the store (see the module doc)."""
    from datasets import Dataset

    from . import builders
    from .labels import LabelCounts, LabelSettings, keeps_unlabeled, label_stream, read_label_file

    root = Path(store_dir)
    store = existing_store(root)
    keeps_unlabeled(kind, unlabeled)  # a bad value fails before anything is read
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise IngestError(f"output folder {out} exists and is not empty")
    spec = store.heldout
    label = LabelSettings(file=label_file, command=label_command, timeout_s=label_timeout_s,
                          workers=label_workers, workdir=label_workdir)
    if label.file:
        read_label_file(label.file)  # a bad side file fails before the store is read
    total = sum(b.count for b in store.batches() if batches is None or b.batch_id in set(batches))
    counts = LabelCounts()
    trajs = _progress(store.iter_trajectories(batches), total, f"dataset build {kind}", progress)
    # labels only label here: the builders leave out what their kind does not use, and count it
    labelled = label_stream(trajs, label, root, progress, unlabeled, kind, counts, filter_unlabeled=False)
    if kind == "dpo":  # pairs within a task: read whole
        whole = list(labelled)
        ds, seen = builders.build_dpo(whole, heldout=spec), builders.outcome_counts(whole)
        if len(ds) == 0:
            raise IngestError(no_rows_message(kind, seen, root, all_scores, min_score, unlabeled) + _label_note(counts))
        _save(ds, out, counts)
        return _provenance(out)
    stats = builders.BuildStats()
    if kind == "sft":
        rows = builders.sft_rows(labelled, stats, not all_scores, min_score, unlabeled, spec)
        features = builders.sft_features(not all_scores)
    else:
        rows = getattr(builders, f"{kind}_rows")(labelled, stats, spec)
        features = getattr(builders, f"{kind.upper()}_FEATURES")
    tmp = out.parent / f".{out.name}.build-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    try:
        n = _write_streamed(rows, features, tmp / "data.arrow")
        if not n:  # datasets cannot reload an empty save, and a trainer cannot use one
            raise IngestError(no_rows_message(kind, stats.seen, root, all_scores, min_score, unlabeled) +
                              _label_note(counts))
        ds = Dataset.from_file(str(tmp / "data.arrow"))
        if not stats.any_tools:
            ds = ds.remove_columns("tools")
        extra = ({"unlabeled_dropped": stats.seen["unlabeled"]} if kind == "kto" else
                 builders.sft_extra(stats, not all_scores, min_score, unlabeled) if kind == "sft" else {})
        ds.info.description = json.dumps(stats.provenance(kind, n, spec, **extra), sort_keys=True)
        _save(ds, out, counts)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return _provenance(out)


def _label_note(counts) -> str:
    if counts.quarantined:
        return (f" ({counts.quarantined} label.command answers were unusable: see the store's "
                f"labels/quarantine.jsonl)")
    return ""


def _save(ds, out: Path, counts) -> None:
    from . import builders

    prov = builders.provenance(ds)
    prov["labels"] = counts.to_dict()
    ds.info.description = json.dumps(prov, sort_keys=True)
    ds.save_to_disk(str(out))
    (out / "provenance.json").write_text(json.dumps(prov, indent=2, sort_keys=True))


def _provenance(out: Path) -> dict:
    return json.loads((out / "provenance.json").read_text())
