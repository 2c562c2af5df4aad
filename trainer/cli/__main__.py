"""`python -m trainer.cli COMMAND ...`: the `flywheel` command without its console script (Slurm
jobs and torchrun children run it this way)."""
import sys

from trainer.cli import main

sys.exit(main())
