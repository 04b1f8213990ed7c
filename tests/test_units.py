"""The systemd unit in `workers/` is one systemd accepts, and runs a command askq really has."""

from __future__ import annotations

import configparser
import shlex
import subprocess
import sys
from pathlib import Path

from askq.cli import parse_command

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "workers" / "askq-worker@.service"


def _service() -> configparser.SectionProxy:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(UNIT.read_text())
    return parser["Service"]


def test_the_worker_unit_runs_askq_worker_and_restarts_it() -> None:
    service = _service()
    argv = shlex.split(service["ExecStart"].replace("%i", "1"))
    assert argv[0] == "/opt/askq/bin/askq"
    args = parse_command(argv[1:])
    assert args.command == "worker" and args.name == "w1"
    assert service["Restart"] == "always" and service["KillSignal"] == "SIGTERM"
    assert "%i" in service["Environment"]  # each instance its own var dir


def test_systemd_verifies_the_unit_without_a_warning(tmp_path: Path) -> None:
    # The unit as installed, with its ExecStart pointing at an askq that exists on this machine.
    askq = str(Path(sys.executable).with_name("askq"))
    text = UNIT.read_text().replace("/opt/askq/bin/askq", askq).replace("User=askq\nGroup=askq\n", "")
    unit = tmp_path / "askq-worker@1.service"
    unit.write_text(text)
    done = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    problems = [line for line in done.stderr.splitlines() if unit.name in line or "Unknown" in line]
    assert done.returncode == 0 and problems == [], done.stderr


def _exec_start_pre_as_sh(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The unit's ExecStartPre as systemd runs it: `$$` unescaped to `$`, then the command line itself."""
    line = _service()["ExecStartPre"].replace("%i", "1").replace("$$", "$")
    return subprocess.run(shlex.split(line), env=env, capture_output=True, text=True, timeout=30)


def test_the_unit_refuses_to_start_a_worker_without_a_redis_url() -> None:
    # Without ASKQ_REDIS_URL each instance would start its own embedded Redis in its own state
    # directory: workers that share no queue with each other or with any producer, and no error.
    base = {"PATH": "/usr/bin:/bin"}
    missing = _exec_start_pre_as_sh(base)
    assert missing.returncode != 0 and "ASKQ_REDIS_URL" in missing.stderr, missing
    assert _exec_start_pre_as_sh(base | {"ASKQ_REDIS_URL": ""}).returncode != 0
    assert _exec_start_pre_as_sh(base | {"ASKQ_REDIS_URL": "redis://10.0.0.5:6379/0"}).returncode == 0
