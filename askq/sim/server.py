"""The simulator's HTTP server: OpenAI chat completions plus `/_sim/*` control endpoints."""

import argparse
import asyncio
import hmac
import json
import signal
import sys
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from askq.sim import control, hostile, replies
from askq.sim.answers import answer_for, count_tokens
from askq.sim.faults import FaultSpec, SimConfig, describe_errors, pick_fault
from askq.sim.state import STATE, SimState

# Requests whose body cannot be read as a chat request are counted under this name.
INVALID_MODEL = "<invalid>"


def _text_of(content: object) -> str:
    """Return the text of a message's content, either a string or a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def _parse_request(raw: bytes) -> tuple[str, list[str], str, str | None]:
    """Read model, message texts and question from a body; the last item is an error, if any."""
    try:
        body = json.loads(raw)
    except ValueError:
        return INVALID_MODEL, [], "", "Request body is not valid JSON."
    if not isinstance(body, dict):
        return INVALID_MODEL, [], "", "Request body must be a JSON object."
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return INVALID_MODEL, [], "", "`model` is required."
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
        return model, [], "", "`messages` must be a non-empty list of message objects."
    if body.get("stream"):
        return model, [], "", "Streaming is not supported by the simulator."
    texts = [_text_of(m.get("content")) for m in messages]
    question = next(
        (t for m, t in zip(reversed(messages), reversed(texts), strict=True) if m.get("role") == "user"), ""
    )
    return model, texts, question, None


def _presented_key(request: web.Request) -> str:
    """The API key the caller sent as its bearer token ("" when there is none)."""
    scheme, _, key = request.headers.get("Authorization", "").partition(" ")
    return key.strip() if scheme.lower() == "bearer" else ""


def _authorized(request: web.Request, config: SimConfig) -> bool:
    """Tell whether the request carries the required bearer key (always, if none is set)."""
    if config.require_key is None:
        return True
    expected = "Bearer " + config.require_key.get_secret_value()
    return hmac.compare_digest(request.headers.get("Authorization", "").encode(), expected.encode())


async def chat_completions(request: web.Request) -> web.StreamResponse:
    """Answer `POST /v1/chat/completions`, injecting the fault the configuration picks."""
    state = request.app[STATE]
    model, texts, question, problem = _parse_request(await request.read())
    state.stats.arrived(model)
    if model != INVALID_MODEL:
        state.saw_model(model)
    # Decided before any await, so a cancelled (disconnected) request is still counted.
    outcome = "invalid_request"
    try:
        if problem is not None:
            return replies.error_body(400, problem, "invalid_request_error", None)
        config = state.config
        if not _authorized(request, config):
            outcome = "unauthorized"
            # Echoes the key presented (as some providers do); the expected key never appears.
            return replies.auth_error(_presented_key(request))
        context_chars = sum(len(t) for t in texts)
        fault = pick_fault(config, model, question, context_chars, state.stats.elapsed(), state.fault_rng)
        outcome = "ok" if fault is None else fault.kind
        return await _answer(request, state, model, texts, question, fault)
    finally:
        state.stats.finished(model, outcome)


async def _answer(
    request: web.Request,
    state: SimState,
    model: str,
    texts: list[str],
    question: str,
    fault: FaultSpec | None,
) -> web.StreamResponse:
    """Produce the response for a request whose fault (or lack of one) is decided."""
    kind = fault.kind if fault is not None else "ok"
    # Refusals (rate limit, auth, bad request...) come back at once, as from a
    # real gateway; only server errors happen after the model has "worked".
    if fault is not None and kind in replies.ERROR_KINDS and kind not in ("server_error", "timeout"):
        return replies.fault_error(fault, model, _presented_key(request))
    if fault is not None and kind == "redirect":
        return hostile.redirect(fault)
    if fault is not None and kind == "hang":
        await asyncio.sleep(fault.hang_s)
    delay = state.config.latency_for(model, state.jitter_rng)
    if delay > 0.0:
        await asyncio.sleep(delay)
    if fault is not None and kind in replies.ERROR_KINDS:
        return replies.fault_error(fault, model, _presented_key(request))
    if kind == "reset":
        return await _reset(request)
    prompt_tokens = sum(count_tokens(t) for t in texts)
    answer = answer_for(question, model)
    if fault is not None and kind == "malformed":
        if fault.malformed_as == "empty_object":
            return replies.json_response({})
        if fault.malformed_as == "lone_surrogate":
            return replies.completion(model, answer + "\ud800", prompt_tokens)  # json escapes it as \ud800
        return replies.malformed(model, answer, prompt_tokens)
    if fault is not None and kind == "trickle":
        body = json.dumps(replies.completion_data(model, answer, prompt_tokens, "stop")).encode()
        return await hostile.trickle(request, fault, body)
    if fault is not None and kind == "oversize":
        return await hostile.oversize(request, fault, model, prompt_tokens)
    if fault is not None and kind == "gzip_bomb":
        return await hostile.gzip_bomb(fault, model)
    if kind == "truncated":
        return replies.completion(model, replies.truncate(answer), prompt_tokens, "length")
    if kind == "empty":
        return replies.completion(model, "", prompt_tokens)
    return replies.completion(model, answer, prompt_tokens)


async def redirected_completions(request: web.Request) -> web.Response:
    """Answer at the default target of a `redirect` fault, tagged and counted, so a test can
    prove whether a client followed the redirect."""
    state = request.app[STATE]
    model, texts, question, problem = _parse_request(await request.read())
    state.stats.redirects_followed += 1
    if problem is not None:
        return replies.error_body(400, problem, "invalid_request_error", None)
    return hostile.redirected(model, question, sum(count_tokens(t) for t in texts))


async def _reset(request: web.Request) -> web.StreamResponse:
    """Drop the TCP connection without answering, like a crashed upstream."""
    if request.transport is not None:
        request.transport.abort()
    # With handler cancellation (as `start` sets up) the lost connection
    # cancels this sleep; otherwise the response below goes nowhere.
    await asyncio.sleep(1.0)
    return web.Response(status=502)


def build_app(config: SimConfig) -> web.Application:
    """Build the aiohttp application serving `config`."""
    app = web.Application()
    state = SimState(config=config)
    state.reseed()
    app[STATE] = state
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post(hostile.REDIRECTED_PATH, redirected_completions)
    app.router.add_get("/v1/models", control.list_models)
    app.router.add_get("/_sim/stats", control.get_stats)
    app.router.add_get("/_sim/faults", control.get_faults)
    app.router.add_put("/_sim/faults", control.put_faults)
    app.router.add_post("/_sim/reset", control.post_reset)
    app.router.add_get("/_sim/health", control.health)
    return app


async def start(config: SimConfig, host: str = "127.0.0.1", port: int = 0) -> tuple[web.AppRunner, int]:
    """Start the simulator in the running loop; return its runner and bound port (0 picks one)."""
    runner = web.AppRunner(
        build_app(config),
        access_log=None,  # per-request logging costs more than the request itself
        handler_cancellation=True,  # a client giving up on a hang frees its handler
        shutdown_timeout=1.0,  # hanging requests must not hold up a stop
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, backlog=1024)
        await site.start()
    except BaseException:
        await runner.cleanup()  # e.g. the port is taken: do not leak the runner
        raise
    return runner, int(runner.addresses[0][1])


def load_config(faults: str | None, overrides: dict[str, Any]) -> SimConfig:
    """Build a config from a JSON file path or inline JSON, then apply CLI overrides."""
    raw: dict[str, Any] = {}
    if faults:
        if faults.lstrip().startswith("{"):
            text = faults
        else:
            with open(faults, encoding="utf-8") as f:
                text = f.read()
        loaded = json.loads(text)
        if not isinstance(loaded, dict):
            raise ValueError("fault config must be a JSON object")
        raw = loaded
    raw.update({k: v for k, v in overrides.items() if v is not None})
    return SimConfig.model_validate(raw)


async def _serve(config: SimConfig, host: str, port: int) -> None:
    """Run the simulator until SIGINT or SIGTERM."""
    runner, actual = await start(config, host, port)
    shown = f"[{host}]" if ":" in host else host
    print(f"sim listening on http://{shown}:{actual}/v1", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    """Run the simulator from the command line; return the process exit code."""
    parser = argparse.ArgumentParser(prog="python -m askq.sim", description="OpenAI-compatible LLM simulator.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8700, help="0 picks a free port")
    parser.add_argument("--latency", type=float, help="seconds before each answer")
    parser.add_argument("--jitter", type=float, help="+/- seconds of uniform latency jitter")
    parser.add_argument(
        "--faults", metavar="FILE_OR_JSON", help="fault config: a JSON file path or inline JSON"
    )
    parser.add_argument("--seed", type=int, help="seed of the fault and jitter random draws")
    args = parser.parse_args(argv)
    try:
        config = load_config(
            args.faults, {"latency_s": args.latency, "jitter_s": args.jitter, "seed": args.seed}
        )
    except ValidationError as exc:
        print("sim: bad configuration: " + "; ".join(describe_errors(exc)), file=sys.stderr)
        return 2
    except (OSError, ValueError) as exc:
        print(f"sim: bad configuration: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(_serve(config, args.host, args.port))
    except OSError as exc:  # e.g. the port is taken
        print(f"sim: {exc}", file=sys.stderr)
        return 1
    return 0
