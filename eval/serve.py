"""`flywheel serve`: an OpenAI-compatible chat-completions endpoint for a checkpoint (base model +
LoRA adapter), so that agent harnesses (and eval/external.py's {endpoint}) can act with it.

    flywheel serve --checkpoint runs/quickstart/rounds/round-0003 [--port 8000] [--host 127.0.0.1]
    curl http://127.0.0.1:8000/v1/chat/completions -d '{"messages": [{"role": "user", "content": "hi"}]}'

It runs on Starlette (ASGI) and uvicorn, which give it HTTP/1.1 keep-alive, server-sent events,
concurrency and a clean shutdown on SIGTERM / Ctrl-C (requests in flight finish first). Routes:
`POST /v1/chat/completions`, `POST /v1/responses` (the Responses API, answered by the same decoder:
eval/responses_api.py maps it to a chat-completions request and back), `GET /v1/models`,
`GET /health`; anything else is a JSON 404 (its
body read, so a keep-alive connection stays usable). The base URL to give a harness is
`http://HOST:PORT/v1`.

The request fields (eval/chat_api.py checks them; any other field is a 400 naming it):
`messages` (roles system / developer / user / assistant / tool, text content), `tools`,
`tool_choice` (none / auto / required / a named function: required and named calls are forced by
constraining the decode to the template's tool-call form, the arguments to the tool's parameter
schema where eval/json_grammar.py can enforce it), `parallel_tool_calls`, `temperature`,
`top_p`, `max_tokens` / `max_completion_tokens` (capped by the model's context; default: `--max-tokens`,
else the rest of the context), `n` (up to 16, one batch), `stop`, `seed`, `logprobs` / `top_logprobs`,
`response_format` (json_object, or json_schema by constrained decoding; a schema keyword that
cannot be enforced is a 400 naming it), `presence_penalty` / `frequency_penalty` / `logit_bias`
(OpenAI's formulas), `stream` / `stream_options.include_usage`, `model` (a name not served is a
404 listing the served names), and `user` / `metadata` (kept in the served log). Tool calls are
parsed in the model family's own format: the tokenizer's response template
(`tokenizer.parse_response`, set by TRL for the families it knows) where there is one, else the
marks the chat template prints around a call (the tiny model's `<|tool_call|>`, Qwen / Hermes
`<tool_call>`), and come back as OpenAI `tool_calls` with `finish_reason: "tool_calls"`; the
template's special tokens never reach `content`.

`--api-key KEY` (or FLYWHEEL_API_KEY) makes every route but /health ask for `Authorization:
Bearer KEY` (a JSON 401 otherwise); it is required to listen beyond localhost. `--log-dir DIR`
appends every served conversation to DIR/served-YYYY-MM-DD.jsonl in flywheel's canonical JSONL
(the policy = the checkpoint that served it), so `flywheel ingest DIR` takes serving traffic into
the store: the reply is the record's only trained turn (earlier assistant turns of the request
were logged when they were served and are marked as context). `--max-concurrency` generations
run at once, `--max-queue` more wait; beyond that a request gets 503.

This server is plain transformers on the CPU or one GPU: right for tests, the demo and small
models. On a GPU, serve a big checkpoint with vLLM and its LoRA support instead:

    vllm serve BASE_MODEL --enable-lora --lora-modules round-0003=runs/x/rounds/round-0003/adapter --port 8000
"""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import ipaddress
import json
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from eval.chat_api import (NotFound, ReplyStream, RequestError, ToolFormat, chat_messages, constraint_for,  # noqa: F401
                           parse_request, split_reply, strip_specials)
from eval import responses_api
from eval.decoding import Pieces, Row, decode
from eval.errors import EvalError

_chat_messages = chat_messages  # the name older callers use


@dataclass
class Job:
    """One checked request, rendered and ready to decode."""
    req: Any
    prompt_text: str
    prompt_ids: list[int]
    rows: list[Row]
    id: str = field(default_factory=lambda: f"chatcmpl-{uuid.uuid4().hex[:24]}")
    created: int = field(default_factory=lambda: int(time.time()))
    started: float = field(default_factory=time.time)
    echo: dict[str, Any] | None = None  # a /v1/responses request: the fields its response object echoes


