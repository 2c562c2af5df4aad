"""flywheel's ground floor: the canonical trajectory schema, ingest adapters, the experience store
and the dataset builders. Imports neither `trainer` nor `eval`."""
