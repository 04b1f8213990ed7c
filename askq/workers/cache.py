"""The answer cache: exact match on the normalised question, context and prompt version.

Normalisation makes the same question asked again hit: Unicode compatibility forms folded
(NFKC, so a full-width or ligature character equals its plain form), case folded, runs of
whitespace collapsed and ends trimmed. Context documents are compared with NFKC and
whitespace collapsed but case kept (a case change in a document may change the answer);
their order counts. The prompt version is part of the key, so changing prompts starts a
fresh cache instead of serving answers to the old prompt.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aredis
import structlog

from askq.core import keys
from askq.core.job import JobSpec

log = structlog.get_logger("askq.cache")

_SPACES = re.compile(r"\s+")


def _collapse(text: str) -> str:
    return _SPACES.sub(" ", unicodedata.normalize("NFKC", text)).strip()


def cache_key(spec: JobSpec, prompt_version: str) -> str:
    """Redis key for a job's answer: the same question asked again, any case or spacing, hits."""
    question = _collapse(spec.question).casefold()
    context = [_collapse(doc) for doc in spec.context]
    material = json.dumps([prompt_version, question, context], separators=(",", ":"))
    return keys.cache(hashlib.sha256(material.encode()).hexdigest())


@dataclass(frozen=True, slots=True)
class CachedAnswer:
    """An answer a provider gave earlier to the same normalised question."""

    answer: str
    provider: str
    model: str | None


@dataclass(frozen=True, slots=True)
class CacheFill:
    """An answer to keep for ttl_s, queued on a pipeline."""

    key: str
    value: str
    ttl_s: int

    def queue(self, pipe: Any) -> None:
        pipe.set(self.key, self.value, ex=self.ttl_s)


class AnswerCache:
    """Answers from successful provider calls, kept for ttl_s."""

    def __init__(self, client: aredis.Redis, ttl_s: int, prompt_version: str) -> None:
        self.redis = client
        self.ttl_s = ttl_s
        self.prompt_version = prompt_version

    def key(self, spec: JobSpec) -> str:
        return cache_key(spec, self.prompt_version)

    def fill(self, spec: JobSpec, answer: str, provider: str, model: str | None) -> CacheFill:
        """The write that keeps an answer (it rides on the job's result write)."""
        value = json.dumps({"answer": answer, "provider": provider, "model": model})
        return CacheFill(self.key(spec), value, self.ttl_s)

    async def get(self, spec: JobSpec) -> CachedAnswer | None:
        return self.parse(await self.redis.get(self.key(spec)))

    @staticmethod
    def parse(raw: Any) -> CachedAnswer | None:
        """A cached value, or None for a miss; an unreadable entry counts as a miss, never a crash."""
        if raw is None:
            return None
        try:
            data = json.loads(raw)
            return CachedAnswer(answer=str(data["answer"]), provider=str(data["provider"]), model=data.get("model"))
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("cache_entry_unreadable", error=str(exc)[:200])
            return None
