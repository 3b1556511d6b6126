"""The upload page in headless Chromium (Debian's chromium + chromedriver, driven by Selenium):
upload a real image, read the shown class and confidence, compare with the API."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from edge_infer import Classifier
from tests.conftest import start_cli

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
SHOTS = ROOT / "test-output"


@pytest.fixture(scope="module")
def browser():
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        msg = "Debian chromium/chromium-driver not installed"
        if os.environ.get("CI"):
            pytest.fail(msg + " (.ci/run installs them)")
        pytest.skip(msg)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-sync",
        "--disable-component-update",
        "--disable-dev-shm-usage",
        "--window-size=1200,900",
    ):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def page_url():
    proc = start_cli("serve", "--port", "0")
    m = re.search(r"(http://[\d.]+:\d+/)", proc.stderr.readline())
    assert m
    yield m.group(1)
    proc.terminate()
    proc.wait(timeout=20)


def test_upload_shows_the_api_verdict(browser, page_url, sample_images):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    image = sample_images[9]
    want = Classifier().predict(image)
    browser.get(page_url)
    WebDriverWait(browser, 20).until(
        lambda d: "Model all-pbs" in d.find_element(By.ID, "model-line").text
    )
    browser.find_element(By.ID, "files").send_keys(str(image))
    label = WebDriverWait(browser, 30).until(
        ec.presence_of_element_located((By.CSS_SELECTOR, "[data-testid=label]"))
    )
    conf = browser.find_element(By.CSS_SELECTOR, "[data-testid=confidence]")
    assert label.get_attribute("data-label") == want.label
    assert abs(float(conf.get_attribute("data-confidence")) - want.confidence) < 1e-5
    assert f"{100 * want.confidence:.1f}%" in conf.text
    assert "Screening aid" in browser.find_element(By.ID, "footer").text
    imgs = browser.find_elements(By.CSS_SELECTOR, ".card img")
    assert len(imgs) == 2 and all(i.get_attribute("naturalWidth") != "0" for i in imgs)
    SHOTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(SHOTS / "upload-page.png"))
    assert (SHOTS / "upload-page.png").stat().st_size > 10_000
