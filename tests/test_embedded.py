"""The embedded Redis: askq processes started at the same moment share one server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import redis


def test_concurrent_processes_agree_on_one_embedded_redis(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASKQ_")} | {"ASKQ_VAR_DIR": str(tmp_path)}
    procs = [
        subprocess.Popen([sys.executable, "-m", "askq", "redis", "url"], env=env, stdout=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    try:
        urls = {proc.communicate(timeout=60)[0].strip() for proc in procs}
        assert len(urls) == 1
        (url,) = urls
        assert url.startswith("redis://127.0.0.1:")
        assert redis.Redis.from_url(url).ping()
        assert (tmp_path / "redis" / "appendonly.aof").exists() or (tmp_path / "redis" / "appendonlydir").exists()
    finally:
        out = subprocess.run([sys.executable, "-m", "askq", "redis", "stop"], env=env, capture_output=True, text=True)
        assert out.stdout.strip() == "stopped"
