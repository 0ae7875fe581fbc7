"""The `mmgen serve` page in a real browser: headless Chromium (Debian's `chromium` and
`chromium-driver`) driven by Selenium. Types a prompt, clicks Generate, waits for the gallery,
checks the images are PNGs of the right size, the messages for bad prompts, and that the page
loads nothing from outside the server. Saves a screenshot (docs/img/serve.png when
MMGEN_UPDATE_SCREENSHOT=1, else a temporary file).

Skipped when Chromium, chromedriver or selenium is missing, unless MMGEN_REQUIRE_BROWSER=1
(set by .ci/run, which installs Chromium), where a missing browser fails the test."""
from __future__ import annotations

import io
import os
import re
import shutil
import threading
import urllib.request
from pathlib import Path

import pytest
from PIL import Image

from mmgen.web import make_server
from tests.serve_fakes import FakePipeline, fake_make_grid

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
CHROMEDRIVER = shutil.which("chromedriver")
try:
    import selenium  # noqa: F401
    HAS_SELENIUM = True
except ImportError:
    HAS_SELENIUM = False

MISSING = ("selenium is not installed (pip install -e '.[test]')" if not HAS_SELENIUM else
           "Chromium is not installed (apt-get install chromium chromium-driver)" if not CHROMIUM else
           "chromedriver is not installed (apt-get install chromium-driver)" if not CHROMEDRIVER else None)

# Flags that run Chromium headless in a container without reaching the network.
CHROMIUM_FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                  "--no-first-run", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--disable-extensions", "--window-size=1280,900"]


@pytest.fixture
def browser(tmp_path):
    if MISSING:
        if os.environ.get("MMGEN_REQUIRE_BROWSER") == "1":
            pytest.fail(f"MMGEN_REQUIRE_BROWSER=1 (CI) but {MISSING}")
        pytest.skip(f"no browser to drive: {MISSING}")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must not look for drivers online
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS + [f"--user-data-dir={tmp_path / 'profile'}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def site():
    server = make_server("127.0.0.1", 0, pipeline_factory=lambda spec: FakePipeline(),
                         grid_maker=fake_make_grid)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server.url
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def fetch_png(url: str) -> Image.Image:
    with urllib.request.urlopen(url, timeout=10) as r:
        data = r.read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{url} is not a PNG"
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


def test_page_generates_in_a_real_browser(browser, site, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 20)
    el = lambda css: browser.find_element(By.CSS_SELECTOR, css)  # noqa: E731

    def message():
        box = el("#message")
        return box.text if box.is_displayed() else ""

    def submit(prompt: str) -> None:
        box = el("#prompt")
        box.clear()
        box.send_keys(prompt)
        el("#generate").click()

    browser.get(site)
    # the model list arrives, the default model loads and shows the words it knows
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#vocab button")) > 0)
    assert [o.get_attribute("value") for o in el("#model").find_elements(By.TAG_NAME, "option")][:3] == \
        ["dalle_shapes", "dalle_emoji", "ddpm_shapes"]
    words = [b.text for b in browser.find_elements(By.CSS_SELECTOR, "#vocab button")]
    assert "circle" in words and words == sorted(words)
    assert not el("#steps").is_enabled()          # DALL-E: no sampling steps

    # bad prompts: a message on the page, nothing generated
    submit("zebra unicorn")
    wait.until(lambda d: "knows no word" in message())
    assert not browser.find_elements(By.CSS_SELECTOR, "#gallery img")
    submit("red " * 20)
    wait.until(lambda d: "too long" in message())
    el("#prompt").clear()
    el("#generate").click()
    wait.until(lambda d: "empty prompt" in message())

    # a good prompt: the gallery fills with 256 px PNGs, their CLIP scores and the seed
    num = el("#num-images")
    num.clear()
    num.send_keys("3")
    seed = el("#seed")
    seed.clear()
    seed.send_keys("11")
    submit("a red circle above a blue square")
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#gallery img")) == 3 and all(
        d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", i) == 256
        for i in d.find_elements(By.CSS_SELECTOR, "#gallery img")))
    assert message() == ""
    assert el("#seed-used").text == "11"
    for img in browser.find_elements(By.CSS_SELECTOR, "#gallery img"):
        assert fetch_png(img.get_attribute("src")).size == (256, 256)
    scores = [s.text for s in browser.find_elements(By.CSS_SELECTOR, "#gallery .score")]
    assert len(scores) == 3 and all(re.fullmatch(r"CLIP \d+\.\d\d", s) for s in scores), scores
    links = [a.get_attribute("href") for a in browser.find_elements(By.CSS_SELECTOR, "#gallery figcaption a")]
    assert len(links) == 3 and fetch_png(links[0]).size == (256, 256)
    assert fetch_png(el("#grid-link").get_attribute("href")).size == (3 * 256, 256)

    shot = REPO / "docs" / "img" / "serve.png" if os.environ.get("MMGEN_UPDATE_SCREENSHOT") == "1" \
        else tmp_path / "serve.png"
    shot.parent.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(shot))
    assert Image.open(shot).size[0] >= 800

    # clicking a known word adds it to the prompt
    next(b for b in browser.find_elements(By.CSS_SELECTOR, "#vocab button") if b.text == "triangle").click()
    assert el("#prompt").get_attribute("value").endswith(" triangle")

    # unknown words: a warning, and the images still come (a random seed, shown)
    seed.clear()
    submit("a red zebra")
    wait.until(lambda d: "zebra" in el("#warnings").text and el("#seed-used").text != "11")
    assert message() == ""

    # the page loaded nothing from elsewhere and raised no script error (a CSP refusal would be logged
    # here); the only errors are the browser's notes on the 400 answers to the bad prompts above
    logs = browser.get_log("browser")
    expected = [e for e in logs if e["source"] == "network" and "/api/generate" in e["message"]
                and "status of 400" in e["message"]]
    assert len(expected) == 2, logs
    errors = [e for e in logs if e["level"] == "SEVERE" and e not in expected]
    assert errors == [], errors
