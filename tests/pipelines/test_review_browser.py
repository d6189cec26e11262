"""The review workbench in a real browser: Debian's headless Chromium driven by Selenium through
/usr/bin/chromedriver (no browser download). A keyboard-only session's decisions are read back
from Parquet; axe-core (bundled by axe-selenium-python) checks WCAG 2.1 AA in both themes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from matteflow.pipelines.review import latest, read_decisions
from tests.pipelines.review_fixtures import make_run, running_server

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WCAG_AA = ["wcag2a", "wcag2aa", "wcag21aa"]  # the tags axe-core 3.1 knows for WCAG 2.1 AA


@pytest.fixture
def browser() -> Iterator[Any]:
    """Headless Chromium under Selenium; skips when Debian's chromium or chromedriver is absent."""
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip(
            f"{CHROMIUM} or {CHROMEDRIVER} absent (apt-get install chromium chromium-driver)"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1400,1000",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_script_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def _open(driver: Any, url: str) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url)
    WebDriverWait(driver, 30).until(
        lambda d: d.execute_script("return document.body.dataset.ready") == "true"
    )


def _keys(driver: Any, *keys: str) -> None:
    """Press keys one at a time on whatever has focus (no mouse anywhere)."""
    from selenium.webdriver.common.action_chains import ActionChains

    for key in keys:
        ActionChains(driver).send_keys(key).perform()


def _settled(driver: Any) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, 30).until(
        lambda d: d.execute_script("return document.body.dataset.inflight") == "0"
    )


def _js(driver: Any, script: str) -> Any:
    return driver.execute_script(script)


def _axe(driver: Any, selector: str = "html") -> dict[str, Any]:
    """axe-core's results for the part of the page `selector` matches, WCAG 2.1 A and AA rules
    only.

    Injected from axe-selenium-python's bundled axe.min.js; run with a callback and returned
    as JSON (its own `run` helper hangs on this Chromium).
    """
    from axe_selenium_python import Axe

    Axe(driver).inject()
    script = (
        "const done = arguments[arguments.length - 1];"
        "axe.run(arguments[1], {runOnly: {type: 'tag', values: arguments[0]}},"
        " (err, res) => done(err ? {error: String(err)} : JSON.stringify(res)));"
    )
    answer = driver.execute_async_script(script, WCAG_AA, selector)
    assert isinstance(answer, str), answer
    results: dict[str, Any] = json.loads(answer)
    return results


