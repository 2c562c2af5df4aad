"""`flywheel serve --checkpoint DIR`: OpenAI-compatible chat-completions and Responses endpoints (eval/serve.py)."""
from __future__ import annotations

import argparse

from trainer.cli.common import add_quiet, parse


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="flywheel serve", description=(
        "Serve a checkpoint (base model + LoRA adapter) as an OpenAI-compatible chat-completions endpoint "
        "(streaming, tool calls in the model's own format, tool_choice, response_format, n, logprobs) and "
        "Responses endpoint (POST /v1/responses, the same decoder), so that "
        "agent harnesses can act with it. Give harnesses the base URL http://HOST:PORT/v1. Plain transformers: "
        "for big models on a GPU, serve with vLLM instead. SIGTERM or Ctrl-C stops it after the requests in flight."))
    ap.add_argument("--checkpoint", required=True, help="round checkpoint dir (manifest.json) or model folder")
    ap.add_argument("--host", default="127.0.0.1",
                    help="interface to listen on (default 127.0.0.1; any other needs --api-key)")
    ap.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 = any free port)")
    ap.add_argument("--api-key", default=None, metavar="KEY",
                    help="callers must send 'Authorization: Bearer KEY' (default: $FLYWHEEL_API_KEY; without a key "
                         "only localhost may be served)")
    ap.add_argument("--log-dir", default=None, metavar="DIR",
                    help="append every served conversation to DIR/served-DATE.jsonl in flywheel's canonical JSONL "
                         "(flywheel ingest DIR reads it); default: no log")
    ap.add_argument("--max-concurrency", type=int, default=1,
                    help="generations running at once (default 1)")
    ap.add_argument("--max-queue", type=int, default=64,
                    help="requests waiting for a generation slot before new ones get 503 (default 64)")
    ap.add_argument("--max-tokens", type=int, default=None, metavar="N",
                    help="a reply's length when the request sets no max_tokens / max_output_tokens (default: the "
                         "rest of the model's context; harnesses such as the Codex CLI never set one)")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16", "auto"],
                    help="weights' dtype (default float32; the recipe's model.dtype)")
    ap.add_argument("--attn-implementation", default="sdpa", choices=["sdpa", "eager", "flash_attention_2"],
                    help="attention kernel (default sdpa; the recipe's model.attn_implementation)")
    ap.add_argument("--chat-template", default=None, metavar="FILE",
                    help="Jinja chat template to render with (the recipe's model.chat_template, if it set one)")
    ap.add_argument("--trust-remote-code", action="store_true", help="allow model code from the model folder")
    ap.add_argument("--name", default=None, help="model id reported by /v1/models (default: the folder name)")
    add_quiet(ap)
    return ap


def main(argv: list[str]) -> int:
    args = parse(parser(), argv)
    from eval.models import LoadOptions
    from eval.serve import api_key_from_env, base_url, checkpoint_server

    # the options carry the recipe's model.* names, so they read as a recipe's model section
    server = checkpoint_server(args.checkpoint, LoadOptions.of(args), args.host, args.port, args.name,
                               api_key=api_key_from_env(args.api_key), log_dir=args.log_dir,
                               max_concurrency=args.max_concurrency, max_queue=args.max_queue,
                               max_tokens=args.max_tokens)
    print(f"serving {args.checkpoint} at {base_url(server)} (Ctrl-C or SIGTERM stops)", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
    print("flywheel serve: stopped", flush=True)
    return 0
