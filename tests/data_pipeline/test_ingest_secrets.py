"""Planted secrets of every kind never reach the store or a built dataset (the test greps bytes,
including the decoded Parquet text, since Parquet pages are compressed)."""
from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq

from data_pipeline import builders
from data_pipeline.redact import KINDS
from data_pipeline.store import ExperienceStore

SECRETS = {
    "openai_key": "sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4zAb7cDe0f",
    "anthropic_key": "sk-ant-api03-Zy9xWv8uTs7rQp6oNm5lKj4iHg3fEd2cBa1-_Zz",
    "aws_key": "AKIAIOSFODNN7EXAMPLQ",
    "github_token": "ghp_16C7e42F292c6912E7710c838347Ae178B4a",
    "github_pat": "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz",
    "slack_token": "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOp",
    "bearer_token": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.sig",
    "private_key": "MIIEowIBAAKCAQEA3Tz2mr7SZiAMfQyuvBjM2Zpqsecretbody",
    "url_password": "hunter2-Sup3rS3cret",
    "email": "jane.doe@example.org",
}
PRIVATE_KEY = f"-----BEGIN RSA PRIVATE KEY-----\n{SECRETS['private_key']}\nAnotherLine==\n-----END RSA PRIVATE KEY-----"


def _episode(i: int) -> dict:
    s = SECRETS
    leak = (f"key {s['openai_key']} and {s['anthropic_key']}\n{s['aws_key']} token={s['github_token']}\t"
            f"pat {s['github_pat']} slack {s['slack_token']}\nAuthorization: Bearer {s['bearer_token']}\n"
            f"db postgres://admin:{s['url_password']}@db.example.com:5432/app mail {s['email']}\n{PRIVATE_KEY}")
    return {"episode_id": f"e{i}", "task_id": f"t{i // 2}", "suite": "s",
            "messages": [{"role": "system", "content": "be helpful"}, {"role": "user", "content": leak},
                         {"role": "assistant", "content": f"I will not print {s['openai_key']}",
                          "tool_calls": [{"name": "shell", "arguments": {"cmd": f"export AWS={s['aws_key']}"}}]},
                         {"role": "tool", "content": f"ok {s['email']}", "name": "shell"},
                         {"role": "assistant", "content": "done"}],
            "outcome": {"success": i % 2 == 0, "score": float(i % 2 == 0)},
            "metadata": {"owner": s["email"], "tools": [{"type": "function", "function": {"name": "shell",
                                                                                       "description": s["slack_token"]}}]}}


def _all_bytes(root: Path) -> bytes:
    chunks = [p.read_bytes() for p in root.rglob("*") if p.is_file()]
    for p in root.rglob("*.parquet"):  # compressed pages: also grep the decoded text
        chunks.append(json.dumps(pq.read_table(p).to_pylist(), default=str).encode())
    return b"\n".join(chunks)


def test_no_secret_survives(tmp_path):
    src = tmp_path / "leaky.jsonl"
    lines = [json.dumps(_episode(i)) for i in range(4)]
    lines.append(json.dumps(_episode(9) | {"task_id": 5}))  # quarantined: its excerpt is redacted too
    src.write_text("\n".join(lines) + "\n")
    store = ExperienceStore(tmp_path / "store")
    s = store.ingest([src])
    assert (s.accepted, s.quarantined) == (4, 1)
    assert set(s.redactions) == set(KINDS), s.redactions
    trajs = store.trajectories()
    out = tmp_path / "datasets"
    for kind, ds in [("sft", builders.build_sft(trajs, success_only=False)), ("kto", builders.build_kto(trajs)),
                     ("dpo", builders.build_dpo(trajs)), ("rl", builders.build_rl(trajs))]:
        assert len(ds) > 0, kind
        ds.save_to_disk(str(out / kind))
    blob = _all_bytes(tmp_path / "store") + _all_bytes(out)
    for kind, secret in SECRETS.items():
        assert secret.encode() not in blob, f"{kind} leaked"
    assert b"[REDACTED:private_key]" in blob and b"[REDACTED:url_password]" in blob
    # redaction keeps the rest of the text and the structure
    user = trajs[0].messages[1].content
    assert "postgres://admin:[REDACTED:url_password]@db.example.com" in user and "Bearer [REDACTED:bearer_token]" in user


def test_no_redact_keeps_text(tmp_path):
    src = tmp_path / "one.jsonl"
    src.write_text(json.dumps(_episode(0)) + "\n")
    store = ExperienceStore(tmp_path / "store")
    s = store.ingest([src], redact=False)
    assert s.redactions == {} and SECRETS["aws_key"] in store.trajectories()[0].messages[1].content
