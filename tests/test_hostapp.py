"""askq inside another application: its `.env` and environment hold the app's own keys too.

A temporary app directory with its own `.env` (foreign keys plus askq's Redis URL and queue);
the client and the CLI run from there as separate processes, as they would in that app.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from config.settings import Settings
from core import keys
from core.redisserver import EmbeddedRedis
from producers.client import Client

CLIENT = """
import sys
from producers.client import Client
print(Client().submit("From the app's own .env?"))
print(Client.from_url(sys.argv[1]).submit("From a URL alone?"))
print(Client(redis_url=sys.argv[1], queue="other").submit("To another queue?"))
"""


def _app(tmp_path: Path, redis_url: str) -> tuple[Path, dict[str, str]]:
    app = tmp_path / "shopapp"
    app.mkdir()
    (app / ".env").write_text(
        "DATABASE_URL=postgres://shop:pw@db:5432/shop\nSECRET_KEY=django-insecure-abc\nDEBUG=true\n"
        "ALLOWED_HOSTS=*\nCELERY_BROKER_URL=redis://elsewhere:6379/1\n"
        f"ASKQ_REDIS_URL={redis_url}\nASKQ_QUEUE=shopq\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASKQ_")}
    env |= {"DATABASE_URL": "postgres://env", "DJANGO_SETTINGS_MODULE": "shop.settings"}
    return app, env


def test_client_and_cli_run_from_an_app_dir_with_foreign_keys(
    r: redis.Redis, redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    app, env = _app(tmp_path, redis_server.url)
    (app / "submit.py").write_text(CLIENT)
    done = subprocess.run([sys.executable, "submit.py", redis_server.url], cwd=app, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    from_env, from_url, other = done.stdout.split()
    # Client() read ASKQ_QUEUE from the app's .env; from_url reads nothing but its URL (and keywords).
    assert r.hget(keys.job(from_env), "queue") == "shopq"
    assert r.hget(keys.job(from_url), "queue") == "askq"
    assert r.hget(keys.job(other), "queue") == "other"
    assert (r.llen("shopq"), r.llen("askq"), r.llen("other")) == (1, 1, 1)

    cli = [sys.executable, "-m", "askq"]
    submitted = subprocess.run([*cli, "submit", "From the CLI?", "--key", "cli-1"], cwd=app, env=env,
                               capture_output=True, text=True, timeout=60)
    assert submitted.returncode == 0, submitted.stderr
    assert r.llen("shopq") == 2
    status = subprocess.run([*cli, "status", from_env], cwd=app, env=env, capture_output=True, text=True,
                            timeout=60)
    assert status.returncode == 0 and "queued" in status.stdout, status.stderr
    assert "Traceback" not in status.stderr + submitted.stderr


def test_an_unknown_askq_key_in_the_apps_env_is_one_line_naming_it(
    redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    app, env = _app(tmp_path, redis_server.url)
    with (app / ".env").open("a") as f:
        f.write("ASKQ_QUEU=typo\n")
    done = subprocess.run([sys.executable, "-m", "askq", "status", "abc"], cwd=app, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "ASKQ_QUEU" in done.stderr and "DATABASE_URL" not in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_client_refuses_settings_and_a_url_together(settings: Settings) -> None:
    with pytest.raises(TypeError, match="not both"):
        Client(settings, redis_url="redis://127.0.0.1:1/0")
