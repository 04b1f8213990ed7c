"""What every area of the askq CLI shares: argument types, and Redis failures as one line."""

from __future__ import annotations

import argparse
import functools
from collections.abc import Callable

import redis

from askq.errors import AskqError


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1, refused with a message that says so."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def positive_float(text: str) -> float:
    """An argparse type for a number of seconds above zero."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text!r}")
    return value


def redis_problem(exc: redis.RedisError) -> str:
    """What went wrong with Redis, and what to do about it, in one line (never the password:
    redis-py names host and port in its messages, not the URL)."""
    said = f"Redis failed: {type(exc).__name__}: {exc}"
    if isinstance(exc, redis.AuthenticationError | redis.AuthenticationWrongNumberOfArgsError):
        return f"{said} Redis refused the password: check it in ASKQ_REDIS_URL (redis://:PASSWORD@HOST:6379/0)"
    if "NOAUTH" in str(exc) or "Authentication required" in str(exc):
        return f"{said} Redis wants a password: put it in ASKQ_REDIS_URL (redis://:PASSWORD@HOST:6379/0)"
    if isinstance(exc, redis.ConnectionError | redis.TimeoutError):
        return (f"{said} Is Redis running there? askq uses the Redis named by ASKQ_REDIS_URL, or, when it is "
                "unset, the embedded one of this directory (`askq redis url` starts it)")
    return said


def redis_errors(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """A command whose Redis failures are one line (exit 2), not a traceback: it is the environment's fault."""

    @functools.wraps(command)
    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except redis.RedisError as exc:
            raise AskqError(redis_problem(exc)) from None

    return run