def test_a_keyboard_only_session_is_recorded_as_parquet(browser: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.keys import Keys

    out = make_run(tmp_path)
    with running_server(out, reviewer="tester") as url:
        _open(browser, url)
        assert _js(browser, "return document.activeElement.id") == "tile-0"
        # The help dialog opens on ? and closes on ?.
        _keys(browser, "?")
        assert _js(browser, "return document.getElementById('help').open") is True
        _keys(browser, "?")
        assert _js(browser, "return document.getElementById('help').open") is False
        # Background and zoom change the view, not the decisions.
        _keys(browser, "b")
        assert "bg-white" in _js(browser, "return document.getElementById('stage').className")
        _keys(browser, "z")
        assert _js(browser, "return document.getElementById('cutout').src").endswith("/img/0/edge")
        _keys(browser, "z", "j", "k")
        assert _js(browser, "return document.getElementById('cutout').src").endswith(
            "/img/0/cutout"
        )
        # a: score 4 and accept; b: reject; c: retry with the model the dialog offers first;
        # d: score 2 and accept; e: accept, then undo.
        _keys(browser, "4", "a", "r", "m")
        assert _js(browser, "return document.getElementById('models').open") is True
        chosen = _js(browser, "return document.activeElement.value")
        _keys(browser, Keys.ENTER, "2", "a", "a", "u")
        _settled(browser)
        current = _js(browser, "return document.activeElement.id")
        badges = _js(
            browser,
            "return [...document.querySelectorAll('#grid .badge')].map(b => b.textContent)",
        )
        loaded = _js(
            browser,
            "return ['cutout','mask','source'].map(i => document.getElementById(i).naturalWidth)",
        )
    assert chosen == "isnet-general-use"  # the first registry model other than the run's
    assert current == "tile-4"  # undo went back to e
    assert badges == ["accepted", "rejected", "retry with isnet-general-use", "accepted", "pending"]
    assert all(width > 0 for width in loaded)
    rows = read_decisions(str(out))
    assert [(d.id, d.decision, d.score, d.model_suggested) for d in rows] == [
        ("a", "accept", 4, None),
        ("b", "reject", None, None),
        ("c", "retry", None, "isnet-general-use"),
        ("d", "accept", 2, None),
        ("e", "accept", None, None),
        ("e", "undo", None, None),
    ]
    assert {d.reviewer for d in rows} == {"tester"}
    assert all(0 < d.seconds < 120 for d in rows)
    # a was on screen through the help, background and zoom keys before its decision.
    assert rows[0].seconds > rows[1].seconds
    assert {i: d.decision for i, d in latest(rows).items()} == {
        "a": "accept",
        "b": "reject",
        "c": "retry",
        "d": "accept",
    }


def test_a_score_after_the_decision_is_a_new_row_and_undo_takes_it_back(
    browser: Any, tmp_path: Path
) -> None:
    out = make_run(tmp_path)
    with running_server(out) as url:
        _open(browser, url)
        _keys(browser, "a", "k", "5")  # accept a, back to a, score it
        _settled(browser)
        scored = _js(browser, "return document.getElementById('fact-score').textContent")
        _keys(browser, "u")
        _settled(browser)
        badge = _js(browser, "return document.querySelector('#tile-0 .badge').textContent")
    assert (scored, badge) == ("5", "accepted")
    rows = read_decisions(str(out))
    assert [(d.id, d.decision, d.score) for d in rows] == [
        ("a", "accept", None),
        ("a", "accept", 5),
        ("a", "undo", None),
    ]
    assert latest(rows)["a"].score is None


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_no_wcag_aa_violation_and_a_visible_focus(browser: Any, tmp_path: Path, theme: str) -> None:
    out = make_run(tmp_path)
    browser.execute_cdp_cmd(
        "Emulation.setEmulatedMedia",
        {"features": [{"name": "prefers-color-scheme", "value": theme}]},
    )
    with running_server(out) as url:
        _open(browser, url)
        _keys(browser, "a", "r")  # badges of both kinds on the page
        _settled(browser)
        background = _js(browser, "return getComputedStyle(document.body).backgroundColor")
        focus = _js(
            browser,
            "const s = getComputedStyle(document.activeElement);"
            "return [document.activeElement.id, s.outlineStyle, parseFloat(s.outlineWidth)]",
        )
        page = _axe(browser)
        # Each dialog, open (the page behind it is inert under a backdrop), and its focus.
        _keys(browser, "?")
        help_dialog = _axe(browser, "#help")
        _keys(browser, "?", "m")
        radio = _js(
            browser,
            "const s = getComputedStyle(document.activeElement);"
            "return [document.activeElement.type, s.outlineStyle, parseFloat(s.outlineWidth)]",
        )
        models_dialog = _axe(browser, "#models")
    assert background == ("rgb(18, 18, 18)" if theme == "dark" else "rgb(255, 255, 255)")
    assert focus[0] == "tile-2" and focus[1] == "solid" and focus[2] >= 2
    assert radio[0] == "radio" and radio[1] == "solid" and radio[2] >= 2
    for results in (page, help_dialog, models_dialog):
        violations = [(v["id"], [n["html"] for n in v["nodes"]]) for v in results["violations"]]
        assert violations == []
        checked = [rule["id"] for rule in results["passes"]]
        assert "color-contrast" in checked
        unsure = [r for r in results["incomplete"] if r["id"] == "color-contrast"]
        assert unsure == [], [n["html"] for r in unsure for n in r["nodes"]]
