"""The dashboard in a real headless Chromium (Debian's ``chromium`` and ``chromium-driver``,
driven by Selenium) over a real gateway: one browser session for the whole module."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from model_repo import Repository
from model_repo.drift import summarise

from . import loop_models
from .conftest import API_KEY, make_settings, serve, wait_for

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                                reason="needs Debian's chromium and chromium-driver (packaging/setup.sh installs them)")
KEY = {"X-API-Key": API_KEY}
X = {"inputs": [{"name": "X", "datatype": "FP32", "shape": [2, 4], "data": [1, 0, 0, .5, 0, 1, 0, .5]}]}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("dashboard") / "repo"
    repo = Repository(root)
    # Version 1 records the inputs it was made for (uniform noise), so the traffic below drifts.
    reference = np.random.default_rng(0).uniform(0, 1, (500, 4)).astype(np.float32)
    with repo.staging("clf") as staged:
        (staged / "model.onnx").write_bytes(loop_models.classifier())
        repo.publish("clf", staged, config=loop_models.classifier_config("clf"),
                     input_summary=summarise(reference).to_dict())
    # No automatic decision while the page watches: the tests decide with the page's buttons.
    settings = make_settings(root, api_key=API_KEY, loop={
        "canary_fraction": 0.5, "canary_window_requests": 100_000, "canary_min_requests": 100_000})
    with serve(settings) as gateway:
        yield gateway


@pytest.fixture(scope="module")
def browser():
    options = Options()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1400,1250", "--disable-extensions", "--no-first-run"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _severe(driver) -> list[str]:
    """The console's errors since the last call (reading the log empties it)."""
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def _text(driver, css: str) -> str:
    """Read in the page in one step: the page redraws its tables every poll, so an element
    found by one WebDriver call may be gone by the next."""
    return driver.execute_script("const e = document.querySelector(arguments[0]); return e ? e.textContent : ''", css)


def _shown(driver, css: str) -> bool:
    return driver.execute_script("return document.querySelector(arguments[0]) !== null", css)


def _polls(driver) -> int:
    return int(driver.find_element(By.ID, "updated").get_attribute("data-polls"))


def _wait_polls(driver, more: int = 2) -> None:
    """Wait for the page to take ``more`` fresh looks at the gateway."""
    start = _polls(driver)
    wait_for(lambda: _polls(driver) >= start + more, what=f"{more} more dashboard polls")


def _screenshot(driver, tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    assert driver.save_screenshot(str(path)), "no screenshot"
    if os.environ.get("TUNEGATE_SCREENSHOT_DIR"):
        target = Path(os.environ["TUNEGATE_SCREENSHOT_DIR"])
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target / name)
    return path


def _live_canary(server) -> int:
    """The canary on trial, publishing a fine-tuned version first if none is."""
    live = server.json("GET", "/v2/models/clf/canary", headers=KEY)[1].get("canary")
    if live is None:
        version = loop_models.publish(server.repo, "clf", loop_models.classifier(), fine_tuned=True)
        wait_for(lambda: (server.json("GET", "/v2/models/clf/canary", headers=KEY)[1].get("canary") or {})
                 .get("version") == version, what=f"canary {version} live")
        return version
    return live["version"]


def _traffic(server, n: int) -> None:
    for _ in range(n):
        status, body = server.json("POST", "/v2/models/clf/infer", X)
        assert status == 200, body


def test_page_loads_without_console_errors_and_shows_the_versions(server, browser):
    browser.get(f"http://{server.url}/dashboard")
    wait_for(lambda: _shown(browser, '#versions tr[data-version="1"][data-role="stable"]'),
             what="version 1 shown as stable")
    _wait_polls(browser)
    assert _text(browser, "#model-name") == "clf"
    assert _text(browser, '#models button[data-model="clf"]') == "clf"
    assert "no canary" in _text(browser, "#canary-state")
    # Without the key the page never tries a protected read (each refusal would be a console error).
    assert "API key needed" in _text(browser, "#leader")
    assert _severe(browser) == []


def test_canary_panel_follows_a_live_canary(server, browser, tmp_path):
    version = _live_canary(server)
    wait_for(lambda: browser.find_element(By.ID, "canary-panel").get_attribute("data-version") == str(version),
             what="canary panel on the new version")
    row = f'#versions tr[data-version="{version}"]'
    wait_for(lambda: _shown(browser, f'{row}[data-role="canary"]'), what="canary row")
    assert _text(browser, f"{row} td:nth-child(5)") == "1"  # its parent
    assert "fine-tune" in _text(browser, row)

    requests = '#canary-numbers tr[data-side="canary"] td[data-key="requests"]'
    seen = []
    for _ in range(3):  # the numbers move with the traffic, poll after poll
        _traffic(server, 30)
        wait_for(lambda: _text(browser, requests).isdigit() and int(_text(browser, requests)) > (seen or [0])[-1],
                 what="canary request count to grow")
        seen.append(int(_text(browser, requests)))
    assert seen == sorted(seen) and len(set(seen)) == 3
    series = browser.execute_script("return Object.keys(page.series.clf || {})")
    assert f"rps.v{version}" in series and f"ms.v{version}" in series, series
    # Per-feature PSI as soon as rows are sampled (the overall score waits for more rows).
    wait_for(lambda: "drift.feature 0 PSI" in browser.execute_script("return Object.keys(page.series.clf || {})"),
             what="drift per feature plotted")
    assert "feature 0" in _text(browser, "#drift-now")
    shot = _screenshot(browser, tmp_path, "dashboard-canary.png")
    assert shot.stat().st_size > 10_000
    assert _severe(browser) == []


