#!/usr/bin/env python3
"""aim-engine-sim: a small stand-in for vLLM's OpenAI-compatible server, for the tests that exercise
the chart, the rules, the dashboards, the alerts, autoscaling and tune's workflow rather than the
engine. It serves what those read, the way vLLM 0.32 serves it:

- `POST /v1/completions` and `POST /v1/chat/completions`, streamed (server-sent events, with the
  trailing usage chunk `stream_options.include_usage` asks for) or not; `GET /v1/models`,
  `GET /health`, `GET /version`, `GET /metrics`;
- an engine loop like vLLM's scheduler: requests wait in a queue (`vllm:num_requests_waiting`),
  at most `--max-num-seqs` run at a time (`vllm:num_requests_running`); a request admitted
  produces its first token `--ttft-ms` later and one more every step of `--itl-ms` (plus
  `--itl-per-seq-ms` for each running sequence: a bigger batch steps slower); a KV cache of
  `--kv-cache-tokens` tokens whose use is `vllm:kv_cache_usage_perc` (the newest running request is
  preempted back to the queue when it overflows, `vllm:num_preemptions_total`), with a prefix
  cache over 16-token blocks of the prompt (`vllm:prefix_cache_queries_total` / `_hits_total`);
- `/metrics` with vLLM's family names, label names (`model_name`, `engine`, `finished_reason`)
  and histogram buckets, for the families the chart's rules and dashboards read. A conformance test
  (tests/e2e) checks every family, label and bucket it exports against the real engine's.

    aim-engine-sim serve MODEL [--host H] [--port P] [--served-model-name N] [--max-num-seqs N]
        [--max-model-len N] [--ttft-ms MS] [--itl-ms MS] [--itl-per-seq-ms MS] [--max-waiting N]
        [--kv-cache-tokens N] [--output-tokens N] [vLLM engine arguments...]

Every vLLM engine argument aim-engine knows (recipes/vllm/engine-args.yaml) is accepted with
vLLM's syntax and checked against its type and range, so the chart's command line works unchanged;
any other flag, or a bad value, exits 2 with one line. Prompt tokens are counted as vLLM would
for token-id prompts, and as one token per four bytes of text otherwise (the simulator has no
tokenizer). `--max-waiting 0` (the default) queues without bound, as vLLM does; above it a
request gets 503. The benchmark's provenance stays honest: /version names the simulator.

It runs in the vLLM CPU image (`aim-engine-sim`, on vLLM's own FastAPI, uvicorn and
prometheus_client) and, for tests on loopback, with .tools/vllm-venv/bin/python."""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import hashlib
import json
import math
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

# vLLM's own server stack, from its venv (the image's /opt/vllm, or .tools/vllm-venv on loopback)
import uvicorn
import yaml
from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

VERSION = "1"
SIMULATES = "vLLM 0.32.0"
BLOCK_TOKENS = 16
# vLLM 0.32's bucket bounds (vllm/v1/metrics/loggers.py), for the histograms the simulator exports.
TTFT_BUCKETS = [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0,
                80.0, 160.0, 640.0, 2560.0]  # fmt: skip
ITL_BUCKETS = [0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0]
LATENCY_BUCKETS = [0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0,
                   960.0, 1920.0, 7680.0]  # fmt: skip
WORDS = ("the", " model", " is", " a", " simulator", " of", " an", " engine", ",", " not", " a", " language", " model", ".")


class UsageError(Exception):
    pass


