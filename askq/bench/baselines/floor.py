"""Baseline (c), the floor: the least a Python process does per job, no Celery, no LangChain.

One asyncio loop per process: pop a message askq's producers build from the bench's Redis
list (RPOP with a count when several slots are free, else a blocking BRPOP), POST the same chat
request to the simulator through one reused aiohttp session, and write the job's timing record
(its result) with one round trip. No lease, no ack, no retry, no bookkeeping: the physical
reference askq's CPU per job is measured against.

Start: `python -m askq.bench.baselines.floor --concurrency 200` (BENCH_* variables as for the others).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import signal
import time
from typing import Any

import aiohttp
import redis.asyncio as aredis

from askq.bench.baselines import SYSTEM, done_key, env, ready_key


async def answer(session: aiohttp.ClientSession, url: str, r: aredis.Redis, done: str, raw: bytes) -> None:
    started = time.time()
    envelope = json.loads(raw)
    job = json.loads(base64.b64decode(envelope["body"]))[1]["job"]
    request = {"model": "primary",
               "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": job["question"]}]}
    async with session.post(url, json=request) as response:
        reply = await response.json()
    ok = bool(reply["choices"][0]["message"]["content"])
    entry = {"id": job.get("id"), "created": job.get("created"), "started": started,
             "finished": time.time(), "ok": ok}
    await r.rpush(done, json.dumps(entry))


async def consume(concurrency: int) -> None:
    queue = env("BENCH_QUEUE")
    url = env("BENCH_SIM_URL").rstrip("/") + "/chat/completions"
    # One connection per slot at most (askq's workers size their pool the same way), waited for, not refused.
    r = aredis.Redis(connection_pool=aredis.BlockingConnectionPool.from_url(env("BENCH_REDIS_URL"),
                                                                           max_connections=concurrency))
    # The fetch loop has its own connection: a blocking pop must not hold one the answers need.
    fetcher = aredis.Redis.from_url(env("BENCH_REDIS_URL"))
    slots = asyncio.Semaphore(concurrency)
    running: set[asyncio.Task[None]] = set()
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, headers={"Authorization": "Bearer sk-bench"}) as session:

        def done(task: asyncio.Task[None]) -> None:
            running.discard(task)
            slots.release()

        def start(raw: bytes) -> None:
            task = asyncio.create_task(answer(session, url, r, done_key(queue), raw))
            running.add(task)
            task.add_done_callback(done)

        await r.sadd(ready_key(queue), os.getpid())
        while True:
            await slots.acquire()
            free = 1
            while not slots.locked() and free < concurrency:  # take every free slot in one pop
                await slots.acquire()
                free += 1
            got: Any = await fetcher.rpop(queue, free)
            raws: list[bytes] = list(got or [])
            if not raws:
                popped: Any = await fetcher.brpop([queue], timeout=1)
                raws = [popped[1]] if popped else []
            for raw in raws:
                start(raw)
            for _ in range(free - len(raws)):
                slots.release()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=200)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    asyncio.run(consume(args.concurrency))


if __name__ == "__main__":
    main()
