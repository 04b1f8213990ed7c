"""What every area of the askq CLI shares: argument types, and Redis failures as one line."""

from __future__ import annotations

import argparse
import functools
from collections.abc import Callable

import redis

from askq.core.errors import AskqError


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


def redis_errors(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """A command whose Redis failures are one line (exit 2), not a traceback: it is the environment's fault."""

    @functools.wraps(command)
    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except redis.RedisError as exc:
            # redis-py names host and port in its messages, never the password.
            raise AskqError(f"Redis failed: {type(exc).__name__}: {exc}") from None

    return run
