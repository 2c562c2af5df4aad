"""Where things are, for tests in any subfolder of tests/."""
from pathlib import Path

TESTS = Path(__file__).resolve().parent  # tests/
REPO = TESTS.parent  # the repository root
