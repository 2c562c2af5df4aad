"""Secret redaction before anything is stored.

Each kind of secret has a regex and a cheap literal trigger: the regex runs only when its trigger
occurs in the text, which keeps ingest fast on the common case of no secrets. Redaction runs on
the canonical trajectory serialised as JSON (one pass over one string); the patterns never start
on the letter of a JSON escape (`\\n`, `\\t`, ...) nor cross a backslash, and the result is parsed
back, falling back to a walk over every string when that ever fails. The replacement names the
kind (`[REDACTED:aws_key]`), never any part of the original."""
from __future__ import annotations

import json
import re
from collections import Counter
from typing import Any

# start of a token: not glued to a word character, except after a JSON escape like \n or \t
_START = r"(?:(?<![A-Za-z0-9_\\])|(?<=\\[nrtbf]))"

# (kind, triggers, regex, replacement); order matters where kinds overlap (sk-ant- before sk-)
_RULES: list[tuple[str, tuple[str, ...], str, str]] = [
    ("private_key", ("PRIVATE KEY",),
     r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----[\s\S]*?(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|(?<!\\)(?=\")|\Z)",
     "[REDACTED:private_key]"),
    ("anthropic_key", ("sk-ant-",), _START + r"sk-ant-[A-Za-z0-9_\-]{16,}", "[REDACTED:anthropic_key]"),
    ("openai_key", ("sk-",), _START + r"sk-(?!ant-)(?:proj-|svcacct-|admin-)?[A-Za-z0-9_\-]{20,}",
     "[REDACTED:openai_key]"),
    ("aws_key", ("AKIA", "ASIA"), _START + r"(?:AKIA|ASIA)[0-9A-Z]{16}(?![0-9A-Z])", "[REDACTED:aws_key]"),
    ("github_token", ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
     _START + r"(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{22,})", "[REDACTED:github_token]"),
    ("slack_token", ("xox",), _START + r"xox[abposr]-[A-Za-z0-9\-]{10,}", "[REDACTED:slack_token]"),
    ("bearer_token", ("earer",), r"(?<![A-Za-z])([Bb]earer)(?:\s|\\[nt])+[A-Za-z0-9\-._~+/]{16,}=*",
     r"\1 [REDACTED:bearer_token]"),
    ("url_password", ("://",), r"([A-Za-z][A-Za-z0-9+.\-]*://[^\s:/@\"\\]+):[^\s@/\"\\]+@",
     r"\1:[REDACTED:url_password]@"),
    ("email", ("@",), r"(?<!\\)[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}(?![A-Za-z])",
     "[REDACTED:email]"),
]
_COMPILED = [(kind, trig, re.compile(rx), repl) for kind, trig, rx, repl in _RULES]
KINDS = tuple(kind for kind, *_ in _RULES)


def redact_text(text: str, counts: Counter | None = None) -> str:
    """Replace every secret in `text`; add the number replaced per kind to `counts`."""
    for kind, triggers, rx, repl in _COMPILED:
        if not any(t in text for t in triggers):
            continue
        text, n = rx.subn(repl, text)
        if n and counts is not None:
            counts[kind] += n
    return text


def redact_obj(obj: Any, counts: Counter | None = None) -> Any:
    """Redact every string (keys included) inside a JSON-like value."""
    if isinstance(obj, str):
        return redact_text(obj, counts)
    if isinstance(obj, list):
        return [redact_obj(v, counts) for v in obj]
    if isinstance(obj, dict):
        return {redact_text(k, counts) if isinstance(k, str) else k: redact_obj(v, counts) for k, v in obj.items()}
    return obj


def redact_json(text: str, counts: Counter) -> tuple[str, dict | None]:
    """Redact a JSON document given as text. Returns (text, parsed) where parsed is the redacted
    object when anything changed, else None (the caller keeps its own object)."""
    local: Counter = Counter()
    out = redact_text(text, local)
    if not local:
        return text, None
    try:
        obj = json.loads(out)
    except ValueError:  # a match crossed JSON syntax: redact the decoded strings instead
        local = Counter()
        obj = redact_obj(json.loads(text), local)
        out = json.dumps(obj, ensure_ascii=False)
    counts.update(local)
    return out, obj
