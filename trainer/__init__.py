"""flywheel's top floor: training rounds (TRL + PEFT), the local loop, the CLI and Slurm submission."""
