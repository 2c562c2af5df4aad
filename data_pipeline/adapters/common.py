"""Helpers shared by the adapters: reading whole-file JSON (gzip too), mapping one record safely,
flattening content parts, parsing timestamps, normalising tool calls."""
from __future__ import annotations

import gzip
import hashlib
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

from . import HEAD_BYTES, Record, bad, parse_json_bytes, window_lines, window_of


def read_bytes(path: Path) -> bytes:
    """The file's bytes, gunzipped; within a live window (data_pipeline/live.py) only bytes [start, end)."""
    w = window_of(path)
    if w is not None:
        return b"".join(raw for _, raw in window_lines(path, w))
    with open(path, "rb") as f:
        raw = f.read()
    return gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw


def head_text(path: Path, head: bytes) -> str:
    """The first bytes as text (gunzipped when needed) for format detection."""
    if head[:2] == b"\x1f\x8b":
        try:
            with gzip.open(path, "rb") as f:
                head = f.read(HEAD_BYTES)
        except (OSError, EOFError):
            return ""
    return head.decode("utf-8", "replace")


def load_document(path: Path) -> Any:
    """The file as one JSON document, or a Record saying why it cannot be read."""
    try:
        raw = read_bytes(path)
    except (OSError, EOFError) as e:
        return bad("file", "<file>", f"cannot read: {e}")
    return parse_json_bytes("file", raw)


def jsonl_objects(path: Path) -> Iterator[tuple[str, Any]]:
    """(locator, object or Record) per non-blank line; gzip-transparent."""
    w = window_of(path)
    if w is not None:  # only the new lines of a live log (data_pipeline/live.py)
        for loc, line in window_lines(path, w):
            if line.strip():
                yield loc, parse_json_bytes(loc, line)
        return
    try:
        raw = read_bytes(path)
    except (OSError, EOFError) as e:
        yield "file", bad("file", "<file>", f"cannot read: {e}")
        return
    for lineno, line in enumerate(raw.split(b"\n"), 1):
        if line.strip():
            yield f"line {lineno}", parse_json_bytes(f"line {lineno}", line)


def mapped(loc: str, fn: Callable[..., dict[str, Any]], *args: Any) -> Record:
    """Run an adapter's record mapper; a malformed source record becomes a quarantined Record
    (field from a MappingError, or the exception's text) instead of stopping the ingest."""
    try:
        return Record(loc, data=fn(*args))
    except MappingError as e:
        return bad(loc, e.field, e.problem, json.dumps(args[0], default=str)[:1024] if args else "")
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
        excerpt = json.dumps(args[0], default=str)[:1024] if args else ""
        return bad(loc, "<record>", f"unexpected structure: {type(e).__name__}: {e}", excerpt)


class MappingError(ValueError):
    def __init__(self, field: str, problem: str):
        super().__init__(f"{field}: {problem}")
        self.field, self.problem = field, problem


def require(d: Any, key: str, typ: type | tuple, where: str = "") -> Any:
    if not isinstance(d, dict):
        raise MappingError(where or "<record>", f"expected an object, got {type(d).__name__}")
    v = d.get(key)
    if not isinstance(v, typ) or isinstance(v, bool) and typ is not bool:
        got = "missing" if v is None else type(v).__name__
        raise MappingError(f"{where}{'.' if where else ''}{key}", f"expected {getattr(typ, '__name__', typ)}, got {got}")
    return v


