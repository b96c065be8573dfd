"""The status page's Activity view and its JSON twin: behind the status login, one search by
email or name tells a visitor's story (why no credential, too), and markup in names is inert
(a real headless Chromium looks)."""

import time

import requests

FLOW = "flow-visitor"
INJECTED_NAME = (
    'Eve <img src=x onerror="window.__pwned=1;alert(1)">'
    "</script><script>window.__pwned=2;alert(2)</script>"
)


def _with_password(daemon, password="pw"):
    daemon.ctx.config = daemon.ctx.config.replace(admin_password=password)
    return ("admin", password)


def _visit(daemon, email, name, flow=FLOW, entry_id="e-1"):
    return daemon.deliver(
        daemon.entry(
            entry_id=entry_id, email=email, full_name=name, flow_id=flow, signed_in_at=time.time()
        )
    )


def _stories(daemon):
    daemon.install()
    assert _visit(daemon, "ada@example.com", "Ada Lovelace").status_code == 200
    assert _visit(daemon, "bob@example.com", "Bob Builder", "flow-nope", "e-2").status_code == 400
    assert _visit(daemon, "eve@example.com", INJECTED_NAME, entry_id="e-3").status_code == 200


def test_activity_is_behind_the_status_login(daemon):
    _stories(daemon)
    for path in ("/status/activity?q=ada", "/status/activity.json?q=ada"):
        assert requests.get(daemon.url + path, timeout=5).status_code == 403
        _with_password(daemon)
        assert requests.get(daemon.url + path, timeout=5).status_code == 401
        wrong = requests.get(daemon.url + path, auth=("admin", "nope"), timeout=5)
        assert wrong.status_code == 401 and "Ada" not in wrong.text
        daemon.ctx.config = daemon.ctx.config.replace(admin_password="")


def test_the_json_twin_tells_the_story_and_the_state(daemon):
    _stories(daemon)
    auth = _with_password(daemon)
    found = requests.get(
        f"{daemon.url}/status/activity.json", params={"q": "ada@example.com"}, auth=auth, timeout=5
    ).json()
    assert [g["state"] for g in found["grants"]] == ["active"]
    assert [e["kind"] for e in found["entries"]] == ["planned", "proxy", "issued"]
    assert {e["email"] for e in found["entries"]} == {"ada@example.com"}


def test_why_no_credential_is_one_search_away(daemon):
    _stories(daemon)
    auth = _with_password(daemon)
    found = requests.get(
        f"{daemon.url}/status/activity.json", params={"q": "Bob"}, auth=auth, timeout=5
    ).json()
    assert found["grants"] == []
    [entry] = found["entries"]
    assert entry["kind"] == "ignored" and "not mapped" in entry["reason"]
    page = requests.get(
        f"{daemon.url}/status/activity", params={"q": "Bob"}, auth=auth, timeout=5
    ).text
    assert "never given access" in page and "not mapped" in page


def test_an_empty_search_shows_only_the_form(daemon):
    auth = _with_password(daemon)
    answer = requests.get(f"{daemon.url}/status/activity", auth=auth, timeout=5)
    assert answer.status_code == 200
    assert "<form" in answer.text and "Story" not in answer.text
    assert "form-action 'self'" in answer.headers["Content-Security-Policy"]


def test_markup_in_names_is_escaped_in_the_page(daemon):
    _stories(daemon)
    auth = _with_password(daemon)
    page = requests.get(
        f"{daemon.url}/status/activity", params={"q": "eve@example.com"}, auth=auth, timeout=5
    ).text
    assert "<img" not in page and page.count("<script") == 0
    assert "&lt;img src=x onerror=&quot;window.__pwned=1;alert(1)&quot;&gt;" in page


def test_a_real_browser_searches_by_email_and_runs_nothing(daemon, tmp_path, admin_browser):
    _stories(daemon)
    _with_password(daemon, "browser-pw")
    browser = admin_browser("browser-pw")
    page = browser.page
    # From the status page, as an admin would: follow the link, type, search.
    assert page.goto(f"{daemon.url}/status", wait_until="load").status == 200
    page.click("text=Activity")
    page.fill("#q", "ada@example.com")
    page.click("button[type=submit]")
    page.wait_for_selector("#story")
    story = page.inner_text("#story")
    assert "issued" in story and "active" in story and "Ada Lovelace" in story
    assert "active" in page.inner_text("#grants")
    assert "Bob" not in page.inner_text("body")
    # The visitor whose name carries markup: shown as text, nothing runs.
    page.fill("#q", "eve@example.com")
    page.click("button[type=submit]")
    page.wait_for_selector("#story")
    page.wait_for_timeout(200)  # room for an onerror handler, had one been parsed
    assert INJECTED_NAME in page.inner_text("#story")
    assert page.evaluate("typeof window.__pwned") == "undefined"
    assert page.locator("img").count() == 0
    assert page.locator("script").count() == 0
    shot = tmp_path / "activity.png"
    page.screenshot(path=str(shot), full_page=True)
    assert browser.dialogs == [] and browser.errors == []
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