def test_actions_are_refused_without_the_key_and_work_with_it(server, browser, tmp_path):
    version = _live_canary(server)
    result = browser.find_element(By.ID, "action-result")
    browser.find_element(By.ID, "rollback").click()
    wait_for(lambda: result.get_attribute("data-status") == "401", what="rollback refused")
    assert "refused" in result.text
    assert server.json("GET", "/v2/models/clf/canary", headers=KEY)[1]["canary"]["version"] == version
    errors = _severe(browser)  # the browser reports the refused call itself, and nothing else
    assert errors and all("canary/rollback" in e and "401" in e for e in errors), errors

    browser.find_element(By.ID, "key").send_keys(API_KEY)
    browser.find_element(By.ID, "key-save").click()
    wait_for(lambda: "this process" in _text(browser, "#leader"), what="the leader, read with the key")
    browser.find_element(By.ID, "rollback").click()
    wait_for(lambda: result.get_attribute("data-status") == "200", what="rollback done")
    wait_for(lambda: _shown(browser, f'#versions tr[data-version="{version}"][data-role="rejected"]'),
             what="rolled-back version shown as rejected")
    wait_for(lambda: "rolled_back" in _text(browser, "#last-canary"), what="last decision shown")
    manifest = server.repo.read_manifest("clf", version)
    assert manifest.status == "rejected", json.dumps(manifest.to_dict())
    _screenshot(browser, tmp_path, "dashboard-after-rollback.png")
    assert _severe(browser) == []


def test_cells_are_compact_and_say_their_verdict_once(server, browser):
    """The versions table's verdict cells: one word, a short detail, the report on hover."""
    browser.get(f"http://{server.url}/dashboard")
    _wait_polls(browser)
    rows = browser.execute_script("""
        return [...document.querySelectorAll('#versions td.verdict')].map((td) => ({
            text: td.textContent, word: td.firstChild.textContent, title: td.title,
            height: td.getBoundingClientRect().height}));""")
    assert rows
    line = browser.execute_script("return parseFloat(getComputedStyle(document.querySelector('#versions td')).lineHeight) || 20")
    for cell in rows:
        assert cell["height"] < 2.5 * line, cell  # one line, never a wrapped paragraph
        if cell["word"] not in ("–", "see details"):  # "passed: gate passed: ..." said it three times
            assert cell["text"].lower().count(cell["word"].lower()) == 1, cell
            assert cell["title"], cell  # the whole report on hover
    assert _severe(browser) == []


def test_the_job_log_shows_the_trainers_own_lines(server, browser):
    lines = ["[0]<stderr>:I0000 00:00:1796633849.504736    8381 port.cc:153] oneDNN custom operations are on.",
             "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
             "[0]<stdout>:epoch 1/3 loss 0.31",
             "I0000 00:00:1796633773.417065    7022 cpu_feature_guard.cc:227] This TensorFlow binary is optimized",
             "To enable the following instructions: AVX2 AVX512F, in other operations, rebuild TensorFlow",
             "digits: version 2 published (parent 1)"]
    shown = browser.execute_script("return trainerLines(arguments[0])", lines)
    assert shown == ["[0]<stdout>:epoch 1/3 loss 0.31", "digits: version 2 published (parent 1)",
                     "(4 lines of TensorFlow start-up output hidden)"]


def test_a_chart_with_no_traffic_spans_zero_to_one(server, browser):
    """Throughput with no requests is a flat 0: its axis reads 0 to 1, never -1 to 1."""
    labels = browser.execute_script("""
        const canvas = document.createElement('canvas'); canvas.width = 300; canvas.height = 120;
        const ctx = canvas.getContext('2d'), said = [], fill = ctx.fillText.bind(ctx);
        ctx.fillText = (text, x, y) => { said.push(String(text)); fill(text, x, y); };
        drawLines(canvas, [{name: 'v1', points: [[0, 0], [1, 0], [2, 0]]}], {title: 't', xLabel: 'time (s)'});
        return said;""")
    assert "1.00" in labels and "0.00" in labels and not any(label.startswith("-") for label in labels), labels