def text_of(content: Any) -> str:
    """Message content as text: strings as-is, content-part lists joined (text / reasoning parts;
    images and other media become a placeholder naming their type)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for p in content:
            if isinstance(p, str):
                parts.append(p)
            elif isinstance(p, dict):
                kind = p.get("type", "")
                if isinstance(p.get("text"), str):
                    parts.append(p["text"])
                elif isinstance(p.get("reasoning"), str):
                    parts.append(p["reasoning"])
                else:
                    parts.append(f"[{kind or 'part'}]")
        return "\n".join(parts)
    if isinstance(content, dict) and isinstance(content.get("text"), str):
        return content["text"]
    raise MappingError("content", f"expected text or content parts, got {type(content).__name__}")


def iso_seconds(ts: Any) -> float | None:
    """ISO-8601 (zone-less means UTC) or epoch number -> unix seconds."""
    if ts is None or isinstance(ts, bool):
        return None
    if isinstance(ts, (int, float)):
        return float(ts)
    if isinstance(ts, str) and ts:
        try:
            dt = datetime.fromisoformat(ts.replace("Z", "+00:00"))
        except ValueError:
            return None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=timezone.utc)
        return dt.timestamp()
    return None


TIME_KEYS = (("started_at", "started_at"), ("ended_at", "ended_at"), ("duration_s", "duration_s"),
             ("duration", "duration_s"))


def record_times(rec: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    """A log line's interaction time, the curve's x-axis: `started_at` / `ended_at` (epoch seconds
    or ISO-8601; zone-less means UTC) and `duration_s` / `duration` (seconds), top-level or under
    `metadata` (top-level wins). A value that is none of these is quarantined naming its field."""
    out: dict[str, Any] = {}
    for where, src in (("metadata.", meta), ("", rec)):
        for key, field in TIME_KEYS:
            v = src.get(key)
            if v is None:
                continue
            seconds = (float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and field == "duration_s"
                       else iso_seconds(v) if field != "duration_s" else None)
            if seconds is None or seconds != seconds or (field == "duration_s" and seconds < 0):
                kind = "seconds >= 0" if field == "duration_s" else "epoch seconds or an ISO-8601 time"
                raise MappingError(f"{where}{key}", f"expected {kind}, got {v!r}")
            out[field] = seconds
    return out


def openai_tool_calls(calls: Any, where: str) -> list[dict[str, Any]]:
    """OpenAI `tool_calls` ({id, type, function: {name, arguments}}) or flat ({id, name,
    arguments}) -> canonical dicts. Arguments stay as given (a JSON string is parsed, and a broken
    one quarantined, by the schema validation)."""
    if calls is None:
        return []
    if not isinstance(calls, list):
        raise MappingError(where, f"expected a list, got {type(calls).__name__}")
    out = []
    for j, c in enumerate(calls):
        if not isinstance(c, dict):
            raise MappingError(f"{where}[{j}]", f"expected an object, got {type(c).__name__}")
        fn = c.get("function")
        if isinstance(fn, dict):
            name, args = fn.get("name"), fn.get("arguments", {})
        else:  # flat shape; inspect_ai puts the name in "function" as a string
            name, args = (fn if isinstance(fn, str) else c.get("name")), c.get("arguments", {})
        out.append({"name": name, "arguments": {} if args is None else args, "id": c.get("id")})
    return out


def token_fields(m: dict[str, Any]) -> dict[str, Any]:
    """token_ids / logprobs when the source message carries them (lists of ints / floats, or
    OpenAI's {"content": [{"token", "logprob"}]} shape)."""
    out: dict[str, Any] = {}
    ids = m.get("token_ids")
    if isinstance(ids, list) and all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        out["token_ids"] = ids
    lp = m.get("logprobs")
    if isinstance(lp, dict):
        lp = [t.get("logprob") for t in lp.get("content") or [] if isinstance(t, dict)]
    if isinstance(lp, list) and lp and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in lp):
        out["logprobs"] = [float(x) for x in lp]
    return out


