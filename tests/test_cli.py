"""The askq command line: bad arguments get one clear line naming the option, never a traceback."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from askq.cli import build_parser, main
from config.settings import Settings
from core.errors import InvalidJobError
from core.job import SUBMIT_FIELDS
from producers.cli import read_jobs_file
from producers.client import Client

ROOT = Path(__file__).resolve().parent.parent


def run_main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run `askq ARGV` in process; argparse's own refusals exit through SystemExit."""
    try:
        code = main(argv)
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    ("metadata", "problem"),
    [
        ("{bad", "--metadata: not valid JSON (Expecting property name enclosed in double quotes"),
        ("[1, 2]", "--metadata: expected a JSON object such as '{\"team\": \"billing\"}', got an array"),
        ('"billing"', "got a string"),
        ("7", "got a number"),
    ],
)
def test_submit_refuses_bad_metadata_with_one_clear_line(
    metadata: str, problem: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_main(["submit", "hi", "--metadata", metadata], capsys)
    assert code == 2
    assert err.startswith("askq: error: --metadata: ") and problem in err, err
    assert "Traceback" not in err and out == ""


def test_bad_metadata_from_a_real_shell_is_one_line_and_exit_2(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "ASKQ_VAR_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-m", "askq", "submit", "hi", "--metadata", "{bad"],
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
    assert out.returncode == 2
    assert out.stderr.splitlines() == [
        "askq: error: --metadata: not valid JSON (Expecting property name enclosed in double quotes: "
        "line 1 column 2 (char 1))"
    ]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["demo", "--jobs", "-3"], "argument --jobs: must be at least 1, got -3"),
        (["demo", "--workers", "0"], "argument --workers: must be at least 1, got 0"),
        (["demo", "--jobs", "many"], "argument --jobs: expected a whole number, got 'many'"),
        (["bench", "--concurrency", "0"], "argument --concurrency: must be at least 1, got 0"),
        (["chaos", "--jobs", "0"], "argument --jobs: must be at least 1, got 0"),
        (["dlq", "list", "--limit", "0"], "argument --limit: must be at least 1, got 0"),
    ],
)
def test_counts_must_be_positive(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_main(argv, capsys)
    assert code == 2
    assert message in err, err
    assert "Traceback" not in err


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def test_every_dlq_command_and_argument_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    dlq = _subparsers(build_parser())["dlq"]
    commands = _subparsers(dlq)
    assert set(commands) == {"list", "show", "replay", "purge"}
    missing = [f"dlq {name} {action.dest}" for name, sub in commands.items() for action in sub._actions
               if not action.help]
    assert missing == []
    code, out, _ = run_main(["dlq", "--help"], capsys)
    assert code == 0
    for text in ("list dead letters", "show one dead letter", "re-enqueue dead jobs", "delete dead letters"):
        assert text in out
    code, out, _ = run_main(["dlq", "replay", "--help"], capsys)
    assert code == 0 and "replay every dead letter" in out and "the dead letter to replay" in out


def test_client_cli_file_and_api_allow_the_same_job_fields(
    tmp_path: Path, settings: Settings, r: redis.Redis
) -> None:
    assert set(SUBMIT_FIELDS) == {"question", "context", "idempotency_key", "metadata"}
    allowed = str(sorted(SUBMIT_FIELDS))
    path = tmp_path / "jobs.jsonl"
    path.write_text('{"question": "hi", "colour": "red"}\n')
    with pytest.raises(InvalidJobError, match="unknown field") as from_file:
        read_jobs_file(path)
    assert allowed in str(from_file.value)
    client = Client(settings)
    with pytest.raises(InvalidJobError, match="unknown field") as from_client:
        client.submit_many([{"question": "hi", "colour": "red"}])
    assert allowed in str(from_client.value)
    assert r.llen(settings.queue) == 0
    client.close()
