"""`edge-infer check-site` on real images: the committed test split as a site, the same images
under a darker lamp, a blue cast, defocus, half the magnification and a grayscale camera, a
folder too small to judge, and labelled sub-folders checked against `classify`."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import cv2
import pytest

from edge_infer.result import NOT_RECOGNISED, Status
from edge_infer.site.rules import EXIT_CODES, MIN_SITE_IMAGES, Verdict
from tests.conftest import BUNDLED, ROOT, run_cli
from train import acquisition as acq
from train.dataset import read_manifest, select

pytestmark = pytest.mark.skipif(not BUNDLED.exists(), reason="needs the bundled model")
PER_CLASS = 15


@pytest.fixture(scope="module")
def site_images(data) -> list[tuple[str, Path]]:
    """(class, path) of the first 15 test-split images of each class (60 in all)."""
    test = select(read_manifest(ROOT / "splits" / "manifest.csv"), "test")
    out = []
    for c in ("Benign", "Early", "Pre", "Pro"):
        out += [(c, data / r.path) for r in [x for x in test if x.label == c][:PER_CLASS]]
    return out


def make_site(folder: Path, images, change=lambda x: x, labelled=True) -> Path:
    for label, src in images:
        dest = folder / label if labelled else folder
        dest.mkdir(parents=True, exist_ok=True)
        out = change(cv2.imread(str(src)))
        cv2.imwrite(str(dest / (src.stem + ".png")), out)  # PNG: no second JPEG loss
    return folder


def check(folder: Path, *extra) -> tuple[int, dict, str]:
    report_json = folder.parent / (folder.name + ".json")
    r = run_cli(
        "check-site",
        folder,
        "--report",
        folder.parent / (folder.name + ".html"),
        "--json",
        report_json,
        *extra,
    )
    figures = json.loads(report_json.read_text()) if report_json.exists() else {}
    return r.returncode, figures, r.stdout + r.stderr


def test_the_source_labs_test_images_fit_and_match_classify(tmp_path, site_images):
    site = make_site(tmp_path / "clean", site_images)
    rc, figures, out = check(site, "--labelled")
    assert rc == EXIT_CODES[Verdict.FITS], out
    assert figures["site_verdict"] == Verdict.FITS.value and figures["n_images"] == 60
    assert out.startswith("Fits:")
    html = (tmp_path / "clean.html").read_text()
    assert 'data-verdict="fits"' in html and "http://" not in html and "https://" not in html
    # the confusion matrix is classify's, on the same files
    files = sorted(site.rglob("*.png"))
    r = run_cli("classify", *files, "--format", "jsonl")
    by_path = {rec["path"]: rec for rec in map(json.loads, r.stdout.splitlines())}
    expected = Counter(
        (Path(p).parent.name, rec["label"] or NOT_RECOGNISED) for p, rec in by_path.items()
    )
    lab = figures["labelled"]
    got = Counter(
        {
            (row, col): n
            for row, counts in zip(lab["rows"], lab["confusion"], strict=True)
            for col, n in zip(lab["columns"], counts, strict=True)
            if n
        }
    )
    assert got == expected
    answered = [rec for rec in by_path.values() if rec["status"] == Status.OK.value]
    right = sum(rec["label"] == Path(rec["path"]).parent.name for rec in answered)
    assert lab["accuracy_ok"]["k"] == right and lab["accuracy_ok"]["n"] == len(answered)


def grayscale(img):
    return cv2.cvtColor(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)


SHIFTS = {
    # name: (change, the statistic named, words of the fix, the statistic that must NOT be blamed)
    "darker": (lambda x: acq.brightness(x, 0.85), "lamp brightness", "turn the lamp up", "focus"),
    "bluish": (
        lambda x: acq.white_balance(x, 0.0, -20.0),
        "white balance, red vs blue",
        "bluer",
        "focus",
    ),
    "blurred": (lambda x: acq.defocus(x, 2.0), "focus", "refocus", "cell size"),
    "half magnification": (
        lambda x: acq.geometry(x, scale=0.5),
        "cell size",
        "higher magnification",
        "focus",
    ),
    "grayscale": (grayscale, "stain strength", "colour mode", "cell size"),
}


@pytest.mark.parametrize("name", list(SHIFTS))
def test_a_changed_microscope_is_named_with_its_fix(tmp_path, site_images, name):
    change, topic, fix, not_blamed = SHIFTS[name]
    site = make_site(tmp_path / "site", site_images, change, labelled=False)
    rc, figures, out = check(site)
    assert rc in (EXIT_CODES[Verdict.CHECK], EXIT_CODES[Verdict.DOES_NOT_FIT]), out
    findings = figures["findings"]
    named = [f for f in findings if f["topic"].startswith(topic)]
    assert named, out
    assert fix in named[0]["fix"], named[0]
    assert not any(f["topic"].startswith(not_blamed) for f in findings), out
    if name == "grayscale":  # nothing the model can see through: do not use
        assert rc == EXIT_CODES[Verdict.DOES_NOT_FIT]
        assert figures["site_verdict"] == Verdict.DOES_NOT_FIT.value


def test_too_few_images_are_refused(tmp_path, site_images):
    site = make_site(tmp_path / "small", site_images[:10], labelled=False)
    rc, figures, out = check(site)
    assert rc == 2 and f"at least {MIN_SITE_IMAGES}" in out and not figures
    assert not (tmp_path / "small.html").exists()


def test_labelled_images_outside_a_class_folder_are_refused(tmp_path, site_images):
    site = make_site(tmp_path / "lab", site_images[:40])
    (site / "unsorted").mkdir()
    cv2.imwrite(str(site / "unsorted" / "x.png"), cv2.imread(str(site_images[0][1])))
    rc, _, out = check(site, "--labelled")
    assert rc == 2 and "not in a folder named after a class" in out
