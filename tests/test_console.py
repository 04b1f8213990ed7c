"""The console in a real browser: headless Chromium (Debian's) driven by Selenium, against a real
`askq api`, real Redis, and dead letters made by real workers.

The browser resolves no host name but 127.0.0.1 (--host-resolver-rules), so a page that needed
the internet would show it. Set ASKQ_TEST_SCREENSHOTS=1 to save docs/console.png.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from fastapi.testclient import TestClient
from pydantic import SecretStr

from askq.config.settings import ApiSettings, ConsoleSettings, Settings
from askq.core import keys
from askq.core.deadletter import DeadReason
from askq.core.job import JobState
from askq.core.redisserver import free_port
from askq.producers.api import create_app
from askq.producers.client import Client
from askq.producers.console.session import COOKIE, fingerprint
from askq.stack import Stack
from tests.conftest import SCREENSHOTS, wait_for, wait_workers
from tests.test_api import TOKEN, serve_api

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
BAD = "[[sim:bad_request]]"  # the simulator answers 400: the job dies permanent_error at once
ROOT = Path(__file__).resolve().parent.parent

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.common.exceptions import TimeoutException  # noqa: E402 - after the importorskip above
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.support.expected_conditions import staleness_of  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        if os.environ.get("CI"):
            pytest.fail("Debian's chromium and chromium-driver are missing (.ci/run installs them)")
        pytest.skip("needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1400,1000", "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(20)
    yield driver
    driver.quit()


@pytest.fixture
def api(stack: Stack, r: redis.Redis) -> Iterator[str]:
    stack.start_worker(concurrency=5)
    url, proc = serve_api(stack, ASKQ_API__CONSOLE__REPLAYS_PER_MINUTE="50")
    wait_workers(r, 1)
    yield url
    proc.terminate()
    proc.wait(15)


@pytest.fixture
def client(settings: Settings) -> Iterator[Client]:
    c = Client(settings)
    yield c
    c.close()


def dead(client: Client, question: str, **fields: Any) -> str:
    """A job a real worker dead-letters (the simulator refuses it as a bad request)."""
    job_id = client.submit(question, **fields)
    assert client.wait(job_id, timeout=30).state is JobState.DEAD
    return job_id


def sign_in(browser: WebDriver, url: str, token: str = TOKEN) -> None:
    browser.delete_all_cookies()
    browser.get(f"{url}/console/login")
    browser.find_element(By.ID, "token").send_keys(token)
    browser.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    try:
        WebDriverWait(browser, 10).until(lambda b: "/console/dead-letters" in b.current_url)
    except TimeoutException:
        raise AssertionError(f"not signed in: {browser.current_url} {browser.page_source[-900:]}") from None


def press(browser: WebDriver, element_id: str) -> None:
    """Click a button and wait for the page it loads (not the one it leaves)."""
    old = browser.find_element(By.TAG_NAME, "html")
    browser.find_element(By.ID, element_id).click()
    WebDriverWait(browser, 15).until(staleness_of(old))


def rows(browser: WebDriver, table: str) -> list[str]:
    return [e.get_attribute("data-id") or "" for e in browser.find_elements(By.CSS_SELECTOR, f"#{table} tbody tr")]


def count(browser: WebDriver) -> int:
    return int(browser.find_element(By.CSS_SELECTOR, "#match-count .count").get_attribute("data-total") or -1)


def outcomes(browser: WebDriver) -> dict[str, str]:
    return {e.get_attribute("data-id") or "": e.find_element(By.CLASS_NAME, "outcome").text
            for e in browser.find_elements(By.CSS_SELECTOR, "#items tbody tr")}


def screenshot(browser: WebDriver) -> None:
    if SCREENSHOTS:
        browser.save_screenshot(str(ROOT / "docs" / "console.png"))


def test_sign_in_filter_dry_run_and_replay_exactly_the_shown_ids(
        browser: WebDriver, api: str, client: Client, r: redis.Redis) -> None:
    billing = [dead(client, f"Refund order {n} {BAD}", metadata={"team": "billing"}) for n in range(3)]
    other = dead(client, f"Where is my parcel? {BAD}", metadata={"team": "shipping"})
    browser.get(f"{api}/console/dead-letters")
    assert browser.current_url.endswith("/console/login")  # no session: the login form
    sign_in(browser, api)
    assert count(browser) == 4
    assert browser.find_element(By.ID, "f-metadata").get_attribute("value") == ""
    browser.find_element(By.ID, "f-metadata").send_keys("team=billing")
    browser.find_element(By.ID, "f-error").send_keys("400")
    press(browser, "apply-filter")
    assert count(browser) == 3 and sorted(rows(browser, "dead-letters")) == sorted(billing)
    screenshot(browser)
    press(browser, "replay-shown")  # the dry run: counts, changes nothing
    assert browser.find_element(By.CSS_SELECTOR, "[data-outcome='as shown']").text == "3 as shown"
    assert all(client.dead_letter(i) for i in billing)
    # Meanwhile: a new dead letter that matches the same filter, and one shown record dies again.
    newcomer = dead(client, f"Refund order 9 {BAD}", metadata={"team": "billing"})
    before = client.dead_letter(newcomer).dead_at
    assert client.replay(billing[0]) == "ok"
    wait_for(lambda: r.hget(keys.job(billing[0]), "state") == "dead" and r.exists(keys.dead_letter(billing[0])),
             30, what="the replayed job to die again")
    press(browser, "confirm")
    done = outcomes(browser)
    assert done == {billing[0]: "changed", billing[1]: "ok", billing[2]: "ok"}
    # The newcomer and the other team's record were not touched.
    assert client.dead_letter(newcomer).dead_at == before
    assert r.hget(keys.job(newcomer), "dispatch") == "1" and client.dead_letter(other)
    # Audit: who (the token's fingerprint, never the token), what, which ids.
    browser.get(f"{api}/console/audit")
    audit_row = browser.find_element(By.CSS_SELECTOR, "#audit tbody tr").text
    assert f"token:{fingerprint(TOKEN.encode())}" in audit_row and "replay" in audit_row
    assert "1 changed, 2 ok" in audit_row
    assert TOKEN not in browser.page_source
    entry = json.loads(str(r.lindex(keys.CONSOLE_AUDIT, 0)))
    assert entry["outcomes"] == done and entry["who"] == f"token:{fingerprint(TOKEN.encode())}"
    # Signed in, the same browser can read the API's docs (a page cannot send a bearer token).
    browser.get(f"{api}/docs")
    WebDriverWait(browser, 20).until(
        lambda b: "askq" in b.find_element(By.CSS_SELECTOR, ".swagger-ui .info .title").text)
    assert httpx.get(f"{api}/docs", timeout=10).status_code == 401


def test_replay_with_an_edit_purge_and_one_action_by_keyboard_alone(
        browser: WebDriver, api: str, client: Client, r: redis.Redis) -> None:
    broken = [dead(client, f"How do I reset my password? {BAD}") for _ in range(2)]
    sign_in(browser, api)
    press(browser, "edit-shown")
    browser.find_element(By.ID, "e-find").send_keys(BAD)
    press(browser, "check-edit")  # the dry run shows each question after the edit
    assert [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#items td.q")] == \
        ["How do I reset my password?"] * 2
    press(browser, "confirm")
    assert set(outcomes(browser).values()) == {"ok"}
    for job_id in broken:  # the fixed job runs and answers; its idempotency and id are kept
        view = client.wait(job_id, timeout=30)
        assert view.state is JobState.SUCCEEDED and view.question == "How do I reset my password? "
    browser.get(f"{api}/console/jobs?q={broken[0]}")
    job_page = browser.find_element(By.ID, "job").text
    assert "succeeded" in job_page and "answered by" in job_page
    browser.get(f"{api}/console/jobs?q=no-such-key")
    assert "No job has the id or idempotency key" in browser.page_source
    # An edit a producer could not submit is refused, and that record is left as it was.
    bad = dead(client, f"Please {BAD}")
    browser.get(f"{api}/console/dead-letters/{bad}")
    browser.find_element(By.ID, "question").clear()
    browser.find_element(By.ID, "question").send_keys("   ")
    old = browser.find_element(By.TAG_NAME, "html")
    browser.find_element(By.CSS_SELECTOR, "button[value=edit]").click()
    WebDriverWait(browser, 15).until(staleness_of(old))
    assert "blank" in browser.find_element(By.CSS_SELECTOR, "#items td.err").text
    assert browser.find_element(By.ID, "confirm").get_attribute("disabled") is not None
    # Purge with the keyboard alone: Tab to the button, Enter; Tab to confirm, Enter.
    browser.get(f"{api}/console/dead-letters")

    def tab_to(element_id: str) -> None:
        body = browser.find_element(By.TAG_NAME, "body")
        body.send_keys(Keys.TAB)
        for _ in range(60):
            if browser.switch_to.active_element.get_attribute("id") == element_id:
                browser.switch_to.active_element.send_keys(Keys.ENTER)
                return
            browser.switch_to.active_element.send_keys(Keys.TAB)
        raise AssertionError(f"Tab never reached #{element_id}")

    tab_to("purge-shown")
    WebDriverWait(browser, 10).until(lambda b: "dry run" in b.find_element(By.TAG_NAME, "h1").text)
    tab_to("confirm")
    WebDriverWait(browser, 10).until(lambda b: "done" in b.find_element(By.TAG_NAME, "h1").text)
    assert outcomes(browser) == {bad: "ok"}
    assert not r.exists(keys.dead_letter(bad)) and not r.exists(keys.job(bad))
    # Every visible field of every form has a label.
    for path in ("/console/dead-letters", "/console/jobs"):
        browser.get(f"{api}{path}")
        for field in browser.find_elements(By.CSS_SELECTOR, "input:not([type=hidden]), select, textarea"):
            labelled = browser.find_elements(By.CSS_SELECTOR, f"label[for='{field.get_attribute('id')}']")
            assert labelled, f"{path}: {field.get_attribute('name')} has no label"


def test_pages_escape_hostile_text_and_show_no_secret(
        browser: WebDriver, api: str, client: Client, r: redis.Redis, stack: Stack) -> None:
    xss = '<img src=x onerror="document.title=\'pwned\'"><script>document.title="pwned"</script>'
    job_id = dead(client, f"{xss} {BAD}", metadata={"note": xss}, idempotency_key="ticket-xss")
    sign_in(browser, api)
    pages = ["/console/dead-letters", f"/console/dead-letters/{job_id}", "/console/workers",
             "/console/jobs?q=ticket-xss", "/console/breakers", "/console/audit"]
    for path in pages:
        browser.get(f"{api}{path}")
        assert browser.title != "pwned" and not browser.find_elements(By.CSS_SELECTOR, "main img, main script")
        assert TOKEN not in browser.page_source and "sk-askq-simulator" not in browser.page_source
    browser.get(f"{api}/console/jobs?q=ticket-xss")  # by idempotency key: the job and its attempt history
    assert browser.find_element(By.CSS_SELECTOR, "#job .state-dead").text == "dead"
    assert "bad_request" in browser.find_element(By.ID, "attempts").text or "400" in \
        browser.find_element(By.ID, "attempts").text
    browser.get(f"{api}/console/workers")
    assert browser.find_element(By.CSS_SELECTOR, "#workers .state-alive").text == "alive"
    browser.get(f"{api}/console/breakers")
    assert {e.text for e in browser.find_elements(By.CSS_SELECTOR, "#breakers td:first-child")} == \
        {"primary", "secondary"}
    # A killed worker moves to the dead workers' table once it misses three heartbeats.
    stack.kill_worker(stack.workers[0])

    def listed_dead() -> bool:
        browser.get(f"{api}/console/workers")
        return "none" not in browser.find_element(By.ID, "dead-workers").text
    wait_for(listed_dead, 20, interval=0.5, what="the killed worker in the dead workers' table")
    assert "no worker is beating" in browser.find_element(By.ID, "workers").text
    # A wrong or forged cookie is no session.
    browser.delete_all_cookies()
    browser.get(f"{api}/console/login")
    browser.add_cookie({"name": COOKIE, "value": f"{fingerprint(TOKEN.encode())}.9999999999.{'0' * 64}"})
    browser.get(f"{api}/console/dead-letters")
    assert browser.current_url.endswith("/console/login")


def test_docs_work_offline(browser: WebDriver, stack: Stack) -> None:
    # No tokens (loopback only): a browser may open /docs without a bearer token.
    port = free_port()
    proc = stack.spawn(f"api{port}", [sys.executable, "-m", "askq", "api"], stack.env(ASKQ_API__PORT=str(port)))
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: up(url), 60, what="askq api to answer")
    try:
        html = httpx.get(f"{url}/docs", timeout=10).text
        refs = re.findall(r"""(?:src|href|url)\s*[=:]\s*['"]([^'"]+)""", html)
        assert refs and all(ref.startswith("/") for ref in refs), refs
        browser.get(f"{url}/docs")  # the browser resolves no host but 127.0.0.1
        try:
            WebDriverWait(browser, 20).until(
                lambda b: "askq" in b.find_element(By.CSS_SELECTOR, ".swagger-ui .info .title").text)
        except TimeoutException:
            raise AssertionError(f"Swagger UI did not render offline: {browser.page_source[:500]}") from None
        assert browser.find_elements(By.CSS_SELECTOR, ".opblock")  # the operations are listed
        redoc = httpx.get(f"{url}/redoc", timeout=10).text
        assert all(ref.startswith("/") for ref in re.findall(r"""(?:src|href)=['"]([^'"]+)""", redoc))
    finally:
        proc.terminate()
        proc.wait(15)


