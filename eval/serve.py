"""An OpenAI-compatible chat-completions endpoint for a checkpoint
(base model + LoRA adapter), so that external harnesses (eval/external.py's {endpoint}) can act
with it.

    flywheel serve --checkpoint runs/quickstart/rounds/round-0003 [--port 8000] [--host 127.0.0.1]
    curl http://127.0.0.1:8000/v1/chat/completions -d '{"messages": [{"role": "user", "content": "hi"}]}'

Routes: `GET /v1/models`, `POST /v1/chat/completions` (`messages`, `tools`, `temperature`,
`max_tokens` (or `max_completion_tokens`), `seed`; no streaming, n = 1) and `GET /health`. The base
URL to give a harness is `http://HOST:PORT/v1`. A reply in the chat template's tool-call form
(`<|tool_call|>{"name": ..., "arguments": {...}}<|/tool_call|>`, the tiny template's, which many
templates share in spirit) comes back as OpenAI `tool_calls` with `finish_reason: "tool_calls"`.

This server is plain transformers on the CPU (or one GPU), one request at a time: right for tests,
the demo and small models. On a GPU, serve a big checkpoint with vLLM and its LoRA support instead,
and give its URL to `flywheel eval --endpoint`:

    vllm serve BASE_MODEL --enable-lora --lora-modules round-0003=runs/x/rounds/round-0003/adapter --port 8000
"""
from __future__ import annotations

import contextlib
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator

from eval.errors import EvalError

TOOL_CALL_RE = re.compile(r"<\|tool_call\|>(.*?)<\|/tool_call\|>", re.S)
ROLES = ("system", "user", "assistant", "tool")


class RequestError(ValueError):
    """A malformed request: answered with HTTP 400 and an OpenAI-style error body."""