class ChatModel:
    """A loaded checkpoint answering chat-completions requests."""

    def __init__(self, model, tokenizer, model_name: str = "flywheel", log_dir: str | Path | None = None,
                 policy: str | None = None, max_tokens: int | None = None):
        self.model, self.tokenizer, self.name = model, tokenizer, model_name
        self.max_tokens = max_tokens  # a reply's length when the request sets none (None: the rest of the context)
        self.names = [model_name]
        self.fmt = ToolFormat.of(tokenizer)
        self.parser = _response_parser(tokenizer)
        added = getattr(tokenizer, "added_tokens_decoder", {}) or {}
        self.specials = sorted({*tokenizer.all_special_tokens, *(t.content for t in added.values() if t.special)},
                               key=len, reverse=True)
        eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        # the end-of-turn token and every end token the model's generation config names (Qwen: two)
        self.eos_ids = {tokenizer.eos_token_id, *(eos if isinstance(eos, list) else [eos])} - {None}
        ctx = getattr(getattr(model, "config", None), "max_position_embeddings", None)
        self.context = int(ctx or min(getattr(tokenizer, "model_max_length", 4096) or 4096, 10**6))
        self.pieces = Pieces(tokenizer)
        self.log = ServeLog(Path(log_dir), policy or model_name) if log_dir else None

    # ---- a request ---------------------------------------------------------------------------
    def prepare(self, body: Any) -> Job:
        req = parse_request(body, self.names)
        try:
            text = self.tokenizer.apply_chat_template(req.messages, tools=req.tools, tokenize=False,
                                                      add_generation_prompt=True)
        except Exception as e:  # the template's own error (jinja raise_exception, a missing key, ...)
            raise RequestError(f"messages: the model's chat template cannot render them: {e}", "messages") from None
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        room = self.context - len(ids)
        if room < 1:
            raise RequestError(f"messages: the prompt is {len(ids)} tokens and the model's context is {self.context}",
                               "messages")
        req.sampling.max_new_tokens = min(req.max_tokens or self.max_tokens or room, room)
        constraint = constraint_for(req, self.fmt)
        return Job(req, text, ids, [Row(constraint=constraint) for _ in range(req.n)])

    def complete(self, body: Any) -> dict[str, Any]:
        """The whole answer of a request (not streamed)."""
        job = self.prepare(body)
        if job.req.stream:
            raise RequestError("'stream': true is answered over HTTP as server-sent events", "stream")
        return self.finish(job)

    def finish(self, job: Job) -> dict[str, Any]:
        for _ in self._decode(job):
            pass
        choices = []
        for i, row in enumerate(job.rows):
            message, finish = self._message(job, row)
            choices.append({"index": i, "message": message,
                            "logprobs": {"content": row.logprobs} if job.req.logprobs else None,
                            "finish_reason": finish})
        self._log(job, [c["message"] for c in choices], [c["finish_reason"] for c in choices])
        return {"id": job.id, "object": "chat.completion", "created": job.created, "model": self.name,
                "system_fingerprint": None, "choices": choices, "usage": self._usage(job)}

    def chunks(self, job: Job, cancelled: Callable[[], bool] = lambda: False) -> Iterator[dict[str, Any]]:
        """The answer as chat.completion.chunk objects (server-sent events), tool calls as deltas."""
        streams = [ReplyStream(self.fmt, self.specials, job.req.parallel_tool_calls) for _ in job.rows]
        lp_sent = [0] * len(job.rows)

        def chunk(i: int, delta: dict, finish: str | None = None, logprobs=None) -> dict[str, Any]:
            return {"id": job.id, "object": "chat.completion.chunk", "created": job.created, "model": self.name,
                    "system_fingerprint": None,
                    "choices": [{"index": i, "delta": delta, "logprobs": logprobs, "finish_reason": finish}]}

        for i in range(len(job.rows)):
            yield chunk(i, {"role": "assistant", "content": ""})
        for step in self._decode(job, cancelled):
            for i, text in step:
                row = job.rows[i]
                deltas = streams[i].feed(text, final=row.finish is not None)
                for k, delta in enumerate(deltas):
                    yield chunk(i, delta, logprobs=self._new_logprobs(job, row, lp_sent, i) if k == 0 else None)
                if row.finish is not None:
                    yield chunk(i, {}, "tool_calls" if streams[i].calls else row.finish,
                                logprobs=self._new_logprobs(job, row, lp_sent, i))
        if cancelled():
            return
        self._log(job, [self._message(job, row)[0] for row in job.rows],
                  ["tool_calls" if s.calls else r.finish for s, r in zip(streams, job.rows)])
        if job.req.include_usage:
            yield {"id": job.id, "object": "chat.completion.chunk", "created": job.created, "model": self.name,
                   "choices": [], "usage": self._usage(job)}

    @staticmethod
    def _new_logprobs(job: Job, row: Row, sent: list[int], i: int) -> dict | None:
        """The log-probs of a row's tokens not yet sent (a delta held back sends them later)."""
        if not job.req.logprobs or sent[i] == len(row.logprobs):
            return None
        out = {"content": row.logprobs[sent[i]:]}
        sent[i] = len(row.logprobs)
        return out

    # ---- /v1/responses: the same decode, the Responses wire format (eval/responses_api.py) -----------
    def prepare_response(self, body: Any) -> Job:
        chat, echo = responses_api.to_chat(body)
        try:
            job = self.prepare(chat)
        except RequestError as e:
            raise responses_api.renamed(e) from None
        job.id, job.echo = responses_api.new_id("resp"), echo
        return job

    def respond(self, body: Any) -> dict[str, Any]:
        """The whole response object of a /v1/responses request (not streamed)."""
        job = self.prepare_response(body)
        if job.req.stream:
            raise RequestError("'stream': true is answered over HTTP as server-sent events", "stream")
        return self.response(job)

    def response(self, job: Job) -> dict[str, Any]:
        return responses_api.from_completion(job.id, job.echo, self.finish(job))

    def response_events(self, job: Job, cancelled: Callable[[], bool] = lambda: False) -> Iterator[dict[str, Any]]:
        """The response as Responses stream events (response.created ... response.completed)."""
        stream = responses_api.EventStream(job.id, job.created, self.name, job.echo, job.req.logprobs)
        return stream.events(self.chunks(job, cancelled), cancelled)

    def models(self) -> dict[str, Any]:
        return {"object": "list", "data": [{"id": n, "object": "model", "created": 0, "owned_by": "flywheel"}
                                           for n in self.names]}

    # ---- inside ------------------------------------------------------------------------------
    def _decode(self, job: Job, cancelled: Callable[[], bool] = lambda: False):
        return decode(self.model, self.tokenizer, job.prompt_ids, job.rows, job.req.sampling, self.eos_ids,
                      self.pieces, cancelled)

    def _message(self, job: Job, row: Row) -> tuple[dict[str, Any], str]:
        content, calls = None, None
        if self.parser is not None:
            content, calls = self._parse_with_template(job, row)
        if calls is None:
            content, calls = split_reply(row.text, self.fmt)
        content = strip_specials(content or "", self.specials).strip()
        if not job.req.parallel_tool_calls:
            calls = calls[:1]
        message: dict[str, Any] = {"role": "assistant", "content": content or (None if calls else "")}
        if calls:
            message["tool_calls"] = calls
        return message, "tool_calls" if calls else (row.finish or "length")

    def _parse_with_template(self, job: Job, row: Row):
        """The tokenizer's response template (transformers' parse_response), or (None, None)."""
        from eval.chat_api import openai_call

        text = row.text + (self.tokenizer.eos_token or "" if row.finish == "stop" else "")
        try:
            parsed = self.parser.parse_response(text, prefix=job.prompt_text)
        except Exception:  # a reply the template's parser does not take: the marks decide
            return None, None
        calls = [openai_call({"name": c["function"]["name"], "arguments": c["function"].get("arguments") or {}}, k)
                 for k, c in enumerate(parsed.get("tool_calls") or []) if isinstance(c.get("function"), dict)]
        return parsed.get("content") or "", calls

    def _usage(self, job: Job) -> dict[str, int]:
        done = sum(len(r.ids) for r in job.rows)
        return {"prompt_tokens": len(job.prompt_ids), "completion_tokens": done,
                "total_tokens": len(job.prompt_ids) + done}

    def _log(self, job: Job, messages: list[dict], finishes: list[str]) -> None:
        if self.log is not None:
            self.log.write(job, messages, finishes)


