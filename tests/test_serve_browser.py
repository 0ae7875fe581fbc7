"""The `mmgen serve` page in a real browser: headless Chromium (Debian's `chromium` and
`chromium-driver`) driven by Selenium. Types a prompt, clicks Generate, waits for the gallery,
checks the images are PNGs of the right size, the messages for bad prompts, the progress
while it works, and that the page loads nothing from outside the server.

The first test serves a stand-in pipeline (tests/serve_fakes.py); the second the shipped
dalle_shapes through mmgen.pipelines and, with MMGEN_UPDATE_SCREENSHOT=1, writes the README's
screenshot docs/img/serve.png:

    MMGEN_UPDATE_SCREENSHOT=1 python -m pytest -q tests/test_serve_browser.py -k real

Skipped when Chromium, chromedriver or selenium is missing, unless MMGEN_REQUIRE_BROWSER=1
(set by .ci/run, which installs Chromium), where a missing browser fails the test."""
from __future__ import annotations

import importlib.util
import io
import os
import re
import shutil
import threading
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest
from PIL import Image

from mmgen.web import make_server
from tests.serve_fakes import FakePipeline, fake_make_grid

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
CHROMEDRIVER = shutil.which("chromedriver")
HAS_SELENIUM = importlib.util.find_spec("selenium") is not None
HAS_PIPELINES = importlib.util.find_spec("mmgen.pipelines") is not None
MISSING = ("selenium is not installed (pip install -e '.[test]')" if not HAS_SELENIUM else
           "Chromium is not installed (apt-get install chromium chromium-driver)" if not CHROMIUM else
           "chromedriver is not installed (apt-get install chromium-driver)" if not CHROMEDRIVER else None)

# Flags that run Chromium headless in a container without reaching the network.
CHROMIUM_FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                  "--no-first-run", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--disable-extensions", "--hide-scrollbars", "--window-size=1280,1000"]


