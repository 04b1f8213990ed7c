"""Enqueue an askq job from a Python service that has askq installed, and wait for the answer.

    python producers/python_client.py redis://127.0.0.1:6379/0 "Where is my order?" [--no-wait]

The client needs nothing but askq's Redis URL: it reads no environment and no `.env`.
"""

import sys

from askq import Client


def main() -> None:
    url, question = sys.argv[1], sys.argv[2]
    client = Client.from_url(url)
    job_id = client.submit(question, metadata={"team": "shop"})
    print(job_id)
    if "--no-wait" not in sys.argv:
        view = client.wait(job_id, timeout=60)
        print(view.state.value, view.result.answer if view.result else view.error)


if __name__ == "__main__":
    main()
