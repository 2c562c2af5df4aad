"""flywheel's evaluation side: task environments, held-out suites, the evaluator, the curve fit and
reports. May use `data_pipeline`; never imports `trainer` (checkpoints load through transformers/peft)."""
