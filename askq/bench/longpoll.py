"""`askq bench --longpoll`: many callers long-polling the HTTP API at once, and the probes meanwhile.

A real `askq api` (uvicorn) on an embedded Redis gets C queued jobs (no worker runs, so every
poll waits its full `wait`), then C concurrent `GET /v1/jobs/{id}/result?wait=W` from a separate
process on raw sockets (a light client, so the figures are the server's). While they wait,
/healthz is asked every 100 ms. Reported: how long each long-poll took beyond W, and the probe
latencies. Wanted: every long-poll back within W + 1 s; probes within 100 ms.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from askq.bench.measure import wait_until
from askq.config.settings import load_settings
from askq.core.connection import connect
from askq.core.redisserver import free_port
from askq.core.stats import percentile
from askq.errors import BenchError
from askq.producers.client import Client
from askq.stack import Stack

TOKEN = "bench-longpoll-token"
console = Console(stderr=True)


async def _one(port: int, job_id: str, wait_s: float) -> tuple[int, float]:
    """One long-poll on its own connection: (status, seconds taken); status 0 when it failed."""
    t0 = time.monotonic()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"GET /v1/jobs/{job_id}/result?wait={wait_s} HTTP/1.1\r\nHost: bench\r\n"
                     f"Authorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        reply = await reader.read()
        writer.close()
        status = int(reply.split(b" ", 2)[1]) if reply.startswith(b"HTTP/1.1 ") else 0
    except (OSError, ValueError):
        status = 0
    return status, time.monotonic() - t0


async def _callers(port: int, ids: list[str], wait_s: float) -> list[tuple[int, float]]:
    return list(await asyncio.gather(*(_one(port, i, wait_s) for i in ids)))


def _caller_process(argv: list[str]) -> None:
    """Entry point of the callers' process: port, wait, ids file -> JSON [[status, seconds], ...]."""
    port, wait_s, ids_file = int(argv[0]), float(argv[1]), Path(argv[2])
    ids = ids_file.read_text().split()
    print(json.dumps(asyncio.run(_callers(port, ids, wait_s))))


def _probe(port: int) -> float | None:
    """Seconds a GET /healthz took on a fresh connection (raw socket: no client overhead); None if not 200."""
    t0 = time.monotonic()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
            reply = b""
            while chunk := sock.recv(65536):
                reply += chunk
    except OSError:
        return None
    return time.monotonic() - t0 if reply.startswith(b"HTTP/1.1 200 ") else None


def run_longpoll(callers: int = 2000, wait_s: float = 15.0, as_json: bool = False) -> int:
    base = load_settings()
    with Stack(base.var_dir / "bench-longpoll", env={"ASKQ_LOG_LEVEL": "warning"}) as stack:
        stack.start_redis()
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        api = stack.spawn("api", [sys.executable, "-m", "askq", "api"],
                          stack.env(ASKQ_API__TOKENS=json.dumps([TOKEN]), ASKQ_API__PORT=str(port)))
        try:
            if not wait_until(lambda: _probe(port) is not None, 60):
                raise BenchError(f"askq api did not start; see {stack.var_dir}/api.log")
            client = Client(load_settings(redis_url=stack.redis_url), connect(base, stack.redis_url))
            ids = client.submit_many([{"question": f"Where is order {i}?"} for i in range(callers)])
            client.close()
            ids_file = stack.var_dir / "longpoll-ids.txt"
            ids_file.write_text("\n".join(ids))
            console.print(f"{callers} long-polls with wait={wait_s:g} s against {url} ...")
            argv = [sys.executable, "-m", "askq.bench.longpoll", str(port), str(wait_s), str(ids_file)]
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
            probes: list[float | None] = []
            time.sleep(min(1.0, wait_s / 4))  # let the callers connect, then probe while they wait
            while proc.poll() is None:
                probes.append(_probe(port))
                time.sleep(0.1)
            out, _ = proc.communicate()
        finally:
            api.terminate()
            api.wait(15)
    result = _figures(json.loads(out), probes, callers, wait_s)
    _render(result, Console(width=120, stderr=as_json))
    if as_json:
        print(json.dumps(result, sort_keys=True))
    return 0


def _figures(polls: list[list[float]], probes: list[float | None], callers: int, wait_s: float) -> dict[str, Any]:
    over = [t - wait_s for status, t in polls if status in (200, 202)]
    answered = [p for p in probes if p is not None]
    statuses: dict[str, int] = {}
    for status, _ in polls:
        statuses[str(int(status))] = statuses.get(str(int(status)), 0) + 1
    return {
        "callers": callers, "wait_s": wait_s, "statuses": statuses,
        "longpoll_over_wait_p50_s": round(percentile(over, 50), 3),
        "longpoll_over_wait_p99_s": round(percentile(over, 99), 3),
        "longpoll_over_wait_max_s": round(max(over, default=0.0), 3),
        "probes": len(probes), "probes_failed": len(probes) - len(answered),
        "probe_p50_ms": round(percentile(answered, 50) * 1000, 1),
        "probe_p99_ms": round(percentile(answered, 99) * 1000, 1),
        "probe_max_ms": round(max(answered, default=0.0) * 1000, 1),
        "load_average": [round(x, 2) for x in os.getloadavg()], "cores": os.cpu_count(),
    }


def _render(result: dict[str, Any], out: Console) -> None:
    table = Table(title=f"askq bench --longpoll: {result['callers']} callers, wait={result['wait_s']:g} s")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key, value in result.items():
        if key not in ("callers", "wait_s"):
            table.add_row(key, str(value))
    out.print(table)


if __name__ == "__main__":
    _caller_process(sys.argv[1:])