def up(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


# ---- the access rules at the HTTP level (in-process app, real Redis) -------------------------------


def console_app(settings: Settings, **console: Any) -> TestClient:
    api = ApiSettings(tokens=[SecretStr(TOKEN)], console=ConsoleSettings(**console))
    return TestClient(create_app(settings.model_copy(update={"api": api})), base_url="https://127.0.0.1")


def killed(client: Client, question: str) -> str:
    """A dead letter written in-process (no worker needed): a queued job dead-lettered `exhausted`."""
    job_id = client.submit(question)
    payload = json.loads(str(client.redis.hget(keys.job(job_id), "payload")))
    assert client.dlq.kill(job_id, DeadReason.EXHAUSTED, "gave up", payload=payload, expect_state="queued") == "ok"
    return job_id


def signed_in(http: TestClient) -> str:
    """Sign in; returns the page's CSRF value."""
    login = http.post("/console/login", data={"token": TOKEN}, follow_redirects=False)
    assert login.status_code == 303
    cookie = login.headers["set-cookie"]
    assert all(flag in cookie for flag in ("Secure", "HttpOnly", "SameSite=strict")) and TOKEN not in cookie
    page = http.get("/console/dead-letters")
    found = re.search(r'name="csrf" value="([0-9a-f]+)"', page.text)
    assert page.status_code == 200 and found, page.text[:300]
    return found.group(1)


def test_console_posts_need_the_session_csrf_value_and_the_same_origin(
        settings: Settings, client: Client, r: redis.Redis) -> None:
    job_id = killed(client, "a question")
    item = f"{job_id}|{client.dead_letter(job_id).dead_at!r}"
    with console_app(settings) as http:
        assert http.get("/console/dead-letters", follow_redirects=False).status_code == 303
        assert http.post("/console/login", data={"token": "wrong"}).status_code == 401
        assert COOKIE not in http.cookies
        csrf = signed_in(http)
        # The sign-in opens the API's docs to this browser, and no API route.
        assert http.get("/openapi.json").status_code == 200 and http.get("/docs").status_code == 200
        assert http.get("/v1/dead-letters").status_code == 401
        assert http.post("/v1/dead-letters/replay").status_code == 401
        page = http.get("/console/dead-letters")
        assert "default-src 'none'" in page.headers["content-security-policy"]
        assert page.headers["x-frame-options"] == "DENY"
        form = {"action": "purge", "item": item}
        assert http.post("/console/dead-letters/act", data=form).status_code == 403  # no CSRF value
        assert http.post("/console/dead-letters/act", data={**form, "csrf": "0" * 64}).status_code == 403
        crossed = http.post("/console/dead-letters/act", data={**form, "csrf": csrf},
                            headers={"Origin": "https://evil.example"})
        assert crossed.status_code == 403
        assert r.exists(keys.dead_letter(job_id))  # nothing was done
        done = http.post("/console/dead-letters/act", data={**form, "csrf": csrf},
                         headers={"Origin": "https://127.0.0.1"})
        assert done.status_code == 200 and not r.exists(keys.dead_letter(job_id))
        # A cookie from another token, or forged, is no session; a bearer token works without one.
        http.cookies.clear()
        http.cookies.set(COOKIE, f"{fingerprint(TOKEN.encode())}.9999999999.{'0' * 64}")
        assert http.get("/console/dead-letters", follow_redirects=False).status_code == 303
        http.cookies.clear()
        bearer = http.get("/console/audit", headers={"Authorization": f"Bearer {TOKEN}"})
        assert bearer.status_code == 200 and "1 ok" in bearer.text
        assert http.get("/console/audit", headers={"Authorization": "Bearer nope"}).status_code == 401


def test_signing_in_over_plain_http_to_another_host_says_why_it_cannot_work(settings: Settings) -> None:
    api = ApiSettings(tokens=[SecretStr(TOKEN)])
    with TestClient(create_app(settings.model_copy(update={"api": api})), base_url="http://askq.internal") as http:
        reply = http.post("/console/login", data={"token": TOKEN}, follow_redirects=False)
        assert reply.status_code == 400 and "only over HTTPS" in reply.text and "set-cookie" not in reply.headers


def test_a_filter_too_long_is_refused_with_a_message(settings: Settings, client: Client) -> None:
    killed(client, "a question")
    with console_app(settings) as http:
        signed_in(http)
        page = http.get("/console/dead-letters", params={"error": "x" * 5000, "metadata": "team"})
        assert page.status_code == 200 and "error: 5000 characters, at most 200" in page.text
        page = http.get("/console/dead-letters", params={"since": "yesterday", "metadata": "team"})
        assert "since: expected a time" in page.text and "metadata: expected key=value" in page.text


def test_a_bulk_replay_is_capped_per_minute(settings: Settings, client: Client, r: redis.Redis) -> None:
    ids = [killed(client, f"question {n}") for n in range(3)]
    with console_app(settings, replays_per_minute=2) as http:
        csrf = signed_in(http)
        items = [f"{i}|{client.dead_letter(i).dead_at!r}" for i in ids]
        reply = http.post("/console/dead-letters/act", data={"action": "replay", "item": items, "csrf": csrf})
        found = acted(reply)
        assert sorted(found.values()) == ["ok", "ok", "rate_capped"]
        capped = next(i for i, o in found.items() if o == "rate_capped")
        assert r.exists(keys.dead_letter(capped))  # left as it was, to replay in a minute


def acted(reply: httpx.Response) -> dict[str, str]:
    return dict(re.findall(r'<tr data-id="([0-9a-f]+)">.*?class="outcome">([a-z_ ]+)<', reply.text, re.S))


def test_purge_leaves_a_record_that_died_again_since_it_was_shown(
        settings: Settings, client: Client, r: redis.Redis) -> None:
    job_id = killed(client, "a question")
    shown = f"{job_id}|{client.dead_letter(job_id).dead_at!r}"
    assert client.replay(job_id) == "ok"  # replayed by someone else, and dead again
    payload = json.loads(str(r.hget(keys.job(job_id), "payload")))
    assert client.dlq.kill(job_id, DeadReason.EXHAUSTED, "again", payload=payload, expect_state="queued") == "ok"
    gone = killed(client, "another")
    shown_gone = f"{gone}|{client.dead_letter(gone).dead_at!r}"
    client.purge_dead_letters()  # ... and `gone` purged meanwhile too
    killed(client, "a third one, that nobody saw")
    with console_app(settings) as http:
        csrf = signed_in(http)
        reply = http.post("/console/dead-letters/act", data={"action": "purge", "item": [shown, shown_gone],
                                                              "csrf": csrf})
        assert acted(reply) == {job_id: "gone", gone: "gone"}
    # Only what was shown: a record for a new death after it was shown is another record.
    job_id = killed(client, "fourth")
    shown = f"{job_id}|{client.dead_letter(job_id).dead_at!r}"
    assert client.replay(job_id) == "ok"
    payload = json.loads(str(r.hget(keys.job(job_id), "payload")))
    client.dlq.kill(job_id, DeadReason.EXHAUSTED, "again", payload=payload, expect_state="queued")
    with console_app(settings) as http:
        csrf = signed_in(http)
        for action in ("purge", "replay"):
            reply = http.post("/console/dead-letters/act", data={"action": action, "item": shown, "csrf": csrf})
            assert acted(reply) == {job_id: "changed"}
    assert client.dead_letter(job_id).error == "again" and client.dlq.count() == 2


def test_filters_by_provider_and_time_range(settings: Settings, client: Client, r: redis.Redis) -> None:
    old = killed(client, "old one")
    record = json.loads(str(r.get(keys.dead_letter(old))))
    record["dead_at"] = 1_700_000_000.0  # 2023-11-14T22:13:20 UTC
    record["history"] = [{"provider": "secondary", "attempt": 1, "outcome": "failure"}]
    r.set(keys.dead_letter(old), json.dumps(record))
    new = killed(client, "new one")
    with console_app(settings) as http:
        signed_in(http)

        def shown(**params: str) -> set[str]:
            page = http.get("/console/dead-letters", params=params)
            return set(re.findall(r'<tr data-id="([0-9a-f]+)"', page.text))

        assert shown() == {old, new}
        assert shown(since="2023-11-14T22:13:21") == {new}
        assert shown(until="2023-11-14T22:13:20") == {old}
        assert shown(provider="secondary") == {old}
        assert shown(provider="primary") == set()
        # Hostile text is shown as text; a made-up or oversized id is refused before anything is read.
        r.set(keys.dead_letter(new), json.dumps({**json.loads(str(r.get(keys.dead_letter(new)))),
                                                 "error": "<script>alert(1)</script>"}))
        page = http.get("/console/dead-letters").text
        assert "<script>alert(1)" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
        csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
        assert csrf
        for bad in ("x" * 5000 + "|1.0", "../../etc|1.0", f"{new}|not-a-time"):
            reply = http.post("/console/dead-letters/preview", data={"action": "purge", "item": bad,
                                                                      "csrf": csrf.group(1)})
            assert reply.status_code == 422 and "Nothing done" in reply.text
        assert r.llen(keys.CONSOLE_AUDIT) == 0


def test_without_tokens_only_loopback_may_use_the_console(settings: Settings, r: redis.Redis) -> None:
    app = create_app(settings)  # no api.tokens
    with TestClient(app, base_url="http://127.0.0.1") as remote:  # its client address is "testclient"
        assert remote.get("/console/dead-letters").status_code == 403
    local = TestClient(app, base_url="http://127.0.0.1", client=("127.0.0.1", 50000))
    assert local.get("/console/dead-letters").status_code == 200
    # A loopback client reached through another host name (DNS rebinding) is refused.
    assert local.get("/console/dead-letters", headers={"Host": "evil.example:8080"}).status_code == 403


def test_a_form_with_too_many_fields_is_refused_with_a_message(settings: Settings, client: Client) -> None:
    # parse_qs raises past max_num_fields: that was a 500 and a traceback, even on the open sign-in form.
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    crowd = "&".join(["x=1"] * 6000)
    with console_app(settings) as http:
        reply = http.post("/console/login", content=f"token={TOKEN}&{crowd}", headers=form)
        assert reply.status_code == 413 and "fields" in reply.json()["detail"], reply.text
        job_id = killed(client, "Where is my parcel?")
        csrf = signed_in(http)
        reply = http.post("/console/dead-letters/act", content=f"csrf={csrf}&action=purge&{crowd}", headers=form)
        assert reply.status_code == 413 and "fields" in reply.json()["detail"], reply.text
        assert client.dlq.show(job_id).id == job_id  # nothing was purged


def test_signing_out_ends_the_session_even_for_a_copy_of_its_cookie(settings: Settings, client: Client) -> None:
    # The cookie is stateless: before, Sign out only asked this browser to forget it, and a copy
    # (another browser, a proxy log, a shared machine) kept working until it expired (8 h).
    killed(client, "Where is my parcel?")
    with console_app(settings) as http:
        signed_in(http)
        cookie = http.cookies[COOKIE]
        out = http.post("/console/logout", follow_redirects=False)
        assert out.status_code == 303
    with console_app(settings) as copy:
        copy.cookies.set(COOKIE, cookie)
        assert copy.get("/console/dead-letters", follow_redirects=False).status_code == 303  # to the login form
        assert copy.get("/openapi.json").status_code == 401
    with console_app(settings) as other:  # another session of the same token is not affected
        signed_in(other)
        assert other.get("/console/workers").status_code == 200
