"""Enqueue an askq job from a Python service that has askq installed, and wait for the answer.

    python producers/python_client.py redis://127.0.0.1:6379/0 "Where is my order?" [--no-wait] [--timeout 60]

The client needs nothing but askq's Redis URL: it reads no environment and no `.env`.
"""

import sys

from askq import Client
from askq.errors import AskqError


def main() -> int:
    url, question = sys.argv[1], sys.argv[2]
    timeout = float(sys.argv[sys.argv.index("--timeout") + 1]) if "--timeout" in sys.argv else 60.0
    client = Client.from_url(url)
    job_id = client.submit(question, metadata={"team": "shop"})
    print(job_id)
    if "--no-wait" not in sys.argv:
        try:
            view = client.wait(job_id, timeout=timeout)
        except AskqError as exc:  # WaitTimeoutError: no answer in time (is a worker running?)
            print(f"job {job_id}: {exc}", file=sys.stderr)
            return 1
        print(view.state.value, view.result.answer if view.result else view.error)
    return 0


if __name__ == "__main__":
    sys.exit(main())
