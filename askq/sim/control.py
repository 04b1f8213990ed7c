"""Endpoints that are not the OpenAI API: model listing and the `/_sim/*` controls."""

from aiohttp import web
from pydantic import ValidationError

from askq.sim.faults import SimConfig, describe_errors
from askq.sim.replies import json_response
from askq.sim.state import STATE


async def list_models(request: web.Request) -> web.Response:
    """Answer `GET /v1/models` with the configured models and every name asked for so far."""
    state = request.app[STATE]
    names = sorted(set(state.config.models) | state.seen_models)
    data = [{"id": n, "object": "model", "created": 0, "owned_by": "askq-sim"} for n in names]
    return json_response({"object": "list", "data": data})


async def get_stats(request: web.Request) -> web.Response:
    """Answer `GET /_sim/stats`; `?arrivals=0` leaves out the arrival-time lists."""
    with_arrivals = request.query.get("arrivals", "1") not in ("0", "false", "no")
    return json_response(request.app[STATE].stats.snapshot(with_arrivals))


async def get_faults(request: web.Request) -> web.Response:
    """Answer `GET /_sim/faults` with the current configuration (key masked)."""
    return json_response(request.app[STATE].config.model_dump(mode="json"))


async def put_faults(request: web.Request) -> web.Response:
    """Replace the configuration from the JSON body of `PUT /_sim/faults`."""
    state = request.app[STATE]
    try:
        config = SimConfig.model_validate_json(await request.read())
    except ValidationError as exc:
        return json_response({"error": "invalid fault config", "problems": describe_errors(exc)}, 422)
    state.config = config
    state.reseed()
    return json_response(config.model_dump(mode="json"))


async def post_reset(request: web.Request) -> web.Response:
    """Zero the counters and restart the clock of fault windows (`POST /_sim/reset`)."""
    state = request.app[STATE]
    state.stats.reset()
    state.reseed()
    return json_response({"status": "reset"})


async def health(request: web.Request) -> web.Response:
    """Answer `GET /_sim/health` so launchers can wait for readiness."""
    return json_response({"status": "ok"})
