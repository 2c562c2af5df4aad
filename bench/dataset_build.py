"""Peak memory and time of `flywheel dataset build` over a large store: the streamed build
(data_pipeline/dataset_build.py: the store read a slice at a time, rows written in chunks) against
the old way in the same run (every trajectory loaded with `ExperienceStore.trajectories()`, the
in-memory builder, `save_to_disk`).

    python bench/dataset_build.py                    # a 200,000-line store (bench/load.py's trajectories)
    python bench/dataset_build.py --n 20000 --kind kto
    python bench/dataset_build.py --store DIR        # an existing store

The store is built first (in batches of --per-file lines; not timed). Each way then runs in its own
fresh process, so each one's peak resident set (VmHWM) is its own; `*_rss_mb` is that peak,
`*_rss_over_imports_mb` the peak minus the resident set once the libraries are imported. The last
stdout line is one JSON object: rss_ratio (streamed peak / old peak; below 1 is better),
rss_over_imports_ratio, time_ratio (streamed seconds / old seconds), both ways' figures, rows and
the settings. Both ways must build the same rows (checked: row count and the first and last rows).
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CHILD = r"""
import json, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
way, store_dir, kind, out = sys.argv[2:6]
import datasets, pyarrow
from data_pipeline import builders, dataset_build
from data_pipeline.store import ExperienceStore
def rss_mb(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
base = rss_mb("VmRSS")
t0 = time.time()
if way == "old":
    store = ExperienceStore(store_dir)
    trajs = store.trajectories()
    kw = {"unlabeled": "keep"} if kind == "sft" else {}
    ds = getattr(builders, "build_" + kind)(trajs, heldout=store.heldout, **kw)
    ds.save_to_disk(out)
    rows = len(ds)
else:
    prov = dataset_build.build_dataset_dir(store_dir, kind, out, unlabeled="keep")
    rows = prov["rows"]
seconds = time.time() - t0
peak = rss_mb("VmHWM")  # this process's own peak (ru_maxrss would carry the parent's size over the exec)
d = datasets.load_from_disk(out)
print(json.dumps({"rows": rows, "seconds": seconds, "peak_rss_mb": peak, "imports_rss_mb": base,
                  "first": d[0], "last": d[len(d) - 1]}, default=str))
"""


def build_store(root: Path, n: int, per_file: int) -> None:
    from bench.load import write_file
    from data_pipeline.store import ExperienceStore

    store = ExperienceStore(root / "store")
    for start in range(0, n, per_file):
        src = root / f"part-{start // per_file:04d}.jsonl"
        write_file(src, start, min(per_file, n - start))
        store.ingest([src], fmt="flywheel", redact=False)
        src.unlink()
        print(f"store: {min(start + per_file, n)} of {n} lines", file=sys.stderr, flush=True)


def run_way(way: str, store: Path, kind: str, work: Path) -> dict:
    out = work / f"out-{way}"
    shutil.rmtree(out, ignore_errors=True)
    p = subprocess.run([sys.executable, "-c", CHILD, str(ROOT), way, str(store), kind, str(out)],
                       capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"the {way} build failed:\n{p.stderr[-3000:]}")
    shutil.rmtree(out, ignore_errors=True)
    return json.loads(p.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=200_000, help="lines in the generated store")
    ap.add_argument("--per-file", type=int, default=50_000, help="lines per ingest batch")
    ap.add_argument("--kind", default="sft", choices=["sft", "kto", "rl"], help="dataset kind (sft: --unlabeled keep)")
    ap.add_argument("--store", help="an existing store (default: generate one)")
    ap.add_argument("--dir", help="work folder (default: a temporary one, removed afterwards)")
    a = ap.parse_args(argv)
    work = Path(a.dir) if a.dir else Path(tempfile.mkdtemp(prefix="flywheel-dsbuild-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        t0 = time.time()
        if a.store:
            store = Path(a.store)
        else:
            build_store(work, a.n, a.per_file)
            store = work / "store"
        store_s = time.time() - t0
        old = run_way("old", store, a.kind, work)
        new = run_way("streamed", store, a.kind, work)
        if (old["rows"], old["first"], old["last"]) != (new["rows"], new["first"], new["last"]):
            raise SystemExit("the two ways built different rows")
        result = {
            "rss_ratio": new["peak_rss_mb"] / old["peak_rss_mb"],
            "rss_over_imports_ratio": (new["peak_rss_mb"] - new["imports_rss_mb"])
            / max(1e-9, old["peak_rss_mb"] - old["imports_rss_mb"]),
            "time_ratio": new["seconds"] / old["seconds"],
            "old_rss_mb": round(old["peak_rss_mb"], 1), "streamed_rss_mb": round(new["peak_rss_mb"], 1),
            "old_s": round(old["seconds"], 2), "streamed_s": round(new["seconds"], 2),
            "rows": new["rows"], "kind": a.kind, "lines": a.n if not a.store else None,
            "store_build_s": round(store_s, 1),
        }
        print(f"old: {old['peak_rss_mb']:.0f} MB peak, {old['seconds']:.1f} s; streamed: "
              f"{new['peak_rss_mb']:.0f} MB peak, {new['seconds']:.1f} s ({new['rows']} rows)")
        print(json.dumps(result, sort_keys=True))
    finally:
        if not a.dir:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