def stable_id(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def tools_to_openai(tools: Any) -> list[dict[str, Any]]:
    """Tool schemas as OpenAI function tools ({type: function, function: {name, description,
    parameters}}); accepts that shape, bare {name, description, parameters}, or a JSON string."""
    if isinstance(tools, str):
        try:
            tools = json.loads(tools) if tools.strip() else []
        except json.JSONDecodeError as e:
            raise MappingError("tools", f"not valid JSON ({e.msg})") from None
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise MappingError("tools", f"expected a list of tool schemas, got {type(tools).__name__}")
    out = []
    for t in tools:
        if isinstance(t, dict) and isinstance(t.get("function"), dict):
            out.append(t)
        elif isinstance(t, dict) and isinstance(t.get("name"), str):
            out.append({"type": "function", "function": {k: t[k] for k in ("name", "description", "parameters") if k in t}})
    return out


def record_list(rec: Any, key: str, items: str) -> list:
    """The list under `key` of a conversation record (a JSON object); `items` names what it lists."""
    if not isinstance(rec, dict):
        raise MappingError("<record>", f"expected a JSON object, got {type(rec).__name__}")
    value = rec.get(key)
    if not isinstance(value, list):
        raise MappingError(key, f"required list of {items}")
    return value


def outcome_from_reward(reward: Any, field: str = "reward") -> dict[str, Any]:
    """A reward (a boolean, or a number in [0, 1]; success at 1) as an outcome; {} when absent.
    MappingError naming `field` for any other value: an out-of-range reward is quarantined, not
    clipped."""
    if reward is None:
        return {}
    if isinstance(reward, bool):
        return {"success": reward, "score": float(reward)}
    r = _unit_number(reward, field)
    return {"success": r >= 1.0, "score": r}


def _unit_number(v: Any, field: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v:
        raise MappingError(field, f"expected a number in [0, 1], got {v!r}")
    if not 0.0 <= v <= 1.0:
        raise MappingError(field, f"must lie in [0, 1], got {v}")
    return float(v)


OUTCOME_FIELDS = ("success", "score", "reward")  # read in each outcome place (see log_outcome)


def _outcome_place(d: dict[str, Any], prefix: str, top: bool) -> dict[str, Any]:
    """`success` (true/false), then `score` and `reward` (numbers in [0, 1]; reward, read last,
    wins) of one place. At the top level a reward or score also sets success (at 1) unless the
    place gives `success`, and a boolean reward is a success flag (tau-bench's shape)."""
    out: dict[str, Any] = {}
    success = d.get("success")
    if success is not None:
        if not isinstance(success, bool):
            raise MappingError(f"{prefix}success", f"expected true/false, got {success!r}")
        out["success"] = success
    for key in ("score", "reward"):
        v = d.get(key)
        if v is None:
            continue
        if top and isinstance(v, bool):
            out.update({"success": v, "score": float(v)} if success is None else {"score": float(v)})
            continue
        out["score"] = _unit_number(v, f"{prefix}{key}")
        if top and success is None:
            out["success"] = out["score"] >= 1.0
    return out


def log_outcome(rec: Any, metadata: Any = None) -> dict[str, Any]:
    """A record's outcome from wherever its log put it, least explicit first, each place
    overriding the keys it gives: `metadata.{success,score,reward}`, then the top-level
    `success` / `score` / `reward`, then `outcome.{success,score,reward}` (flywheel's own shape).
    A success that is not true/false, or a score or reward that is not a number in [0, 1], raises
    MappingError naming the field (the record is quarantined with that reason). {} when none is
    given: the record is unlabeled, never a failure. `metadata`: the metadata mapping when it is
    not `rec["metadata"]`."""
    if not isinstance(rec, dict):
        return {}
    meta = rec.get("metadata") if metadata is None else metadata
    out = _outcome_place(meta, "metadata.", False) if isinstance(meta, dict) else {}
    out.update(_outcome_place(rec, "", True))
    own = rec.get("outcome")
    if own is not None:
        if not isinstance(own, dict):
            raise MappingError("outcome", f"expected an object, got {type(own).__name__}")
        out.update(_outcome_place(own, "outcome.", False))
    return out


def read_records(path: Path, fn: Callable[[Any, Path, str], dict[str, Any]]) -> Iterator[Record]:
    """A JSON array file (one record per element), a single JSON object, or JSONL: each record
    mapped with `fn(record, path, locator)`."""
    with open(path, "rb") as f:
        first = head_text(path, f.read(64)).lstrip()[:1]
    if first in ("[", "{") and window_of(path) is None:
        doc = load_document(path)
        if not isinstance(doc, Record):
            items = doc if isinstance(doc, list) else [doc]
            for i, rec in enumerate(items):
                yield mapped(f"record {i}", fn, rec, path, f"record {i}")
            return
        if first == "[":
            yield doc
            return
        # not one JSON document: fall through to JSON Lines
    for loc, obj in jsonl_objects(path):
        yield obj if isinstance(obj, Record) else mapped(loc, fn, obj, path, loc)