@pytest.fixture(scope="module")
def chromium(tmp_path_factory):
    if MISSING:
        if os.environ.get("MMGEN_REQUIRE_BROWSER") == "1":
            pytest.fail(f"MMGEN_REQUIRE_BROWSER=1 (CI) but {MISSING}")
        pytest.skip(f"no browser to drive: {MISSING}")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must not look for drivers online
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS + [f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def browser(chromium):
    chromium.get_log("browser")  # start each test with an empty console log
    yield chromium
    chromium.get("about:blank")


@contextmanager
def serving(**kw):
    server = make_server("127.0.0.1", 0, **kw)
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


class Page:
    """The few things the tests do on the page."""

    def __init__(self, driver, timeout: float):
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import WebDriverWait

        self.d, self.By, self.wait = driver, By, WebDriverWait(driver, timeout).until

    def el(self, css):
        return self.d.find_element(self.By.CSS_SELECTOR, css)

    def all(self, css):
        return self.d.find_elements(self.By.CSS_SELECTOR, css)

    def open(self, url):
        self.d.get(url)
        self.wait(lambda d: self.all("#vocab button"))  # the default model loaded, its words shown

    def message(self) -> str:
        box = self.el("#message")
        return box.text if box.is_displayed() else ""

    def set(self, css, value) -> None:
        box = self.el(css)
        box.clear()
        box.send_keys(value)

    def submit(self, prompt: str) -> None:
        self.set("#prompt", prompt)
        self.el("#generate").click()

    def wait_gallery(self, n: int) -> list:
        def loaded(d):
            imgs = self.all("#gallery img")
            return len(imgs) == n and all(
                d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", i) for i in imgs)
        self.wait(loaded)
        return self.all("#gallery img")

    def screenshot(self, tmp_path) -> Path:
        shot = REPO / "docs" / "img" / "serve.png" if os.environ.get("MMGEN_UPDATE_SCREENSHOT") == "1" \
            else tmp_path / "serve.png"
        shot.parent.mkdir(parents=True, exist_ok=True)
        assert self.d.save_screenshot(str(shot))
        assert Image.open(shot).size[0] >= 800
        return shot

    def console_errors(self, expected_400s: int) -> list:
        """SEVERE console entries besides the browser's notes on the expected 400 answers (a CSP
        refusal of anything from outside the server would be one)."""
        logs = self.d.get_log("browser")
        notes = [e for e in logs if e["source"] == "network" and "/api/generate" in e["message"]
                 and "status of 400" in e["message"]]
        assert len(notes) == expected_400s, logs
        return [e for e in logs if e["level"] == "SEVERE" and e not in notes]


def test_page_generates_in_a_real_browser(browser, tmp_path):
    pipe = FakePipeline()
    with serving(pipeline_factory=lambda spec: pipe, grid_maker=fake_make_grid) as url:
        page = Page(browser, 20)
        page.open(url)
        options = [o.get_attribute("value") for o in page.all("#model option")]
        assert options[:3] == ["dalle_shapes", "dalle_emoji", "ddpm_shapes"]
        words = [b.text for b in page.all("#vocab button")]
        assert "circle" in words and words == sorted(words)
        assert not page.el("#steps").is_enabled()          # DALL-E: no sampling steps

        # bad prompts: a message on the page, nothing generated
        page.submit("zebra unicorn")
        page.wait(lambda d: "knows no word" in page.message())
        assert not page.all("#gallery img")
        page.submit("red " * 20)
        page.wait(lambda d: "too long" in page.message())
        page.el("#prompt").clear()
        page.el("#generate").click()
        page.wait(lambda d: "empty prompt" in page.message())

        # a good prompt: progress while it works, then 256 px PNGs, their CLIP scores and the seed
        pipe.gate = threading.Event()
        page.set("#num-images", "3")
        page.set("#seed", "11")
        page.submit("a red circle above a blue square")
        page.wait(lambda d: "generating" in page.el("#progress-text").text)
        assert page.el("#progress").is_displayed() and not page.el("#generate").is_enabled()
        pipe.gate.set()
        imgs = page.wait_gallery(3)
        assert page.message() == "" and not page.el("#progress").is_displayed()
        assert page.el("#seed-used").text == "11"
        for img in imgs:
            assert img.get_property("naturalWidth") == 256
            assert fetch_png(img.get_attribute("src")).size == (256, 256)
        scores = [s.text for s in page.all("#gallery .score")]
        assert len(scores) == 3 and all(re.fullmatch(r"CLIP \d+\.\d\d", s) for s in scores), scores
        links = [a.get_attribute("href") for a in page.all("#gallery figcaption a")]
        assert len(links) == 3 and fetch_png(links[0]).size == (256, 256)
        assert fetch_png(page.el("#grid-link").get_attribute("href")).size == (3 * 256, 256)
        if not HAS_PIPELINES:  # until the real pipelines exist, the stand-in's page is the screenshot
            page.screenshot(tmp_path)

        # clicking a known word adds it to the prompt
        next(b for b in page.all("#vocab button") if b.text == "triangle").click()
        assert page.el("#prompt").get_attribute("value").endswith(" triangle")

        # unknown words: a warning, and the images still come (a random seed, shown)
        page.el("#seed").clear()
        page.submit("a red zebra")
        page.wait(lambda d: "zebra" in page.el("#warnings").text and page.el("#seed-used").text != "11")
        assert page.message() == ""
        assert page.console_errors(expected_400s=2) == []


@pytest.mark.skipif(not HAS_PIPELINES, reason="mmgen.pipelines (the generation pipelines) is not in this tree yet")
def test_real_dalle_shapes_in_a_real_browser(browser, tmp_path):
    with serving() as url:  # the real load_pipeline and make_grid
        page = Page(browser, 120)
        page.open(url)
        assert page.el("#model").get_attribute("value") == "dalle_shapes"
        assert {"red", "circle", "above"} <= {b.text for b in page.all("#vocab button")}
        page.submit("zebra unicorn")   # no word the model knows
        page.wait(lambda d: page.message() != "")
        # the README's screenshot shows two prompts; the plain test run keeps to one (CPU time)
        prompts = ["a red circle above a blue square", "a green triangle left of a yellow cross"]
        if os.environ.get("MMGEN_UPDATE_SCREENSHOT") != "1":
            prompts = prompts[:1]
        page.set("#num-images", "3")
        page.set("#seed", "0")
        page.submit("\n".join(prompts))
        imgs = page.wait_gallery(3 * len(prompts))
        assert page.message() == "" and page.el("#seed-used").text == "0"
        size = imgs[0].get_property("naturalWidth")
        assert size >= 128
        for img in imgs:
            assert fetch_png(img.get_attribute("src")).size == (size, size)
        page.screenshot(tmp_path)
        assert page.console_errors(expected_400s=1) == []
