"""The askq command line: bad arguments get one clear line naming the option, never a traceback."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from askq.cli import build_parser, main
from askq.config.settings import Settings
from askq.core import keys
from askq.core.job import SUBMIT_FIELDS
from askq.core.redisserver import EmbeddedRedis, free_port
from askq.errors import InvalidJobError
from askq.producers.client import Client
from askq.producers.jobsfile import parse_jsonl, read_file, read_jobs_file
from askq.stack import Stack

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
        ("[" * 100_000, "--metadata: not valid JSON (nested too deeply)"),
        ('{"team": "a", "team": "b"}', "--metadata: not valid JSON (field(s) ['team'] given twice)"),
    ],
)
def test_submit_refuses_bad_metadata_with_one_clear_line(
    metadata: str, problem: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_main(["submit", "hi", "--metadata", metadata], capsys)
    assert code == 2
    assert err.startswith("askq: error: --metadata: ") and problem in err, err
    assert "Traceback" not in err and out == ""


def test_metadata_values_are_checked_as_on_every_other_way_in(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_main(["submit", "hi", "--metadata", '{"n": NaN, "deep": {"a": 1}}'], capsys)
    assert code == 2 and out == ""
    assert err == ("askq: error: metadata.n: must be a finite number, got nan; "
                   "metadata.deep: expected a string, number, boolean or null, got an object\n")


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
    assert set(SUBMIT_FIELDS) == {"question", "context", "idempotency_key", "metadata", "callback_url",
                                  "expires_at", "ttl_s"}
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


def _askq(env: dict[str, str], *args: str | bytes) -> subprocess.CompletedProcess[str]:
    """The real `askq` command in a child process (argv may hold bytes a shell would pass)."""
    return subprocess.run([sys.executable, "-m", "askq", *args], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


def _nothing_enqueued(r: redis.Redis, settings: Settings) -> bool:
    return r.llen(settings.queue) == 0 and r.dbsize() == 0


def test_a_bad_line_deep_in_a_file_enqueues_nothing(
    stack: Stack, r: redis.Redis, settings: Settings, tmp_path: Path
) -> None:
    lines = [json.dumps({"question": f"Where is order {i}?"}) for i in range(700)]
    lines[599] = json.dumps({"question": "hi", "context": "abc"})
    path = tmp_path / "jobs.jsonl"
    path.write_text("\n".join(lines) + "\n")
    out = _askq(stack.env(), "submit", "--file", str(path))
    assert out.returncode == 2, out.stderr
    assert out.stderr.splitlines() == [
        f"askq: error: {path}: 1 bad line, nothing was enqueued: "
        "line 600: context: expected a valid list of strings, got a string"
    ]
    assert out.stdout == ""
    assert _nothing_enqueued(r, settings)
    # Fixed, the whole file goes in: one id per line, in order.
    lines[599] = json.dumps({"question": "hi", "context": ["abc"]})
    path.write_text("\n".join(lines) + "\n")
    out = _askq(stack.env(), "submit", "--file", str(path))
    assert out.returncode == 0, out.stderr
    assert len(out.stdout.split()) == 700 and r.llen(settings.queue) == 700


def test_every_bad_line_is_named_up_to_a_cap_with_a_count(
    stack: Stack, r: redis.Redis, settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for key, value in stack.env().items():
        monkeypatch.setenv(key, value)
    bad = [
        '{"question": ',
        '["a list"]',
        '{"question": "hi", "colour": "red"}',
        '{"question": "hi", "context": "abc"}',
        '{"question": "hi", "question": "twice"}',
        '{"question": "hi", "context": null}',
        '{"question": "hi", "metadata": {"n": NaN}}',
        '{"question": "' + "x" * 8001 + '"}',
        '{"question": "a", "idempotency_key": "k"}',
        '{"question": "b", "idempotency_key": "k"}',
        '{"question": "\\ud800"}',
        "[" * 100_000,
    ]
    lines = [json.dumps({"question": f"q{i}"}) for i in range(10)] + bad + [""] + ['{"question": ""}'] * 20
    path = tmp_path / "jobs.jsonl"
    path.write_text("\n".join(lines) + "\n")
    code, out, err = run_main(["submit", "--file", str(path)], capsys)
    assert code == 2 and out == ""
    assert err.startswith(f"askq: error: {path}: 31 bad lines, nothing was enqueued:\n"), err
    listed = [line.strip() for line in err.splitlines()[1:]]
    assert listed[:11] == [
        "line 11: not valid JSON (Expecting value: line 1 column 14 (char 13))",
        'line 12: expected an object (dict) with a "question", got a list',
        "line 13: unknown field(s) ['colour']; allowed: "
        "['callback_url', 'context', 'expires_at', 'idempotency_key', 'metadata', 'question', 'ttl_s']",
        "line 14: context: expected a valid list of strings, got a string",
        "line 15: not valid JSON (field(s) ['question'] given twice)",
        "line 16: context: expected a valid list of strings, got null",
        "line 17: metadata.n: must be a finite number, got nan",
        "line 18: question: 8001 characters, limit is 8000",
        "line 20: idempotency_key: also given to line 19 with a different question or context",
        "line 21: question: not valid UTF-8 text: surrogates not allowed (U+D800 at index 0)",
        "line 22: not valid JSON (nested too deeply)",
    ]
    assert listed[11] == "line 24: question: String should have at least 1 character"
    assert len(listed) == 21 and listed[-1] == "... and 11 more"
    assert _nothing_enqueued(r, settings)


def test_a_file_is_read_as_json_lines_not_as_text_lines(
    stack: Stack, r: redis.Redis, settings: Settings, tmp_path: Path
) -> None:
    # A BOM, CRLF endings, blank lines, and separators that str.splitlines() would cut a line at.
    questions = ["Is\u2028this one line?", "And\x85this?", "Tab\there", "Plain"]
    body = "\r\n".join(json.dumps({"question": q}, ensure_ascii=False) for q in questions)
    path = tmp_path / "jobs.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + body.encode() + b"\r\n\r\n")
    out = _askq(stack.env(), "submit", "--file", str(path))
    assert out.returncode == 0, out.stderr
    ids = out.stdout.split()
    assert len(ids) == 4
    stored = [json.loads(r.hget(f"{keys.job(i)}", "payload") or "{}")["question"] for i in ids]
    assert stored == questions


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"question": "ok"}\n{"question": "caf\xe9"}\n',
         ":2: not valid UTF-8 (byte 0xe9 at byte column 18); save the file as UTF-8; nothing was enqueued"),
        (b"\xff\xfe{\x00", ":1: not valid UTF-8 (byte 0xff at byte column 1)"),
    ],
)
def test_a_file_that_is_not_utf8_gets_one_line_and_exit_2(
    stack: Stack, r: redis.Redis, settings: Settings, tmp_path: Path, content: bytes, message: str
) -> None:
    path = tmp_path / "jobs.jsonl"
    path.write_bytes(content)
    out = _askq(stack.env(), "submit", "--file", str(path))
    assert out.returncode == 2
    assert len(out.stderr.splitlines()) == 1 and out.stderr.startswith(f"askq: error: {path}{message}"), out.stderr
    assert _nothing_enqueued(r, settings)


def test_a_missing_or_unreadable_file_gets_one_line_and_exit_2(stack: Stack, tmp_path: Path) -> None:
    missing = tmp_path / "nope.jsonl"
    for argv, expected in [
        (["submit", "--file", str(missing)],
         f"askq: error: {missing}: cannot read it (No such file or directory); nothing was enqueued"),
        (["submit", "--file", str(tmp_path)],
         f"askq: error: {tmp_path}: cannot read it (Is a directory); nothing was enqueued"),
        (["wait", "--file", str(missing)], f"askq: error: {missing}: cannot read it (No such file or directory)"),
    ]:
        out = _askq(stack.env(), *argv)
        assert (out.returncode, out.stderr.splitlines()) == (2, [expected])
    ids = tmp_path / "ids.txt"
    ids.write_bytes(b"abc\n\xff\n")
    out = _askq(stack.env(), "wait", "--file", str(ids))
    assert out.returncode == 2
    assert out.stderr.splitlines() == [f"askq: error: {ids}:2: not valid UTF-8 (byte 0xff at byte column 1); "
                                       "save the file as UTF-8"]


def test_a_file_over_the_size_or_job_limit_is_refused_before_it_is_parsed(tmp_path: Path) -> None:
    path = tmp_path / "big.jsonl"
    path.write_text('{"question": "hi"}\n\n' * 100)
    assert read_file(path, limit=2000) == path.read_bytes()
    with pytest.raises(InvalidJobError, match="larger than the limit of 1,000 bytes; split it into smaller files"):
        read_file(path, limit=1000)
    assert len(parse_jsonl(path, max_jobs=100)[1]) == 100  # blank lines are not jobs
    with pytest.raises(InvalidJobError, match="100 jobs, the limit is 99 per file; split it into smaller files"):
        parse_jsonl(path, max_jobs=99)


def test_an_argument_that_is_not_utf8_is_refused_naming_the_field(
    stack: Stack, r: redis.Redis, settings: Settings
) -> None:
    # A shell passes raw bytes; Python decodes them with surrogateescape into a lone surrogate.
    out = _askq(stack.env(), "submit", b"caf\xe9?")
    assert out.returncode == 2
    assert out.stderr.splitlines() == [
        "askq: error: question: not valid UTF-8 text: surrogates not allowed (U+DCE9 at index 3)"
    ]
    out = _askq(stack.env(), "submit", "hi", "--context", b"\xff", "--key", "k")
    assert out.returncode == 2 and "context.0: not valid UTF-8 text" in out.stderr
    assert _nothing_enqueued(r, settings)


def test_file_refuses_question_and_options_it_would_ignore(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_main(["submit", "hi", "--file", "jobs.jsonl", "--metadata", "{}"], capsys)
    assert code == 2
    assert err.strip() == "askq: error: --file takes no a question, --metadata: put them in the file's lines"


def test_redis_failing_mid_file_says_what_is_in_and_a_resubmission_adds_only_the_rest(tmp_path: Path) -> None:
    """A real fault between chunks: a Redis whose memory fills up after the first 500 jobs."""
    with EmbeddedRedis(tmp_path / "redis", appendonly=False) as server:
        r = redis.Redis.from_url(server.url, decode_responses=True)
        # ~17 KB per job (hash + message): 500 fit in 12 MiB more, 1,000 do not.
        r.config_set("maxmemory", int(r.info("memory")["used_memory"]) + 12 * 2**20)
        path = tmp_path / "jobs.jsonl"
        path.write_text("".join(json.dumps({"question": f"{i} " + "x" * 7000}) + "\n" for i in range(1500)))
        env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "ASKQ_VAR_DIR": str(tmp_path),
               "ASKQ_REDIS_URL": server.url}
        out = _askq(env, "submit", "--file", str(path), "--derive-key")
        assert out.returncode == 2 and "Traceback" not in out.stderr
        assert len(out.stderr.splitlines()) == 1, out.stderr
        line = out.stderr.strip()
        assert line.startswith(f"askq: error: {path}: Redis failed after 500 of 1500 jobs were enqueued "
                               "(through line 500; their ids are on stdout); the next 500 may be in too: "
                               "ResponseError: "), line
        assert "OOM" in line and line.endswith("Submit the same file again: the jobs already in keep their ids "
                                               "and are not enqueued twice")
        ids = out.stdout.split()
        assert len(ids) == 500
        assert [json.loads(r.hget(keys.job(i), "payload") or "{}")["question"].split()[0] for i in ids] == [
            str(n) for n in range(500)]
        # Resubmitting the same file once Redis has room adds only what was missing.
        r.config_set("maxmemory", 0)
        again = _askq(env, "submit", "--file", str(path), "--derive-key")
        assert again.returncode == 0, again.stderr
        assert again.stdout.split()[:500] == ids
        assert r.llen("askq") == 1500 == r.zcard(keys.PENDING)
        r.close()


def test_redis_unreachable_is_one_line_for_every_producer_command(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "ASKQ_VAR_DIR": str(tmp_path),
           "ASKQ_REDIS_URL": f"redis://:s3cret-pw@127.0.0.1:{free_port()}/0"}
    for argv in (["submit", "hi"], ["status", "x"], ["wait", "x"], ["dlq", "list"], ["stats"], ["workers"]):
        out = _askq(env, *argv)
        assert out.returncode == 2, (argv, out.stderr)
        [line] = out.stderr.splitlines()
        assert line.startswith("askq: error: Redis failed: ConnectionError: Error 111 connecting to 127.0.0.1:"), line
        assert "s3cret" not in line


def test_a_commands_start_is_read_to_the_tick_not_to_the_second() -> None:
    """`askq dlq replay` replays deaths from before its start: a start read a second early (the
    boot time Linux gives in whole seconds) turned a death just before the command into `newer`."""
    code = ("import time; from askq.cli.deadletters import _seconds_since_start; "
            "print(time.time() - _seconds_since_start())")
    before = time.time()
    started = float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                                   timeout=60).stdout)
    # One clock tick (10 ms) of rounding, and a little for the clocks read a moment apart.
    assert started >= before - 0.05