class OneLineParser(argparse.ArgumentParser):
    """Bad flags exit 2 with one line (argparse would print its usage first)."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"aim-engine-sim: error: {message}\n")
        raise SystemExit(2)


def _engine_args_file() -> Path:
    here = Path(__file__).resolve().parent
    for candidate in (here / "engine-args.yaml", here.parent.parent / "recipes" / "vllm" / "engine-args.yaml"):
        if candidate.exists():
            return candidate
    raise SystemExit("aim-engine-sim: error: engine-args.yaml not found beside the simulator")


def _bounded(kind: type, lo: float | None, hi: float | None, choices: Sequence[Any] | None, flag: str) -> Any:
    def parse(text: str) -> Any:
        try:
            value = json.loads(text) if kind is dict else kind(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(f"takes a {kind.__name__}, not {text!r}") from e
        if choices is not None and value not in choices:
            raise argparse.ArgumentTypeError(f"must be one of {', '.join(map(str, choices))}, not {text!r}")
        if lo is not None and value < lo:
            raise argparse.ArgumentTypeError(f"must be at least {lo:g}, not {text}")
        if hi is not None and value > hi:
            raise argparse.ArgumentTypeError(f"must be at most {hi:g}, not {text}")
        return value

    return parse


def build_parser(engine_args: Path) -> OneLineParser:
    p = OneLineParser(prog="aim-engine-sim", add_help=True, allow_abbrev=False)
    sub = p.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    s = sub.add_parser("serve", allow_abbrev=False, help="serve MODEL")
    s.add_argument("model")
    s.add_argument("--host", default="0.0.0.0")
    s.add_argument("--port", type=_bounded(int, 1, 65535, None, "--port"), default=8000)
    s.add_argument("--enable-log-requests", action="store_true")
    s.add_argument("--ttft-ms", type=_bounded(float, 0, 600_000, None, "--ttft-ms"), default=20.0)
    s.add_argument("--itl-ms", type=_bounded(float, 0.1, 60_000, None, "--itl-ms"), default=10.0)
    s.add_argument("--itl-per-seq-ms", type=_bounded(float, 0, 60_000, None, "--itl-per-seq-ms"), default=0.0)
    s.add_argument("--max-waiting", type=_bounded(int, 0, None, None, "--max-waiting"), default=0)
    s.add_argument("--kv-cache-tokens", type=_bounded(int, 1, None, None, "--kv-cache-tokens"), default=None)
    s.add_argument("--output-tokens", type=_bounded(int, 1, None, None, "--output-tokens"), default=64,
                   help="tokens generated when a request sets no max_tokens")  # fmt: skip
    specs = yaml.safe_load(engine_args.read_text())["args"]
    kinds: dict[str, type] = {"int": int, "float": float, "str": str, "json": dict}
    for name, spec in specs.items():
        flag = "--" + name.replace("_", "-")
        if spec["type"] == "bool":
            s.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=None)
        else:
            parse = _bounded(kinds[spec["type"]], spec.get("min"), spec.get("max"), spec.get("choices"), flag)
            s.add_argument(flag, dest=name, default=None, type=parse)
    return p


@dataclass(frozen=True)
class Settings:
    model: str
    served_name: str
    host: str
    port: int
    max_num_seqs: int
    max_model_len: int
    ttft: float
    itl: float
    itl_per_seq: float
    max_waiting: int
    kv_cache_tokens: int
    default_output_tokens: int
    shutdown_timeout: int
    keep_alive: int
    log_requests: bool


def settings_from(argv: Sequence[str]) -> Settings:
    a = build_parser(_engine_args_file()).parse_args(argv)
    max_num_seqs = a.max_num_seqs or 256
    max_model_len = a.max_model_len or 2048
    try:
        keep_alive = int(os.environ.get("VLLM_HTTP_TIMEOUT_KEEP_ALIVE", "5"))
    except ValueError:
        sys.stderr.write("aim-engine-sim: error: VLLM_HTTP_TIMEOUT_KEEP_ALIVE must be a whole number of seconds\n")
        raise SystemExit(2) from None
    return Settings(
        model=a.model,
        served_name=a.served_model_name or a.model,
        host=a.host,
        port=a.port,
        max_num_seqs=max_num_seqs,
        max_model_len=max_model_len,
        ttft=a.ttft_ms / 1000,
        itl=a.itl_ms / 1000,
        itl_per_seq=a.itl_per_seq_ms / 1000,
        max_waiting=a.max_waiting,
        kv_cache_tokens=a.kv_cache_tokens or max_num_seqs * max_model_len // 2,
        default_output_tokens=a.output_tokens,
        shutdown_timeout=a.shutdown_timeout or 0,
        keep_alive=keep_alive,
        log_requests=a.enable_log_requests,
    )


class Metrics:
    """vLLM's families, with its names, labels and buckets (those the chart reads)."""

    def __init__(self, model: str) -> None:
        disable_created_metrics()
        self.registry = CollectorRegistry()
        labels = ["model_name", "engine"]
        values = {"model_name": model, "engine": "0"}
        r = self.registry

        def gauge(name: str, doc: str) -> Any:
            return Gauge(name, doc, labels, registry=r, multiprocess_mode="mostrecent").labels(**values)

        def counter(name: str, doc: str) -> Any:
            return Counter(name, doc, labels, registry=r).labels(**values)

        def hist(name: str, doc: str, buckets: list[float]) -> Any:
            return Histogram(name, doc, labels, buckets=buckets, registry=r).labels(**values)

        self.running = gauge("vllm:num_requests_running", "Number of requests in model execution batches.")
        self.waiting = gauge("vllm:num_requests_waiting", "Number of requests waiting to be processed.")
        self.kv_usage = gauge("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.")
        self.prefix_queries = counter("vllm:prefix_cache_queries", "Prefix cache queries, in terms of number of queried tokens.")
        self.prefix_hits = counter("vllm:prefix_cache_hits", "Prefix cache hits, in terms of number of cached tokens.")
        self.preemptions = counter("vllm:num_preemptions", "Cumulative number of preemption from the engine.")
        self.prompt_tokens = counter("vllm:prompt_tokens", "Number of prefill tokens processed.")
        self.generation_tokens = counter("vllm:generation_tokens", "Number of generation tokens processed.")
        success = Counter(
            "vllm:request_success", "Count of successfully processed requests.", [*labels, "finished_reason"], registry=r
        )
        self.success = {reason: success.labels(**values, finished_reason=reason) for reason in ("stop", "length", "abort")}
        self.ttft = hist("vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.", TTFT_BUCKETS)
        self.itl = hist("vllm:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.", ITL_BUCKETS)
        self.e2e = hist("vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.", LATENCY_BUCKETS)
        self.queue = hist(
            "vllm:request_queue_time_seconds", "Histogram of time spent in WAITING phase for request.", LATENCY_BUCKETS
        )
        self.inference = hist(
            "vllm:request_inference_time_seconds", "Histogram of time spent in RUNNING phase for request.", LATENCY_BUCKETS
        )
        self.prefill = hist(
            "vllm:request_prefill_time_seconds", "Histogram of time spent in PREFILL phase for request.", LATENCY_BUCKETS
        )
        self.decode = hist(
            "vllm:request_decode_time_seconds", "Histogram of time spent in DECODE phase for request.", LATENCY_BUCKETS
        )


