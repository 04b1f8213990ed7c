"""Baseline (a), the textbook worker: prefork, concurrency = cores, a LangChain chain invoked synchronously.

Start: `celery -A askq.bench.baselines.textbook worker --pool prefork --concurrency $(nproc)`.
"""

from __future__ import annotations

import time
from typing import Any

from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import Runnable
from langchain_openai import ChatOpenAI

from askq.bench.baselines import SYSTEM, env, make_app, record

app = make_app("textbook")
_chain: Runnable[dict[str, Any], str] | None = None


def chain() -> Runnable[dict[str, Any], str]:
    """(prompt | ChatOpenAI | parser).with_retry().with_fallbacks([secondary]), built once per process."""
    global _chain
    if _chain is None:
        prompt = ChatPromptTemplate.from_messages([("system", SYSTEM), ("human", "{question}")])
        url = env("BENCH_SIM_URL")

        def tier(model: str) -> Runnable[dict[str, Any], str]:
            llm = ChatOpenAI(model=model, base_url=url, api_key="sk-bench", timeout=10)
            return (prompt | llm | StrOutputParser()).with_retry(stop_after_attempt=3)

        _chain = tier("primary").with_fallbacks([tier("secondary")])
    return _chain


@app.task(name="bench.textbook")  # type: ignore[untyped-decorator]
def ask(job: dict[str, Any], dispatch: int = 1) -> str:
    started = time.time()
    answer = chain().invoke({"question": job["question"]})
    record(job, started, ok=bool(answer))
    return "ok"
