"""Importing askq's modules starts nothing: no Redis, no state file; settings are read at start."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("askq/workers", "askq/core", "askq/producers", "askq/config", "askq/cli")


def _modules() -> list[str]:
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return found


def _redis_servers() -> set[int]:
    pids = set()
    for proc in psutil.process_iter(["name", "cmdline"]):
        try:
            if "redis-server" in (proc.info["name"] or "") or any(
                "redis-server" in part for part in proc.info["cmdline"] or []
            ):
                pids.add(proc.pid)
        except psutil.Error:
            continue
    return pids


def test_importing_every_module_starts_no_redis_and_writes_no_state(tmp_path: Path) -> None:
    modules = _modules()
    assert "askq.workers.chain" in modules and "askq.workers.celeryapp" in modules and "askq.workers" in modules
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASKQ_")} | {"ASKQ_VAR_DIR": str(tmp_path)}
    before = _redis_servers()
    code = "import importlib, sys\nfor name in sys.argv[1:]:\n    importlib.import_module(name)\nprint('imported')"
    out = subprocess.run([sys.executable, "-c", code, *modules], env=env, cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    ours = [psutil.Process(pid) for pid in _redis_servers() - before]
    ours = [p for p in ours if str(tmp_path) in " ".join(p.cmdline())]
    for proc in ours:  # clean up what a failing run left behind (only servers of this var_dir)
        proc.kill()
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "imported"
    assert not (tmp_path / "redis.json").exists(), "an import started the embedded Redis"
    assert not (tmp_path / "redis").exists()
    assert not ours, "an import started a redis-server"
