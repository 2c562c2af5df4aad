"""`flywheel model import`: what a user gets for a file that is not a usable GGUF model."""
from __future__ import annotations

from trainer.cli import main as flywheel


def test_missing_file_is_one_line(tmp_path, capsys):
    assert flywheel(["model", "import", str(tmp_path / "nope.gguf"), "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert "nope.gguf: no such GGUF file" in err and "Traceback" not in err
    assert not (tmp_path / "m").exists()


def test_not_a_gguf_file_names_the_file(tmp_path, capsys):
    bad = tmp_path / "model.gguf"
    bad.write_bytes(b"this is not a gguf file at all" * 10)
    assert flywheel(["model", "import", str(bad), "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert f"{bad}: cannot import this GGUF model" in err and "Traceback" not in err
    assert not (tmp_path / "m").exists()


def test_existing_folder_is_kept(tmp_path, capsys):
    """A rerun (make real-model twice) does not rebuild a folder that already holds a model."""
    from trainer.tiny import materialize_tiny

    out = materialize_tiny(tmp_path / "m")
    before = (out / "model.safetensors").stat().st_mtime_ns
    fake = tmp_path / "x.gguf"
    fake.write_bytes(b"GGUF")
    assert flywheel(["model", "import", str(fake), "--out", str(out)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == str(out.resolve())  # the last line: the folder
    assert (out / "model.safetensors").stat().st_mtime_ns == before
