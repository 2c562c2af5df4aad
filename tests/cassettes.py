"""VCR cassettes (vcrpy / pytest-recording YAML) of HTTP calls an OpenAI Agents SDK run made to the
OpenAI API -> the files such a user has: the traces ingest payloads and the Responses.

- `POST .../v1/traces/ingest`: the request body is the SDK exporter's `{"data": [...]}` payload,
  written unchanged as one line of `<stem>.ingest.jsonl`.
- `POST .../v1/responses`: the Response object (the response body: JSON, possibly gzip-encoded and
  stored as `!!binary`; or a server-sent event stream, whose last `response.completed` /
  `response.incomplete` / `response.failed` event carries the whole Response) with the request
  body's `input` added as `input`, one per line of `<stem>.responses.jsonl` — the shape the
  openai-agents adapter joins to the traces' response spans.

Run: `python -m tests.cassettes OUT_DIR CASSETTE.yaml...`."""
from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path
from typing import Any

import yaml

_FINAL = ("response.completed", "response.incomplete", "response.failed")


def interactions(path: Path) -> list[dict[str, Any]]:
    return yaml.safe_load(Path(path).read_bytes())["interactions"]


def body_text(body: Any) -> str:
    """A recorded body as text: a string, bytes (gzip when so encoded), or vcrpy's {"string": ...}."""
    if isinstance(body, dict):
        body = body.get("string")
    if body is None:
        return ""
    if isinstance(body, bytes):
        if body[:2] == b"\x1f\x8b":
            body = gzip.decompress(body)
        return body.decode("utf-8")
    return body


def response_object(text: str) -> dict[str, Any]:
    """A /v1/responses answer: the JSON body, or the final event's response of an event stream."""
    if text.lstrip().startswith(("event:", "data:")):
        events = [json.loads(line[5:]) for line in text.splitlines() if line.startswith("data:")
                  and line[5:].strip() not in ("", "[DONE]")]
        final = [e for e in events if e.get("type") in _FINAL]
        if not final:
            raise ValueError("an event stream without a final response event")
        return final[-1]["response"]
    return json.loads(text)


def extract(cassettes: list[Path], out_dir: Path, stem: str) -> tuple[Path, Path, dict[str, int]]:
    """Write `<stem>.ingest.jsonl` and `<stem>.responses.jsonl` under out_dir from the cassettes (in
    the order given); returns both paths and counts."""
    out_dir.mkdir(parents=True, exist_ok=True)
    payloads: list[str] = []
    responses: list[str] = []
    for c in cassettes:
        for it in interactions(c):
            req, uri = it["request"], it["request"]["uri"]
            if req["method"] != "POST":
                continue
            if uri.endswith("/v1/traces/ingest"):
                body = body_text(req["body"])
                assert "\n" not in body and isinstance(json.loads(body).get("data"), list), c
                payloads.append(body)  # unchanged: the exporter's payload
            elif uri.endswith("/v1/responses"):
                sent = json.loads(body_text(req["body"]))
                resp = response_object(body_text(it["response"]["body"]))
                assert resp.get("object") == "response", c
                responses.append(json.dumps({**resp, "input": sent["input"]}, ensure_ascii=False))
    ingest, resp_file = out_dir / f"{stem}.ingest.jsonl", out_dir / f"{stem}.responses.jsonl"
    ingest.write_text("".join(p + "\n" for p in payloads), encoding="utf-8")
    resp_file.write_text("".join(r + "\n" for r in responses), encoding="utf-8")
    return ingest, resp_file, {"payloads": len(payloads), "responses": len(responses)}


if __name__ == "__main__":
    out = Path(sys.argv[1])
    print(extract([Path(a) for a in sys.argv[2:]], out, "cassettes"))