def _response_parser(tokenizer):
    """The tokenizer when it can parse a generated turn itself (a response template, its own or the
    one TRL sets for the families it knows); else None."""
    if getattr(tokenizer, "response_template", None) or getattr(tokenizer, "response_schema", None):
        return tokenizer
    try:
        from trl.chat_template_utils import add_response_schema

        add_response_schema(tokenizer)
    except Exception:  # TRL knows no response template for this chat template
        return None
    return tokenizer if (getattr(tokenizer, "response_template", None) or getattr(tokenizer, "response_schema", None)) \
        else None


class ServeLog:
    """Served conversations as flywheel's canonical JSONL, one file per day, whole lines appended."""

    def __init__(self, folder: Path, policy: str):
        self.folder, self.policy = folder, policy
        self._lock = threading.Lock()
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise EvalError(f"--log-dir {folder}: cannot create it: {e.strerror}") from None

    def write(self, job: Job, replies: list[dict], finishes: list[str]) -> None:
        ended = time.time()
        prompt = [_canonical(m) for m in job.req.messages]
        context = [k for k, m in enumerate(prompt) if m["role"] == "assistant"]
        opening = json.dumps([m for m in prompt if m["role"] in ("system", "user")][:2], sort_keys=True)
        task = "served-" + hashlib.sha256(opening.encode()).hexdigest()[:16]
        # the tools the model was offered: a dataset built from this log renders them as it was prompted
        tools = {"tools": [{"type": "function", "function": t["function"]} for t in job.req.tools]} \
            if job.req.tools else {}
        lines = []
        for i, (reply, row, finish) in enumerate(zip(replies, job.rows, finishes)):
            turn = _canonical(reply)
            turn["token_ids"] = list(row.ids)
            if row.logprobs:
                turn["logprobs"] = [lp["logprob"] for lp in row.logprobs]
            lines.append(json.dumps({
                "episode_id": f"{job.id}-{i}", "task_id": task, "messages": prompt + [turn], "suite": "served",
                "source_format": "flywheel-serve", "policy": self.policy, "started_at": job.started, "ended_at": ended,
                "metadata": {"context_messages": context, "request_id": job.id, "choice": i, "finish_reason": finish,
                             **tools, **job.req.log_metadata}}, ensure_ascii=False) + "\n")
        path = self.folder / f"served-{time.strftime('%Y-%m-%d', time.gmtime(ended))}.jsonl"
        with self._lock, open(path, "a", encoding="utf-8") as f:
            f.write("".join(lines))
            f.flush()


