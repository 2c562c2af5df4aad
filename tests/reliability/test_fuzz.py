"""Fuzzing, the full set: many mutated samples per ingest adapter and many broken recipes."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

sys.path.insert(0, str(Path(__file__).resolve().parent))

import fuzzing  # noqa: E402

pytestmark = pytest.mark.reliability  # run by make test-reliability

SAMPLES = fuzzing.sample_files()
MANY = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), database=None)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["auto"] + fuzzing.adapter_names())
@MANY
@given(case=fuzzing.adapter_input(SAMPLES))
def test_adapter_survives_fuzzed_input(tmp_path_factory, fmt, case):
    fuzzing.check_ingest(tmp_path_factory.mktemp("fz"), *case, fmt)


@pytest.mark.slow
@settings(max_examples=600, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(text=fuzzing.recipe_text())
def test_recipe_loader_survives_fuzzed_yaml(tmp_path_factory, text):
    fuzzing.check_recipe(tmp_path_factory.mktemp("rc"), text)
