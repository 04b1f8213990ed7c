"""Jobs from a JSONL file, checked whole before the first one is enqueued (all or nothing)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from askq.config.settings import Settings
from askq.core.job import JobSpec
from askq.errors import InvalidJobError
from askq.producers.client import batch_error, check_jobs

# A jobs file is read whole and every line checked before the first job is enqueued (all or
# nothing). The caps bound what that holds in memory: measured peaks are about 2.5 KiB per job
# plus 3.5x the file's size, so ~300 MiB at either cap.
MAX_FILE_BYTES = 64 * 1024 * 1024
MAX_FILE_JOBS = 100_000


def read_file(path: Path, limit: int = MAX_FILE_BYTES, note: str = "") -> bytes:
    """A file's bytes, or InvalidJobError in one line: missing, unreadable, a directory, too big."""
    try:
        with path.open("rb") as source:
            data = source.read(limit + 1)
    except OSError as exc:
        raise InvalidJobError(f"{path}: cannot read it ({exc.strerror or exc}){note}") from None
    if len(data) > limit:
        raise InvalidJobError(f"{path}: larger than the limit of {limit:,} bytes; split it into smaller files{note}")
    return data


def decode_utf8(path: Path, data: bytes, note: str = "") -> str:
    """The text of a UTF-8 file (a leading BOM allowed); else one line naming the first bad byte."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise InvalidJobError(f"{path}:{line}: not valid UTF-8 (byte 0x{data[exc.start]:02x} at byte column "
                              f"{column}); save the file as UTF-8{note}") from None


def _no_duplicate_fields(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    fields = dict(pairs)
    if len(fields) != len(pairs):
        twice = sorted(k for k, n in Counter(k for k, _ in pairs).items() if n > 1)
        raise ValueError(f"field(s) {twice!a} given twice")
    return fields


def load_json(text: str) -> Any:
    """JSON as a job's fields: ValueError also for a field given twice or nesting too deep to parse."""
    try:
        return json.loads(text, object_pairs_hook=_no_duplicate_fields)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def parse_jsonl(path: Path, max_jobs: int = MAX_FILE_JOBS) -> tuple[list[int], list[Any], list[tuple[int, str]]]:
    """Line numbers and values of a JSONL file's non-blank lines, and "line N: problem" for each bad one."""
    nothing = "; nothing was enqueued"
    text = decode_utf8(path, read_file(path, note=nothing), note=nothing)
    # split("\n"), not splitlines(): U+2028, U+0085 and friends are legal inside a JSON string.
    lines = [(number, line) for number, line in enumerate(text.split("\n"), start=1) if line.strip()]
    if len(lines) > max_jobs:
        raise InvalidJobError(f"{path}: {len(lines):,} jobs, the limit is {max_jobs:,} per file; split it into "
                              f"smaller files{nothing}")
    del text
    numbers: list[int] = []
    items: list[Any] = []
    problems: list[tuple[int, str]] = []
    for number, line in lines:
        try:
            items.append(load_json(line))
            numbers.append(number)
        except ValueError as exc:
            problems.append((number, f"line {number}: not valid JSON ({exc})"))
    return numbers, items, problems


def _check_file(path: Path, settings: Settings | None, derive_key: bool) -> tuple[list[int], list[Any], list[JobSpec]]:
    """Line numbers, parsed lines and specs of a JSONL file, or one InvalidJobError naming every bad line."""
    numbers, items, problems = parse_jsonl(path)
    specs, bad = check_jobs(items, numbers, settings, derive_key, from_json=True, noun="line")
    if problems or bad:
        raise batch_error([text for _, text in sorted(problems + bad)], "line", where=f"{path}: ")
    return numbers, items, specs


def load_jobs_file(path: Path, settings: Settings | None = None,
                   derive_key: bool = False) -> tuple[list[int], list[JobSpec]]:
    """Every job of a JSONL file, checked whole: line numbers and specs, or one InvalidJobError that
    names every bad line (the first MAX_LISTED, then a count) and says nothing was enqueued."""
    numbers, _, specs = _check_file(path, settings, derive_key)
    return numbers, specs


def read_jobs_file(path: Path) -> list[dict[str, Any]]:
    """Jobs from a JSONL file (one object with at least "question" per line), every line checked."""
    return _check_file(path, None, False)[1]
