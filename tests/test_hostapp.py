"""askq inside another application: its own packages, `.env` and environment hold the app's names too.

A temporary app directory with its own `.env` (foreign keys plus askq's Redis URL and queue) and its
own `config`, `core`, `workers` and `tests` packages; the client and the CLI run from there as
separate processes, as they would in that app. The wheel is built for real and installed apart.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from askq.config.settings import Settings
from askq.core import keys
from askq.core.redisserver import EmbeddedRedis
from askq.core.version import VERSION
from askq.producers.client import Client

ROOT = Path(__file__).resolve().parent.parent
CLIENT = """
import sys
from askq.producers.client import Client
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


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """askq's wheel, built from this checkout, and a directory it is installed into (without deps)."""
    out = tmp_path_factory.mktemp("wheel")
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), str(ROOT)],
                           capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    (path,) = out.glob("askq-*.whl")
    target = tmp_path_factory.mktemp("site")
    installed = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", "--target",
                                str(target), str(path)], capture_output=True, text=True, timeout=300)
    assert installed.returncode == 0, installed.stderr
    yield path, target


def test_the_wheel_installs_one_top_level_name(wheel: tuple[Path, Path]) -> None:
    path, _ = wheel
    names = zipfile.ZipFile(path).namelist()
    assert {name.split("/")[0] for name in names} == {"askq", f"askq-{VERSION}.dist-info"}
    assert {"askq/py.typed", "askq/data/questions.jsonl", "askq/workers/tasks.py"} <= set(names)
    assert f"askq-{VERSION}.dist-info/licenses/LICENSE" in names
    meta = zipfile.ZipFile(path).read(f"askq-{VERSION}.dist-info/METADATA").decode()
    assert f"Version: {VERSION}" in meta and "License-Expression: MIT" in meta
    assert "Classifier: Typing :: Typed" in meta
    assert not any(name.startswith(("tests/", "askq/tests/")) for name in names)
    # The console's templates and stylesheet, and the vendored /docs assets (no CDN), ship too.
    assert {"askq/producers/console/templates/deadletters.html", "askq/producers/console/static/console.css",
            "askq/producers/apidocs/swagger-ui/swagger-ui-bundle.js", "askq/producers/apidocs/swagger-ui/LICENSE",
            "askq/producers/apidocs/redoc/redoc.standalone.js"} <= set(names)


APP_CLIENT = """
import sys
import config, core, workers, tests  # the app's own packages, first on the path
assert (config.APP, core.APP, workers.APP, tests.APP) == ("shop",) * 4
import askq
from askq import Client, HttpClient
assert askq.__file__.startswith(sys.argv[2]), askq.__file__  # the installed wheel, not the checkout
assert HttpClient.__module__ == "askq.producers.httpclient"
print(askq.__version__, Client().submit("From an app with its own config?"))
"""


def test_the_installed_client_works_in_an_app_with_its_own_config_core_workers_and_tests(
    wheel: tuple[Path, Path], r: redis.Redis, redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    _, target = wheel
    app, env = _app(tmp_path, redis_server.url)
    (app / "config.py").write_text("APP = 'shop'\n")
    for package in ("core", "workers", "tests"):
        (app / package).mkdir()
        (app / package / "__init__.py").write_text("APP = 'shop'\n")
    (app / "submit.py").write_text(APP_CLIENT)
    env["PYTHONPATH"] = str(target)
    done = subprocess.run([sys.executable, "submit.py", redis_server.url, str(target)], cwd=app, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    version, job_id = done.stdout.split()
    assert version == VERSION
    assert r.hget(keys.job(job_id), "queue") == "shopq"
    # The installed CLI runs from that app too, and says its version.
    cli = subprocess.run([sys.executable, "-m", "askq", "--version"], cwd=app, env=env, capture_output=True,
                         text=True, timeout=60)
    assert cli.returncode == 0 and cli.stdout.strip() == f"askq {VERSION}", cli.stderr
    status = subprocess.run([sys.executable, "-m", "askq", "status", job_id], cwd=app, env=env,
                            capture_output=True, text=True, timeout=60)
    assert status.returncode == 0 and "queued" in status.stdout, status.stderr
