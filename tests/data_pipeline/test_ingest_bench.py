"""bench/ingest.py runs end to end on a small N and ends with its JSON result line."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from tests.paths import REPO

ROOT = REPO


def test_bench_quick_run():
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "ingest.py"), "--n", "400", "--incremental", "50",
                          "--tries", "1"], capture_output=True, text=True, timeout=120, check=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    assert {"trajectories_per_s", "ratio_to_baseline", "incremental_ratio"} <= set(result)
    assert result["n"] == 400 and result["trajectories_per_s"] > 0
