"""The upload page in headless Chromium (Debian's chromium + chromedriver, driven by Selenium):
upload a real image, read the shown class and confidence, compare with the API."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_infer import Classifier
from edge_infer.result import Status
from tests.conftest import start_cli

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


def _upload(browser, page_url, image: Path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(page_url)
    WebDriverWait(browser, 20).until(
        lambda d: "Model all-pbs" in d.find_element(By.ID, "model-line").text
    )
    browser.find_element(By.ID, "files").send_keys(str(image))
    return WebDriverWait(browser, 30).until(
        ec.presence_of_element_located((By.CSS_SELECTOR, "[data-testid=result-headline]"))
    )


def test_upload_shows_the_api_verdict(browser, page_url, sample_images):
    from selenium.webdriver.common.by import By

    image = sample_images[9]
    want = Classifier().predict(image)
    headline = _upload(browser, page_url, image)
    assert headline.text == want.headline
    assert headline.get_attribute("data-status") == want.status.value
    assert headline.get_attribute("data-label") == (want.label or "")
    conf = browser.find_element(By.CSS_SELECTOR, "[data-testid=result-confidence]")
    assert abs(float(conf.get_attribute("data-confidence")) - want.confidence) < 1e-5
    assert f"{100 * want.confidence:.1f}%" in conf.text
    footer = browser.find_element(By.ID, "footer").text
    assert "Screening aid" in footer
    # every split's figure the model carries (the optimistic one said so)
    assert all(m.title in footer for m in Classifier().meta.metrics), footer
    imgs = browser.find_elements(By.CSS_SELECTOR, ".card img")
    assert len(imgs) == 2 and all(i.get_attribute("naturalWidth") != "0" for i in imgs)
    SHOTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(SHOTS / "upload-page.png"))
    assert (SHOTS / "upload-page.png").stat().st_size > 10_000


def test_not_recognised_upload_headlines_not_recognised(browser, page_url, tmp_path):
    """A smooth colour gradient with no cell: the headline says "Not recognised", no class
    name and no confidence are shown."""
    from selenium.webdriver.common.by import By

    x = np.linspace(0, 1, 224)[None, :, None]
    img = np.concatenate([x * 200, x * 120 + 60, 255 - x * 100], axis=2) * np.ones((224, 1, 1))
    path = tmp_path / "gradient.png"
    cv2.imwrite(str(path), img.astype(np.uint8))
    want = Classifier().predict(path)
    assert want.status is Status.OUT_OF_DISTRIBUTION
    headline = _upload(browser, page_url, path)
    assert headline.text.startswith("Not recognised")
    assert headline.get_attribute("data-status") == "out_of_distribution"
    assert headline.get_attribute("data-label") == ""
    assert not browser.find_elements(By.CSS_SELECTOR, "[data-testid=result-confidence]")
    card = browser.find_element(By.CSS_SELECTOR, ".card").text
    for c in Classifier().meta.classes:
        assert c.display not in card.split("Network output")[0], c.display
    browser.save_screenshot(str(SHOTS / "not-recognised.png"))


def test_a_frame_read_as_tiles_opens_on_its_tiles(browser, page_url, data, tmp_path):
    """A 5 MP camera frame of 36 fields: the page shows the one answer (the API's), and opens
    its picture on the tiles, each outlined in its answer's colour; the segmentation and
    where the model looked are one click away."""
    from selenium.webdriver.common.by import By

    fields = [cv2.imread(str(p)) for p in sorted((data / "Original" / "Pro").glob("*.jpg"))[:36]]
    six = np.vstack([np.hstack(fields[r * 6 : (r + 1) * 6]) for r in range(6)])
    path = tmp_path / "frame.jpg"
    cv2.imwrite(str(path), cv2.resize(six, (2592, 1944), interpolation=cv2.INTER_AREA))
    want = Classifier().predict(path)
    assert want.tiles is not None
    headline = _upload(browser, page_url, path)
    assert headline.text == want.headline
    overlay = browser.find_element(By.CSS_SELECTOR, "[data-testid=overlay]")
    assert overlay.get_attribute("alt") == "tiles"
    assert overlay.get_attribute("naturalWidth") == "1024"  # the frame as the runtime read it
    toggle = browser.find_element(By.CSS_SELECTOR, "[data-testid=tiles-toggle]")
    assert f"{len(want.tiles)} tiles" in toggle.get_attribute("textContent")
    assert not toggle.is_displayed()  # the view shown has no button of its own
    browser.save_screenshot(str(SHOTS / "frame-tiles.png"))
    browser.find_element(By.CSS_SELECTOR, "[data-testid=segmentation-toggle]").click()
    assert overlay.get_attribute("alt") == "segmentation overlay"
    assert toggle.is_displayed()
    # where the model looked: the CAMs of the tiles that gave the answer, over the whole frame
    browser.find_element(By.CSS_SELECTOR, "[data-testid=cam-toggle]").click()
    assert overlay.get_attribute("alt") == "class activation map"
    assert overlay.get_attribute("naturalWidth") == "1024"
    caption = overlay.find_element(By.XPATH, "following-sibling::figcaption")
    assert "in the tiles that gave this answer" in caption.text


def test_another_site_in_the_browser_cannot_use_the_server(browser, page_url, tmp_path):
    """A page from another origin (another port) POSTs an image to the server the way a
    malicious web page would (no-cors, a "simple" request the browser sends without asking):
    the server refuses it and classifies nothing."""
    import functools
    import http.server
    import json
    import threading
    import urllib.request

    target = page_url + "api/classify"
    (tmp_path / "evil.html").write_text(
        "<script>fetch(" + json.dumps(target) + ", {method: 'POST', mode: 'no-cors', "
        "headers: {'Content-Type': 'text/plain'}, body: 'x'.repeat(5000)})"
        ".then(() => { document.title = 'sent'; }, () => { document.title = 'sent'; });"
        "</script>"
    )
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    other = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=other.serve_forever, daemon=True).start()

    def health():
        with urllib.request.urlopen(page_url + "healthz", timeout=10) as r:
            return json.load(r)

    before = health()
    try:
        browser.get(f"http://localhost:{other.server_address[1]}/evil.html")
        from selenium.webdriver.support.ui import WebDriverWait

        WebDriverWait(browser, 20).until(lambda d: d.title == "sent")
    finally:
        other.shutdown()
    after = health()
    assert after["refused"] == before["refused"] + 1
    assert after["classified"] == before["classified"]


def test_site_check_report_is_offline_and_linked_from_the_page(browser, tmp_path, data):
    """The report opens with no request to anywhere and shows its verdict first; a server
    given it shows the verdict in the page's footer and links to it."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from tests.conftest import run_cli
    from train import acquisition as acq

    site = tmp_path / "site"
    site.mkdir()
    for c in ("Benign", "Early", "Pre", "Pro"):
        for src in sorted((data / "Original" / c).glob("*.jpg"))[40:50]:
            cv2.imwrite(str(site / (src.stem + ".png")), acq.brightness(cv2.imread(str(src)), 0.85))
    report = tmp_path / "site-check.html"
    r = run_cli("check-site", site, "--report", report)
    assert r.returncode in (0, 3, 4) and report.exists(), r.stderr
    browser.get(report.as_uri())
    verdict = browser.find_element(By.ID, "verdict")
    words = verdict.text
    assert words.split(":")[0] in ("Fits", "Fits, but check", "Does not fit")
    assert verdict.location["y"] < 200  # the verdict comes first
    requests = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)"
    )
    assert [u for u in requests if not u.startswith("data:")] == []
    SHOTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(SHOTS / "site-check.png"))

    proc = start_cli("serve", "--port", "0", "--site-report", report)
    try:
        url = re.search(r"(http://[\d.]+:\d+/)", proc.stderr.readline()).group(1)
        browser.get(url)
        link = WebDriverWait(browser, 20).until(
            lambda d: d.find_elements(By.CSS_SELECTOR, "#site-check a")
        )[0]
        assert link.text == words
        link.click()
        WebDriverWait(browser, 20).until(lambda d: d.find_elements(By.ID, "verdict"))
        assert browser.find_element(By.ID, "verdict").text == words
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_images_dropped_together_are_one_case_with_its_verdict_first(browser, page_url, data):
    """Several files chosen at once: the case card comes first, with the verdict the case rule
    of edge_infer.cases gives for the same records; then each image."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from edge_infer.cases import one_case

    images = sorted((data / "Original" / "Pro").glob("*.jpg"))[:4]
    clf = Classifier()
    want = one_case([p.to_record() for p in clf.predict_batch(images)], clf.meta, "x")
    browser.get(page_url)
    WebDriverWait(browser, 20).until(
        lambda d: "Model all-pbs" in d.find_element(By.ID, "model-line").text
    )
    browser.find_element(By.ID, "files").send_keys("\n".join(str(p) for p in images))
    verdict = WebDriverWait(browser, 60).until(
        lambda d: d.find_element(By.CSS_SELECTOR, "[data-testid=case-verdict]")
    )
    assert verdict.text == want["verdict"]
    assert verdict.get_attribute("data-verdict") == want["case_verdict"]
    cards = browser.find_elements(By.CSS_SELECTOR, "#results .group:first-child .card")
    assert "case" in cards[0].get_attribute("class") and len(cards) == 5
    assert "Benign" in browser.find_element(By.ID, "classes-line").text