@dataclass(eq=False)
class Request:
    prompt_tokens: int
    blocks: list[bytes]
    max_tokens: int
    arrived: float
    # (token, finish reason: None until the last one), then None
    out: asyncio.Queue[tuple[str, str | None] | None] = field(default_factory=asyncio.Queue)
    admitted: float | None = None
    next_due: float = 0.0
    first_at: float | None = None
    last_at: float | None = None
    generated: int = 0
    finish_reason: str | None = None


class Engine:
    """vLLM's scheduler in miniature: a waiting queue, at most max_num_seqs running, a KV cache."""

    def __init__(self, s: Settings, metrics: Metrics) -> None:
        self.s = s
        self.m = metrics
        self.waiting: collections.deque[Request] = collections.deque()
        self.running: list[Request] = []
        self.wake = asyncio.Event()
        self.prefix: collections.OrderedDict[bytes, None] = collections.OrderedDict()
        self.prefix_capacity = max(1, s.kv_cache_tokens // BLOCK_TOKENS)

    def submit(self, req: Request) -> None:
        # Those the next step admits (free run slots) are not waiting: only the rest count.
        free = max(0, self.s.max_num_seqs - len(self.running))
        if self.s.max_waiting and len(self.waiting) - free >= self.s.max_waiting:
            raise UsageError("overloaded")
        self.waiting.append(req)
        self.m.waiting.set(len(self.waiting))
        self.wake.set()

    def abort(self, req: Request) -> None:
        if req in self.waiting:
            self.waiting.remove(req)
        elif req in self.running:
            self.running.remove(req)
        else:
            return
        req.finish_reason = "abort"
        self.m.success["abort"].inc()
        self._gauges()

    def _tokens_in_use(self) -> int:
        return sum(r.prompt_tokens + r.generated for r in self.running)

    def _gauges(self) -> None:
        self.m.running.set(len(self.running))
        self.m.waiting.set(len(self.waiting))
        self.m.kv_usage.set(min(1.0, self._tokens_in_use() / self.s.kv_cache_tokens))

    def _kv_full(self) -> bool:
        return (
            bool(self.running)
            and bool(self.waiting)
            and self._tokens_in_use() + self.waiting[0].prompt_tokens > self.s.kv_cache_tokens
        )

    def _admit(self, now: float) -> None:
        while self.waiting and len(self.running) < self.s.max_num_seqs:
            if self._kv_full():
                break  # no room in the KV cache: it waits, as vLLM's scheduler keeps it waiting
            req = self.waiting.popleft()
            if req.admitted is None:
                req.admitted = now
                hits = 0
                for b in req.blocks:
                    if b not in self.prefix:
                        break
                    hits += 1
                cached = min(req.prompt_tokens, hits * BLOCK_TOKENS)
                self.m.prefix_queries.inc(req.prompt_tokens)
                self.m.prefix_hits.inc(cached)
                for b in req.blocks:
                    self.prefix[b] = None
                    self.prefix.move_to_end(b)
                while len(self.prefix) > self.prefix_capacity:
                    self.prefix.popitem(last=False)
                self.m.prompt_tokens.inc(req.prompt_tokens)
                # the prefill: the cached part of the prompt costs (almost) nothing
                req.next_due = now + self.s.ttft * max(0.1, 1.0 - cached / max(1, req.prompt_tokens))
            else:
                req.next_due = now + self.s.ttft  # re-admitted after a preemption: its prefill again
            self.running.append(req)

    def _preempt(self) -> None:
        while len(self.running) > 1 and self._tokens_in_use() > self.s.kv_cache_tokens:
            victim = self.running.pop()
            self.waiting.appendleft(victim)
            self.m.preemptions.inc()

    def _finish(self, req: Request, now: float) -> None:
        req.finish_reason = "length"
        self.running.remove(req)
        self.m.success["length"].inc()
        admitted = req.admitted if req.admitted is not None else now
        first = req.first_at if req.first_at is not None else now
        self.m.e2e.observe(now - req.arrived)
        self.m.queue.observe(admitted - req.arrived)
        self.m.inference.observe(now - admitted)
        self.m.prefill.observe(first - admitted)
        self.m.decode.observe(now - first)
        req.out.put_nowait(None)

    async def run(self) -> None:
        while True:
            now = time.monotonic()
            self._admit(now)
            step = self.s.itl + self.s.itl_per_seq * len(self.running)
            for req in list(self.running):
                if now < req.next_due:
                    continue
                if req.first_at is None:
                    req.first_at = now
                    self.m.ttft.observe(now - req.arrived)
                else:
                    self.m.itl.observe(now - (req.last_at if req.last_at is not None else now))
                req.last_at = now
                req.next_due = now + step
                req.generated += 1
                self.m.generation_tokens.inc()
                last = req.generated >= req.max_tokens
                req.out.put_nowait((WORDS[(req.generated - 1) % len(WORDS)], "length" if last else None))
                if last:
                    self._finish(req, now)
            self._preempt()
            self._gauges()
            if self.waiting and len(self.running) < self.s.max_num_seqs and not self._kv_full():
                await asyncio.sleep(0)  # finished sequences made room: admit the next at once
                continue
            self.wake.clear()
            timeout = max(0.0005, min(r.next_due for r in self.running) - time.monotonic()) if self.running else None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout)


