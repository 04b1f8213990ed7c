"""Deterministic answers, so tests can check a job's result without a real model."""

import hashlib

# A fixed vocabulary: answers are built from it so they read like prose and
# give token counts in the range of a short real completion.
_VOCABULARY = """
    queue worker retry backoff latency answer model token request budget signal
    cache stream batch window limit result prompt context server client error status
    record ledger schedule priority deadline channel journal replica shard careful
    steady quick durable simple modest precise honest returns handles guards records
    measures delivers accepts rejects every each some the a one this that under
    after before within across beyond through around
"""
_WORDS: tuple[str, ...] = tuple(_VOCABULARY.split())

_SENTENCES = 2
_WORDS_PER_SENTENCE = 12


def answer_for(question: str, model: str) -> str:
    """Return the simulator's answer to `question` asked of `model`.

    The text is a pure function of both arguments, so callers can recompute
    the expected answer for any job.
    """
    digest = hashlib.sha256(question.encode("utf-8")).digest()
    sentences: list[str] = []
    for s in range(_SENTENCES):
        start = s * _WORDS_PER_SENTENCE
        words = [_WORDS[b % len(_WORDS)] for b in digest[start : start + _WORDS_PER_SENTENCE]]
        sentences.append(" ".join(words).capitalize() + ".")
    # The short hash tag makes answers to different questions visibly distinct.
    return f"[{model}] " + " ".join(sentences) + f" (ref {digest[:4].hex()})"


def count_tokens(text: str) -> int:
    """Approximate the token count of `text` for usage accounting.

    Real tokenizers average about 4/3 tokens per English word; exactness is
    not needed, only plausible, monotonic numbers.
    """
    words = len(text.split())
    return (words * 4 + 2) // 3
