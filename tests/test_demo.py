"""`askq demo`, small: the whole stack on embedded defaults, as a newcomer runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def test_demo_answers_everything_and_runs_what_compose_runs(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASKQ_")} | {"ASKQ_VAR_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-m", "askq", "demo", "--jobs", "40", "--json"],
                         env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    summary = json.loads(out.stdout)
    assert summary["submitted"] == 40
    assert summary["succeeded"] + summary["dead"] == 40
    assert summary["lost"] == 0
    assert summary["duplicates"] == 0
    assert sum(summary["by_source"].values()) == summary["succeeded"]
    assert summary["health"] in {"healthy", "warning", "critical"}
    for key in ("retries", "fallbacks", "breaker_opened"):
        assert isinstance(summary[key], int)
    assert "Flower: http://127.0.0.1:" in out.stderr

    # Every askq service in docker-compose.yml is a command the demo itself ran.
    launched = {tuple(cmd[:2]) for cmd in json.loads((tmp_path / "demo" / "launched.json").read_text())}
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    for name, service in compose["services"].items():
        command = service.get("command")
        if isinstance(command, list) and command and command[0] == "askq":
            assert tuple(command[:2]) in launched, f"compose service {name} runs {command[:2]}, the demo never does"
