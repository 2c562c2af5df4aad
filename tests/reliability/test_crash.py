"""Crash tests, the full set: every stage SIGKILLed at >= 20 seeded random moments, rerun, checked
(see harness.py). Prints per stage: kills tried, recoveries verified, records lost.
FLYWHEEL_CRASH_KILLS and FLYWHEEL_CRASH_SEED change the number of kills and the seed."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402

pytestmark = pytest.mark.reliability  # run by make test-reliability

KILLS = int(os.environ.get("FLYWHEEL_CRASH_KILLS", "20"))
SEED = int(os.environ.get("FLYWHEEL_CRASH_SEED", "0"))


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["ingest", "train", "eval", "run"])
def test_stage_survives_sigkill_at_random_points(tmp_path, stage):
    report = harness.run_stage(stage, kills=KILLS, seed=SEED, tmp=tmp_path)
    print(f"\n[crash] {report.line()}", flush=True)
    for f in report.failures:
        print(f"[crash]   FAILED {f}", flush=True)
    assert report.records_lost == 0 and report.records_duplicated == 0
    assert not report.failures, "\n".join(report.failures)
    assert report.recoveries_verified == KILLS