def _canonical(m: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"role": m["role"], "content": m.get("content") or ""}
    calls = []
    for c in m.get("tool_calls") or []:
        f = c.get("function", c)
        args = f.get("arguments") or {}
        calls.append({"name": f.get("name"), "id": c.get("id"),
                      "arguments": json.loads(args) if isinstance(args, str) else args})
    if calls:
        out["tool_calls"] = calls
    for key in ("tool_call_id", "name"):
        if m.get(key):
            out[key] = m[key]
    return out


# ---- the web app ---------------------------------------------------------------------------------
class _Gate:
    """At most `slots` generations at once and `queue` more waiting; beyond that, 503."""

    def __init__(self, slots: int, queue: int):
        self.slots, self.queue = slots, queue
        self.waiting, self.running, self._sem = 0, 0, None

    def full(self) -> bool:
        return self.running >= self.slots and self.waiting >= self.queue

    @contextlib.asynccontextmanager
    async def hold(self):
        if self._sem is None:
            self._sem = asyncio.Semaphore(self.slots)
        self.waiting += 1
        try:
            await self._sem.acquire()
        finally:
            self.waiting -= 1
        self.running += 1
        try:
            yield
        finally:
            self.running -= 1
            self._sem.release()


def build_app(chat: ChatModel, api_key: str | None = None, max_concurrency: int = 1, max_queue: int = 64):
    """The Starlette application serving `chat`."""
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException
    from starlette.requests import Request
    from starlette.responses import JSONResponse, StreamingResponse
    from starlette.routing import Route

    gate = _Gate(max_concurrency, max_queue)

    def error(status: int, message: str, kind: str = "invalid_request_error", headers=None, **extra):
        return JSONResponse({"error": {"message": message, "type": kind, **extra}}, status, headers=headers)

    def denied(request: Request):
        if not api_key:
            return None
        given = request.headers.get("authorization", "")
        if given.startswith("Bearer ") and hmac.compare_digest(given[7:].strip().encode(), api_key.encode()):
            return None
        return error(401, "missing or wrong API key: send 'Authorization: Bearer KEY' (the key flywheel serve was "
                          "started with)", "authentication_error", headers={"WWW-Authenticate": "Bearer"})

    async def models(request: Request):
        return denied(request) or JSONResponse(chat.models())

    async def health(request: Request):
        return JSONResponse({"status": "ok", "running": gate.running, "waiting": gate.waiting})

    async def answer(request: Request, prepare, whole, items, sse, end: str | None, failed):
        """A generation request: checked, then answered whole or as server-sent events."""
        raw = await request.body()
        if (no := denied(request)) is not None:
            return no
        try:
            body = json.loads(raw or b"{}")
        except json.JSONDecodeError as e:
            return error(400, f"body is not JSON: {e}")
        try:
            job = prepare(body)
        except RequestError as e:
            return JSONResponse(e.body(), e.status)
        if gate.full():
            return error(503, f"server busy: {gate.waiting} requests waiting; retry later", "server_error",
                         headers={"Retry-After": "1"})
        if not job.req.stream:
            async with gate.hold():
                return JSONResponse(await run_in_threadpool(whole, job))
        produce = lambda stop: items(job, stop)  # noqa: E731
        return StreamingResponse(_events(produce, gate, request.receive, sse, end, failed),
                                 media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    async def completions(request: Request):
        return await answer(request, chat.prepare, chat.finish, chat.chunks, _data_line, "data: [DONE]\n\n",
                            lambda e: {"error": {"message": str(e), "type": "server_error"}})

    async def responses(request: Request):
        # the Responses stream has no [DONE]: response.completed (or .incomplete) is its last event
        return await answer(request, chat.prepare_response, chat.response, chat.response_events, _event_lines, None,
                            lambda e: {"type": "error", "code": "server_error", "message": str(e), "param": None})

    async def unknown(request: Request):
        await request.body()  # read: one left unread would be taken for the next request on the connection
        path = request.url.path.rstrip("/")
        if path in known:
            return error(405, f"{request.method} {path}: use {known[path]}", headers={"Allow": known[path]})
        return error(404, f"no route {request.method} {request.url.path} (served: POST /v1/chat/completions, "
                          "POST /v1/responses, GET /v1/models, GET /health)", code="not_found")

    async def http_error(request: Request, exc: HTTPException):
        await request.body()
        return error(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}")

    known = {"/v1/models": "GET", "/models": "GET", "/v1/chat/completions": "POST", "/chat/completions": "POST",
             "/v1/responses": "POST", "/responses": "POST", "/health": "GET"}
    routes = [Route(p, models, methods=["GET"]) for p in ("/v1/models", "/models")]
    routes += [Route(p, completions, methods=["POST"]) for p in ("/v1/chat/completions", "/chat/completions")]
    routes += [Route(p, responses, methods=["POST"]) for p in ("/v1/responses", "/responses")]
    routes += [Route("/health", health, methods=["GET"]),
               Route("/{path:path}", unknown, methods=["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"])]
    async def crashed(request: Request, exc: Exception):
        return error(500, f"the server failed on this request: {type(exc).__name__}: {exc}", "server_error")

    return Starlette(routes=routes, exception_handlers={HTTPException: http_error, Exception: crashed})


def _data_line(item: dict[str, Any]) -> str:
    return f"data: {json.dumps(item)}\n\n"


def _event_lines(event: dict[str, Any]) -> str:
    return f"event: {event['type']}\ndata: {json.dumps(event)}\n\n"


async def _events(produce: Callable[[Callable[[], bool]], Iterator[dict]], gate: _Gate, receive,
                  sse: Callable[[dict], str] = _data_line, end: str | None = "data: [DONE]\n\n",
                  failed: Callable[[Exception], dict] = lambda e: {"error": {"message": str(e),
                                                                              "type": "server_error"}}):
    """Server-sent events of a streamed answer (`produce(cancelled)` yields its items, `sse` writes
    one, `end` closes the stream); generation runs in a worker thread and stops when the client
    goes away."""
    async with gate.hold():
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        stop = threading.Event()

        async def watch():  # the request body is read: the next message is the client leaving
            while not stop.is_set():
                if (await receive())["type"] == "http.disconnect":
                    stop.set()

        def work():
            try:
                for item in produce(stop.is_set):
                    loop.call_soon_threadsafe(queue.put_nowait, item)
            except Exception as e:  # reported in the stream: the status line is already sent
                loop.call_soon_threadsafe(queue.put_nowait, failed(e))
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, None)

        worker = loop.run_in_executor(None, work)
        watcher = asyncio.ensure_future(watch())
        try:
            while (item := await queue.get()) is not None:
                if not stop.is_set():
                    yield sse(item)
            if end and not stop.is_set():
                yield end
        finally:
            stop.set()
            watcher.cancel()
            await asyncio.shield(worker)