def count_prompt(prompt: Any) -> tuple[int, list[bytes]]:
    """Tokens in a prompt (token ids exactly; text at four bytes a token) and its 16-token block hashes."""
    if isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
        data = b",".join(str(t).encode() for t in prompt)
        n = len(prompt)
        per_block = max(1, len(data) * BLOCK_TOKENS // max(1, n))
    elif isinstance(prompt, str):
        data = prompt.encode()
        n = max(1, math.ceil(len(data) / 4))
        per_block = 4 * BLOCK_TOKENS
    else:
        raise UsageError("prompt must be a string or a list of token ids")
    blocks, h = [], hashlib.sha256()
    for i in range(0, len(data) - per_block + 1, per_block):
        h.update(data[i : i + per_block])
        blocks.append(h.copy().digest())
    return n, blocks


def _error(status: int, message: str, kind: str, param: str | None = None) -> Any:
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": status}}, status_code=status)


def create_app(s: Settings) -> Any:
    metrics = Metrics(s.served_name)
    engine = Engine(s, metrics)
    created = int(time.time())

    @contextlib.asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[None]:
        task = asyncio.get_running_loop().create_task(engine.run())
        yield
        task.cancel()

    app = FastAPI(title="aim-engine-sim", lifespan=lifespan)

    # Starlette routes (the raw request): what the handlers read is the JSON body, as vLLM's do.
    async def health(_http: Any) -> Any:
        return Response(status_code=200)

    async def version(_http: Any) -> Any:
        return JSONResponse({"version": f"aim-engine-sim {VERSION} (simulating {SIMULATES})"})

    async def prom(_http: Any) -> Any:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def models(_http: Any) -> Any:
        card = {"id": s.served_name, "object": "model", "created": created, "owned_by": "vllm", "root": s.model,
                "parent": None, "max_model_len": s.max_model_len}  # fmt: skip
        return JSONResponse({"object": "list", "data": [card]})

    async def serve(http: Any, chat: bool) -> Any:
        try:
            body = await http.json()
        except ValueError:
            return _error(400, "the request body is not JSON", "BadRequestError")
        if not isinstance(body, dict):
            return _error(400, "the request body must be a JSON object", "BadRequestError")
        if body.get("model", s.served_name) != s.served_name:
            return _error(404, f"The model `{body.get('model')}` does not exist.", "NotFoundError", "model")
        try:
            if chat:
                messages = body.get("messages")
                if not isinstance(messages, list) or not messages:
                    raise UsageError("messages must be a non-empty list")
                text = "".join(str(m.get("content", "")) for m in messages if isinstance(m, dict))
                n_prompt, blocks = count_prompt(text or " ")
            else:
                n_prompt, blocks = count_prompt(body.get("prompt"))
            max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
            if max_tokens is None:
                max_tokens = min(s.default_output_tokens, max(1, s.max_model_len - n_prompt))
            if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
                raise UsageError("max_tokens must be at least 1")
            if int(body.get("n", 1)) != 1:
                raise UsageError("the simulator serves n=1 only")
        except (UsageError, ValueError, TypeError) as e:
            return _error(400, str(e), "BadRequestError")
        if n_prompt + max_tokens > s.max_model_len:
            return _error(
                400,
                f"This model's maximum context length is {s.max_model_len} tokens. However, you requested "
                f"{n_prompt + max_tokens} tokens ({n_prompt} in the messages, {max_tokens} in the completion).",
                "BadRequestError",
            )
        req = Request(prompt_tokens=n_prompt, blocks=blocks, max_tokens=max_tokens, arrived=time.monotonic())
        try:
            engine.submit(req)
        except UsageError:
            return _error(503, "the engine's waiting queue is full", "ServiceUnavailableError")
        rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex
        obj = "chat.completion" if chat else "text_completion"
        stamp = int(time.time())

        def usage() -> dict[str, int]:
            return {"prompt_tokens": n_prompt, "total_tokens": n_prompt + req.generated, "completion_tokens": req.generated}

        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

            async def events() -> AsyncIterator[bytes]:
                try:
                    if chat:
                        head = {
                            "index": 0,
                            "delta": {"role": "assistant", "content": ""},
                            "logprobs": None,
                            "finish_reason": None,
                        }
                        yield _sse(
                            {"id": rid, "object": obj + ".chunk", "created": stamp, "model": s.served_name, "choices": [head]}
                        )
                    while (item := await req.out.get()) is not None:
                        token, reason = item
                        if chat:
                            choice: dict[str, Any] = {
                                "index": 0,
                                "delta": {"content": token},
                                "logprobs": None,
                                "finish_reason": reason,
                            }
                        else:
                            choice = {"index": 0, "text": token, "logprobs": None, "finish_reason": reason, "stop_reason": None}
                        kind = obj + ".chunk" if chat else obj
                        yield _sse({"id": rid, "object": kind, "created": stamp, "model": s.served_name, "choices": [choice]})
                    if include_usage:
                        kind = obj + ".chunk" if chat else obj
                        yield _sse(
                            {"id": rid, "object": kind, "created": stamp, "model": s.served_name, "choices": [], "usage": usage()}
                        )
                    yield b"data: [DONE]\n\n"
                finally:
                    if req.finish_reason is None:
                        engine.abort(req)

            return StreamingResponse(events(), media_type="text/event-stream")
        try:
            tokens = []
            while (item := await req.out.get()) is not None:
                tokens.append(item[0])
        except asyncio.CancelledError:
            engine.abort(req)
            raise
        text = "".join(tokens)
        if chat:
            choice = {"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None, "finish_reason": "length"}
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": "length", "stop_reason": None}
        return JSONResponse(
            {"id": rid, "object": obj, "created": stamp, "model": s.served_name, "choices": [choice], "usage": usage()}
        )

    async def completions(http: Any) -> Any:
        return await serve(http, chat=False)

    async def chat_completions(http: Any) -> Any:
        return await serve(http, chat=True)

    for path, endpoint, method in (
        ("/health", health, "GET"),
        ("/version", version, "GET"),
        ("/metrics", prom, "GET"),
        ("/v1/models", models, "GET"),
        ("/v1/completions", completions, "POST"),
        ("/v1/chat/completions", chat_completions, "POST"),
    ):
        app.add_route(path, endpoint, methods=[method])

    return app


def _sse(obj: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


def main(argv: Sequence[str] | None = None) -> int:
    s = settings_from(list(sys.argv[1:] if argv is None else argv))
    print(
        f"aim-engine-sim {VERSION} serving {s.served_name} on {s.host}:{s.port} (simulating {SIMULATES}: max_num_seqs "
        f"{s.max_num_seqs}, max_model_len {s.max_model_len}, TTFT {s.ttft * 1000:g} ms, ITL {s.itl * 1000:g} ms"
        f" + {s.itl_per_seq * 1000:g} ms per running sequence, KV cache {s.kv_cache_tokens} tokens)",
        flush=True,
    )
    uvicorn.run(
        create_app(s),
        host=s.host,
        port=s.port,
        log_level="info" if s.log_requests else "warning",
        access_log=s.log_requests,
        timeout_keep_alive=s.keep_alive,
        timeout_graceful_shutdown=s.shutdown_timeout,  # vLLM's default 0: abort what is in flight
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