def _chat_messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    """OpenAI wire messages -> chat-template messages (tool-call arguments as objects)."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError("'messages' must be a non-empty list")
    out = []
    for k, m in enumerate(messages):
        # `developer` is the OpenAI API's newer name for the system role (as the ingest adapter reads it)
        role = m.get("role") if isinstance(m, dict) else None
        role = "system" if role == "developer" else role
        if role not in ROLES:
            raise RequestError(f"messages[{k}]: needs 'role', one of {', '.join(ROLES)} or developer")
        content = m.get("content") or ""
        if isinstance(content, list):  # content parts: keep the text ones
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        msg = {"role": role, "content": content}
        calls = []
        for c in m.get("tool_calls") or []:
            f = c.get("function", c) if isinstance(c, dict) else {}
            args = f.get("arguments", {})
            try:
                args = json.loads(args) if isinstance(args, str) else args
            except json.JSONDecodeError:
                raise RequestError(f"messages[{k}].tool_calls: arguments are not JSON: {args!r}") from None
            calls.append({"id": c.get("id"), "name": f.get("name"), "arguments": args})
        if calls:
            msg["tool_calls"] = calls
        for key in ("tool_call_id", "name"):
            if m.get(key):
                msg[key] = m[key]
        out.append(msg)
    return out


def split_reply(text: str) -> tuple[str, list[dict[str, Any]]]:
    """A generated turn -> (content, OpenAI tool_calls). Malformed tool-call bodies stay content."""
    calls, kept = [], []
    at = 0
    for m in TOOL_CALL_RE.finditer(text):
        try:
            call = json.loads(m.group(1))
        except json.JSONDecodeError:
            continue
        if not isinstance(call, dict) or not isinstance(call.get("name"), str):
            continue
        kept.append(text[at:m.start()])
        at = m.end()
        calls.append({"id": f"call_{len(calls)}", "type": "function",
                      "function": {"name": call["name"], "arguments": json.dumps(call.get("arguments") or {})}})
    kept.append(text[at:])
    return "".join(kept).strip(), calls


class ChatModel:
    """A loaded checkpoint answering chat requests (one generation at a time)."""

    def __init__(self, model, tokenizer, model_name: str = "flywheel"):
        self.model, self.tokenizer, self.name = model, tokenizer, model_name
        self._lock = threading.Lock()
        self._count = 0

    def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        import torch

        if body.get("stream"):
            raise RequestError("streaming is not supported; leave 'stream' out")
        if body.get("n", 1) != 1:
            raise RequestError("only n = 1 is supported")
        messages, tools = _chat_messages(body), body.get("tools") or None
        temperature = float(body.get("temperature", 1.0))
        max_tokens = int(body.get("max_completion_tokens") or body.get("max_tokens") or 256)
        if temperature < 0 or max_tokens < 1:
            raise RequestError("need temperature >= 0 and max_tokens >= 1")
        text = self.tokenizer.apply_chat_template(messages, tools=tools, tokenize=False, add_generation_prompt=True)
        ids = self.tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
        eos = self.tokenizer.eos_token_id
        with self._lock, torch.no_grad():
            if body.get("seed") is not None:
                torch.manual_seed(int(body["seed"]))
            out = self.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_tokens,
                                      do_sample=temperature > 0, temperature=temperature or None,
                                      pad_token_id=self.tokenizer.pad_token_id or eos, eos_token_id=eos)
            self._count += 1
            n = self._count
        new = out[0, ids.shape[1]:].tolist()
        ended = eos in new
        new = new[:new.index(eos)] if ended else new
        content, calls = split_reply(self.tokenizer.decode(new, skip_special_tokens=False)
                                     .replace(self.tokenizer.pad_token or "\0", ""))
        message: dict[str, Any] = {"role": "assistant", "content": content or (None if calls else "")}
        if calls:
            message["tool_calls"] = calls
        return {
            "id": f"chatcmpl-{n}", "object": "chat.completion", "created": int(time.time()), "model": self.name,
            "choices": [{"index": 0, "message": message,
                         "finish_reason": "tool_calls" if calls else ("stop" if ended else "length")}],
            "usage": {"prompt_tokens": ids.shape[1], "completion_tokens": len(new),
                      "total_tokens": ids.shape[1] + len(new)},
        }

    def models(self) -> dict[str, Any]:
        return {"object": "list", "data": [{"id": self.name, "object": "model", "owned_by": "flywheel"}]}


def _handler(chat: ChatModel):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *args):  # quiet: harness logs are the place for traffic
            pass

        def _send(self, status: int, obj: dict[str, Any]) -> None:
            data = json.dumps(obj).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _error(self, status: int, message: str) -> None:
            self._send(status, {"error": {"message": message, "type": "invalid_request_error"}})

        def do_GET(self):
            path = self.path.rstrip("/")
            if path in ("/v1/models", "/models"):
                self._send(200, chat.models())
            elif path == "/health":
                self._send(200, {"status": "ok"})
            else:
                self._error(404, f"no route {self.path}")

        def do_POST(self):
            # the body is read before any answer: one left unread would be taken for the next request
            # on the same keep-alive connection
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.path.rstrip("/") not in ("/v1/chat/completions", "/chat/completions"):
                self._error(404, f"no route {self.path} (served: /v1/chat/completions, /v1/models)")
                return
            try:
                body = json.loads(raw or b"{}")
                if not isinstance(body, dict):
                    raise RequestError("the body must be a JSON object")
                self._send(200, chat.complete(body))
            except json.JSONDecodeError as e:
                self._error(400, f"body is not JSON: {e}")
            except (RequestError, TypeError, ValueError) as e:
                self._error(400, str(e))

    return Handler


def make_server(model, tokenizer, host: str = "127.0.0.1", port: int = 0, model_name: str = "flywheel"):
    """An HTTP server (not yet serving) for the model; port 0 picks a free port."""
    return ThreadingHTTPServer((host, port), _handler(ChatModel(model, tokenizer, model_name)))


def base_url(server) -> str:
    host, port = server.server_address[:2]
    return f"http://{host}:{port}/v1"


@contextlib.contextmanager
def serving(model, tokenizer, host: str = "127.0.0.1", port: int = 0, model_name: str = "flywheel") -> Iterator[str]:
    """Serve the model in a background thread for the duration of the block; yields the base URL."""
    server = make_server(model, tokenizer, host, port, model_name)
    thread = threading.Thread(target=server.serve_forever, name="flywheel-serve", daemon=True)
    thread.start()
    try:
        yield base_url(server)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def checkpoint_server(checkpoint, load, host: str = "127.0.0.1", port: int = 8000, name: str | None = None):
    """A server (not yet serving: call its serve_forever) of the checkpoint `flywheel serve --checkpoint`
    names: a round dir, a model folder or an adapter folder, loaded with `load` (eval.models.LoadOptions)."""
    from eval.checkpoints import resolve_checkpoint
    from eval.policy import load_checkpoint

    base, adapter = resolve_checkpoint(checkpoint)
    model, tokenizer = load_checkpoint(base, adapter, load)
    try:
        return make_server(model, tokenizer, host, port, name or _folder_name(checkpoint))
    except OSError as e:
        raise EvalError(f"cannot listen on {host}:{port}: {e.strerror}") from None


def _folder_name(path: str) -> str:
    from pathlib import Path

    return Path(path).resolve().name