# ---- the server ----------------------------------------------------------------------------------
class Server:
    """uvicorn serving the app on a socket bound at construction (port 0: a free one)."""

    def __init__(self, app, host: str, port: int):
        import uvicorn

        try:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            self.sock = socket.socket(family, socket.SOCK_STREAM)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.sock.bind((host, port))
            self.sock.listen(2048)  # connections made before uvicorn runs wait in the backlog
        except OSError as e:
            raise EvalError(f"cannot listen on {host}:{port}: {e.strerror}") from None
        self.host = host
        self.uvicorn = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off",
                                                     access_log=False, timeout_graceful_shutdown=60))

    @property
    def server_address(self) -> tuple:
        return self.sock.getsockname()

    def serve_forever(self) -> None:
        """Serve until shutdown() or SIGTERM / SIGINT (in the main thread): requests in flight finish first."""
        import signal

        restore = {}
        if threading.current_thread() is threading.main_thread():
            # uvicorn handles the signal, then re-raises it once it has stopped: make that a no-op
            for sig in (signal.SIGINT, signal.SIGTERM):
                restore[sig] = signal.signal(sig, lambda *_: None)
        try:
            self.uvicorn.run(sockets=[self.sock])
        finally:
            for sig, handler in restore.items():
                signal.signal(sig, handler)

    def shutdown(self) -> None:
        self.uvicorn.should_exit = True

    def server_close(self) -> None:
        self.sock.close()


