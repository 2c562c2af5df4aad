"""Fuzzing inputs for the ingest adapters and the recipe loader (hypothesis strategies + the checks).

Adapters get random bytes and mutated real samples (every small sample under
/work/shared/data/trajectories, tests/data and tests/fixtures/samples): a byte-level mutation (flip,
cut, splice) or a JSON-level one (one value somewhere in the document replaced by a random one of
another type). The promise: `ExperienceStore.ingest` on the file, with its adapter named or
auto-detected, either returns a summary whose counts add up or raises `IngestError`; nothing else
escapes.

The recipe loader gets YAML-ish text built from the shipped recipes' lines, mutated, and random
text: `load_recipe` either returns a Recipe or raises `RecipeError`.
"""
from __future__ import annotations

import json
from pathlib import Path

from hypothesis import strategies as st
from tests.samples import shared_samples

REPO = Path(__file__).resolve().parents[2]
SAMPLE_ROOTS = [shared_samples(), REPO / "tests" / "data", REPO / "tests" / "fixtures" / "samples"]
SAMPLE_SUFFIXES = (".json", ".jsonl", ".traj", ".eval", ".yaml")
MAX_SAMPLE_BYTES = 200_000


def sample_files() -> list[Path]:
    out = []
    for root in SAMPLE_ROOTS:
        if root.is_dir():
            out += [p for p in sorted(root.rglob("*")) if p.is_file() and p.suffix in SAMPLE_SUFFIXES
                    and p.stat().st_size <= MAX_SAMPLE_BYTES]
    return out


def adapter_names() -> list[str]:
    from data_pipeline.adapters import formats

    return list(formats())


# ---- JSON-level mutation -------------------------------------------------------------------------
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12)


def _paths(doc, prefix=()):
    """Every location in a JSON document (tuples of keys / indices)."""
    yield prefix
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc[:50]):
            yield from _paths(v, prefix + (i,))


def _replace(doc, path, value):
    if not path:
        return value
    parent = doc
    for k in path[:-1]:
        parent = parent[k]
    parent[path[-1]] = value
    return doc


@st.composite
def mutated_json(draw, text: str) -> bytes:
    """One JSON document (or JSONL line set) with a few values replaced or removed."""
    lines = [text] if not text.lstrip().startswith("{") or "\n{" not in text else text.splitlines()[:5]
    out = []
    for line in lines:
        try:
            doc = json.loads(line)
        except ValueError:
            out.append(line)
            continue
        for _ in range(draw(st.integers(1, 3))):
            paths = list(_paths(doc))
            path = draw(st.sampled_from(paths))
            if path and draw(st.booleans()) and isinstance(_parent(doc, path), dict):
                del _parent(doc, path)[path[-1]]  # a missing field
            else:
                doc = _replace(doc, path, draw(json_values))
        out.append(json.dumps(doc))
    return "\n".join(out).encode()


def _parent(doc, path):
    for k in path[:-1]:
        doc = doc[k]
    return doc


@st.composite
def mutated_bytes(draw, data: bytes) -> bytes:
    kind = draw(st.sampled_from(["flip", "cut", "splice"]))
    if not data:
        return draw(st.binary(max_size=200))
    i = draw(st.integers(0, len(data) - 1))
    if kind == "flip":
        return data[:i] + bytes([data[i] ^ draw(st.integers(1, 255))]) + data[i + 1:]
    if kind == "cut":
        return data[:i]
    return data[:i] + draw(st.binary(min_size=1, max_size=64)) + data[i:]


@st.composite
def adapter_input(draw, samples: list[Path]):
    """(file suffix, bytes) from one sample, mutated; or random bytes."""
    choice = draw(st.sampled_from(["random"] + ["json", "bytes"] * 3)) if samples else "random"
    if choice == "random":
        return draw(st.sampled_from([".json", ".jsonl", ".traj", ".eval"])), draw(st.binary(max_size=2000))
    p = draw(st.sampled_from(samples))
    data = p.read_bytes()
    if choice == "json" and p.suffix != ".eval":
        return p.suffix, draw(mutated_json(data.decode("utf-8", "replace")))
    return p.suffix, draw(mutated_bytes(data))


def check_ingest(tmp: Path, suffix: str, data: bytes, fmt: str) -> None:
    """Ingest one fuzzed file; only IngestError may escape and the counts must add up."""
    from data_pipeline.errors import IngestError
    from data_pipeline.store import ExperienceStore

    f = tmp / f"input{suffix}"
    f.write_bytes(data)
    try:
        s = ExperienceStore(tmp / "store").ingest([f], fmt=fmt)
    except IngestError as e:
        assert str(e), "an IngestError must say what is wrong"
        return
    assert s.read == s.accepted + s.duplicates + s.quarantined


# ---- recipes -------------------------------------------------------------------------------------
def recipe_lines() -> list[str]:
    lines = []
    for p in sorted((REPO / "recipes").glob("*.yaml")):
        lines += [ln for ln in p.read_text().splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    return lines or ["experiment: x", "model:", "  name_or_path: tiny"]


yaml_noise = st.sampled_from([": ", "- ", "  ", "\t", "{", "}", "[", "]", "!!python/object:os.system", "&a", "*a",
                              "<<: *a", "defaults: ", "~", "1e999", "-1", "0x1F", "'", '"', "\n", "...", "---",
                              "base: ../recipes/quickstart.yaml", "yes", "null", "%", "\x00", "é"])


@st.composite
def recipe_text(draw) -> str:
    lines = recipe_lines()
    picked = draw(st.lists(st.sampled_from(lines), min_size=0, max_size=25))
    out = []
    for ln in picked:
        action = draw(st.sampled_from(["keep", "keep", "noise", "cut", "indent"]))
        if action == "noise":
            i = draw(st.integers(0, len(ln)))
            ln = ln[:i] + draw(yaml_noise) + ln[i:]
        elif action == "cut":
            ln = ln[:draw(st.integers(0, len(ln)))]
        elif action == "indent":
            ln = " " * draw(st.integers(0, 6)) + ln.lstrip()
        out.append(ln)
    if draw(st.booleans()):
        out.append(draw(st.text(max_size=60)))
    return "\n".join(out) + "\n"


def check_recipe(tmp: Path, text: str) -> None:
    from trainer.recipe import RecipeError, load_recipe

    f = tmp / "fuzz.yaml"
    f.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        load_recipe(f)
    except RecipeError as e:
        assert str(e), "a RecipeError must say what is wrong"
