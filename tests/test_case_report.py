"""The printable case report: one file that loads nothing, opened in the real browser; each
case's verdict first; a result that must not be used shows no class."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.test_browser import browser  # noqa: F401 - the shared headless Chromium


@pytest.fixture
def report(tmp_path, data) -> tuple[Path, list[dict]]:
    for slide, cls in (("s1", "Pre"), ("s2", "Benign")):
        (tmp_path / slide).mkdir()
        for p in sorted((data / "Original" / cls).glob("*.jpg"))[:5]:
            shutil.copy(p, tmp_path / slide / p.name)
    out = tmp_path / "cases.html"
    r = run_cli("classify", "-r", tmp_path, "--cases", "--report", out, "--format", "jsonl")
    assert r.returncode == 0, r.stderr
    cases = [json.loads(x) for x in r.stdout.splitlines() if '"kind": "case"' in x]
    return out, cases


def test_the_report_is_self_contained_and_leads_with_each_verdict(browser, report):  # noqa: F811
    from selenium.webdriver.common.by import By

    path, cases = report
    html = path.read_text(encoding="utf-8")
    assert "Content-Security-Policy" in html and "http://" not in html and "<script" not in html
    browser.get(path.as_uri())
    resources = browser.execute_script("return performance.getEntriesByType('resource').length")
    assert resources == 0
    sections = browser.find_elements(By.CSS_SELECTOR, "section.case")
    assert len(sections) == len(cases) == 2
    for section, case in zip(sections, cases, strict=True):
        first = section.find_elements(By.CSS_SELECTOR, "h2, div, p")[1]
        assert first.get_attribute("data-testid") == "case-verdict"
        assert first.text == case["verdict"]
        imgs = section.find_elements(By.CSS_SELECTOR, "figure img")
        assert imgs and all(i.get_attribute("naturalWidth") != "0" for i in imgs)
    assert "not a diagnosis" in browser.find_element(By.CSS_SELECTOR, ".footer").text
    pdf = browser.print_page()  # prints (A4 in the page's own @page rule)
    assert len(pdf) > 1000


def test_not_recognised_images_show_no_class(report):
    path, _ = report
    html = path.read_text(encoding="utf-8")
    for fig in html.split("<figure>")[1:]:
        if "not recognised" in fig.split("<br>")[1]:
            assert "%" not in fig.split("<br>")[1]
