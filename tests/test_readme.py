"""The README's "Using askq" section is copy-pasteable: every line is a real askq command, and
the lines a newcomer runs against a stack run as written, in a real shell, without an error."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from pathlib import Path

import redis

from askq.cli import parse_command
from askq.core.redisserver import EmbeddedRedis
from askq.stack import Stack, default_providers
from tests.conftest import Sim, wait_workers

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
# Lines whose exit code reports something other than success or failure.
EXIT_CODES = {"health": {0, 1, 2}, "cancel": {0, 1}}


def usage_blocks() -> list[list[str]]:
    section = README.split("\n## Using askq\n", 1)[1].split("\n## ", 1)[0].split("\n### ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, re.S)
    assert len(blocks) == 3, "expected three shell blocks: askq up, the commands, the long-running pieces"
    return [[line for line in block.splitlines() if line.strip()] for block in blocks]


def askq_invocations(line: str) -> list[list[str]]:
    """Every `.venv/bin/askq ...` in a shell line (including inside $(...)), as argv after `askq`."""
    code = re.sub(r"\s+#\s.*$", "", line)  # the comment
    inner = re.findall(r"\$\(([^()]*)\)", code)
    found = []
    for part in [*inner, re.sub(r"\$\([^()]*\)", "SUBSTITUTED", code)]:
        words = shlex.split(part)
        if ".venv/bin/askq" in words:
            argv = words[words.index(".venv/bin/askq") + 1:]
            found.append(argv[: argv.index(">")] if ">" in argv else argv)
    assert found, f"no askq command in {line!r}"
    return found


def test_every_usage_line_is_an_askq_command_that_parses() -> None:
    for line in [line for block in usage_blocks() for line in block]:
        assert "|" not in re.sub(r"\s+#\s.*$", "", line), f"a pipe in {line!r} would run a shell pipeline"
        for argv in askq_invocations(line):
            if argv == ["--version"]:
                continue
            args = parse_command(argv)  # SystemExit: not a command askq has
            assert callable(args.func), line
            for word in argv:
                if word.endswith((".jsonl", ".json")) and "/" in word:
                    assert (ROOT / word).exists(), f"{line!r} names {word}, which does not exist"


def test_the_usage_lines_run_as_written_against_a_stack(
    stack: Stack, r: redis.Redis, redis_server: EmbeddedRedis, sim: Sim, tmp_path: Path
) -> None:
    stack.start_worker(concurrency=20)
    wait_workers(r, 1)
    # A checkout's layout, so the lines' relative paths (.venv/bin/askq, askq/data/...) resolve.
    (tmp_path / ".venv").symlink_to(ROOT / ".venv")
    (tmp_path / "askq").symlink_to(ROOT / "askq")
    lines = usage_blocks()[1]
    script = "".join(f"{line}\nprintf '\\n__rc %d %d\\n' {n} $?\n" for n, line in enumerate(lines))
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "ASKQ_VAR_DIR": str(tmp_path / "var"),
           "ASKQ_REDIS_URL": redis_server.url, "ASKQ_PROVIDERS": json.dumps(default_providers(sim.url))}
    done = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert "Traceback" not in done.stderr and "askq: error" not in done.stderr, done.stderr[-3000:]
    codes = {int(n): int(rc) for n, rc in re.findall(r"^__rc (\d+) (\d+)$", done.stdout, re.M)}
    assert sorted(codes) == list(range(len(lines))), done.stdout[-2000:]
    for n, line in enumerate(lines):
        command = askq_invocations(line)[-1][0]  # the line's own command, after any $(...)
        assert codes[n] in EXIT_CODES.get(command, {0}), f"{line!r} exited {codes[n]}: {done.stderr[-2000:]}"
    # The first job was answered by a provider (no warning about a default answer), and the file's 200 too.
    assert '"state": "succeeded"' in done.stdout
    assert "degraded" not in done.stderr, done.stderr
    assert len((tmp_path / "ids.txt").read_text().split()) == 200
    # Nothing started beside the configured Redis (`askq redis url` included).
    assert "started the embedded Redis" not in done.stderr
    assert not (tmp_path / "var" / "redis.json").exists()