def is_local(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_options(host: str, api_key: str | None, max_concurrency: int, max_queue: int,
                   max_tokens: int | None = None) -> None:
    if max_tokens is not None and max_tokens < 1:
        raise EvalError(f"--max-tokens must be >= 1, got {max_tokens}")
    if not is_local(host) and not api_key:
        raise EvalError(f"--host {host} listens beyond this machine: give --api-key KEY (or set FLYWHEEL_API_KEY) "
                        "so that only callers with the key are served")
    if max_concurrency < 1 or max_queue < 0:
        raise EvalError("--max-concurrency must be >= 1 and --max-queue >= 0")


def make_server(model, tokenizer, host: str = "127.0.0.1", port: int = 0, model_name: str = "flywheel",
                api_key: str | None = None, log_dir: str | Path | None = None, max_concurrency: int = 1,
                max_queue: int = 64, policy: str | None = None, max_tokens: int | None = None) -> Server:
    """A server (not yet serving: call its serve_forever) of the model; port 0 picks a free port.
    `max_tokens`: a reply's length when a request sets none (harnesses such as the Codex CLI never do)."""
    _check_options(host, api_key, max_concurrency, max_queue, max_tokens)
    chat = ChatModel(model, tokenizer, model_name, log_dir=log_dir, policy=policy, max_tokens=max_tokens)
    return Server(build_app(chat, api_key, max_concurrency, max_queue), host, port)


def base_url(server: Server) -> str:
    host, port = server.server_address[:2]
    return f"http://[{host}]:{port}/v1" if ":" in host else f"http://{host}:{port}/v1"


@contextlib.contextmanager
def serving(model, tokenizer, host: str = "127.0.0.1", port: int = 0, model_name: str = "flywheel",
            **options) -> Iterator[str]:
    """Serve the model in a background thread for the duration of the block; yields the base URL."""
    server = make_server(model, tokenizer, host, port, model_name, **options)
    thread = threading.Thread(target=server.serve_forever, name="flywheel-serve", daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.uvicorn.started and thread.is_alive() and time.time() < deadline:
        time.sleep(0.01)
    try:
        yield base_url(server)
    finally:
        server.shutdown()
        thread.join()
        server.server_close()


def checkpoint_server(checkpoint, load, host: str = "127.0.0.1", port: int = 8000, name: str | None = None,
                      **options) -> Server:
    """A server (not yet serving: call its serve_forever) of the checkpoint `flywheel serve --checkpoint`
    names: a round dir, a model folder or an adapter folder, loaded with `load` (eval.models.LoadOptions).
    `options`: api_key, log_dir, max_concurrency, max_queue, max_tokens (see make_server)."""
    from eval.checkpoints import resolve_checkpoint
    from eval.policy import load_checkpoint

    _check_options(host, options.get("api_key"), options.get("max_concurrency", 1), options.get("max_queue", 64),
                   options.get("max_tokens"))
    base, adapter = resolve_checkpoint(checkpoint)
    model, tokenizer = load_checkpoint(base, adapter, load)
    return make_server(model, tokenizer, host, port, name or Path(checkpoint).resolve().name,
                       policy=str(Path(checkpoint).resolve()), **options)


def api_key_from_env(given: str | None) -> str | None:
    return given or os.environ.get("FLYWHEEL_API_KEY") or None
