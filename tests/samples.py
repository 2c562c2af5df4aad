"""Where the shared real trajectory samples live: $FLYWHEEL_SAMPLES, else `../shared/data/trajectories`
beside the checkout (the workspace layout), else /work/shared/data/trajectories."""
import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def shared_samples() -> Path:
    candidates = [os.environ.get("FLYWHEEL_SAMPLES"), REPO.parent / "shared" / "data" / "trajectories",
                  "/work/shared/data/trajectories"]
    for c in candidates:
        if c and Path(c).is_dir():
            return Path(c)
    return REPO.parent / "shared" / "data" / "trajectories"
