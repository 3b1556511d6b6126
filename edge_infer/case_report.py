"""The printable case report: `edge-infer classify ... --cases --report cases.html`.

One self-contained HTML file (no script, no font, no request: its Content-Security-Policy
forbids them; thumbnails are data: URLs) that prints on A4: per case its verdict and rule
first, then each image as a thumbnail (with the model's class activation map when the model
has one), its class, confidence and status. "Screening aid, not a diagnosis" is at the top and
in a footer that Chromium repeats on every printed page.
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

import cv2
import numpy as np

from .image.decode import load_image
from .image.segment import cam_overlay
from .io.writers import printable
from .result import CONFIDENCE, HEADLINE, LABEL, NOT_RECOGNISED, PATH, STATUS, VERDICT, Status

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
NOT_A_DIAGNOSIS = (
    "Screening aid for trained staff, not a diagnosis: every result must be confirmed by a "
    "specialist (morphology, flow cytometry)."
)
#: thumbnails drawn per case (the counts cover every image)
MAX_THUMBNAILS = 60
THUMBNAIL_PX = 120
STYLE = """
@page{size:A4;margin:14mm 12mm 18mm}
body{font:13px/1.4 system-ui,sans-serif;color:#222;margin:0 auto;max-width:60em;padding:0 1em}
h1{font-size:1.3em;margin:.6em 0 .2em}h2{font-size:1.12em;margin:0 0 .4em}
.note{background:#f4f4f4;border-left:4px solid #555;padding:.4em .7em;margin:.6em 0}
.case{border:1px solid #bbb;border-radius:6px;padding:.8em;margin:1em 0;break-inside:avoid-page}
.verdict{font-size:1.2em;font-weight:600;padding:.5em .7em;border-radius:5px;margin:.3em 0}
.malignant{background:#fde4e4;color:#8a1111}.benign{background:#e3f4e6;color:#1d5a17}
.review,.insufficient{background:#fff4dd;color:#6b4e00}
.rule,.counts{color:#555;font-size:.92em;margin:.2em 0}
.grid{display:flex;flex-wrap:wrap;gap:.5em;margin-top:.5em}
figure{margin:0;width:130px;font-size:.8em;break-inside:avoid}
figure img{width:120px;height:120px;object-fit:contain;background:#eee;display:block}
.footer{position:fixed;bottom:0;left:0;right:0;font-size:.8em;color:#444;background:#fff;
padding:.2em 1em;border-top:1px solid #ccc}
@media screen{.footer{position:static;margin-top:2em}}
"""

STATUS_WORDS = {
    Status.OK.value: "answered",
    Status.UNCERTAIN.value: Status.UNCERTAIN.value,
    Status.OUT_OF_DISTRIBUTION.value: "not recognised",
    Status.ERROR.value: "unreadable",
}


def thumbnail(path: str, cam: np.ndarray | None) -> str | None:
    """A JPEG data URL of the image (with its CAM laid over it), or None if unreadable."""
    try:
        bgr = load_image(path)
    except Exception:  # an unreadable image has its error in the record already
        return None
    if cam is not None:
        bgr = cam_overlay(bgr, cam)
    h, w = bgr.shape[:2]
    scale = THUMBNAIL_PX / max(h, w)
    small = cv2.resize(bgr, (max(1, round(w * scale)), max(1, round(h * scale))), cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, 82])
    return "data:image/jpeg;base64," + base64.b64encode(buf.tobytes()).decode() if ok else None


def _figure(rec: Mapping[str, Any], cam: np.ndarray | None) -> str:
    src = thumbnail(str(rec[PATH]), cam)
    img = f'<img alt="" src="{src}">' if src else "<div></div>"
    name = escape(printable(str(rec[PATH]).rsplit("/", 1)[-1]))
    status = STATUS_WORDS.get(str(rec.get(STATUS)), str(rec.get(STATUS)))
    answer = escape(status)
    conf = rec.get(CONFIDENCE)
    if rec.get(LABEL) and isinstance(conf, float):  # a result that must not be used names none
        answer += f": {escape(str(rec[LABEL]))} {100 * conf:.1f}%"
    return (
        f"<figure>{img}<figcaption><b>{name}</b><br>{answer}<br>"
        f"<span class=rule>{escape(str(rec.get(HEADLINE) or ''))}</span></figcaption></figure>"
    )


def render(
    cases: Sequence[Mapping[str, Any]],
    images: Mapping[str, Sequence[tuple[Mapping[str, Any], np.ndarray | None]]],
    model: str,
) -> str:
    """The report of `cases` (case records); `images` maps a case id to its (record, CAM)."""
    when = dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    blocks = []
    for c in cases:
        shown = list(images.get(c["case"], ()))
        more = len(shown) - MAX_THUMBNAILS
        figures = "".join(_figure(rec, cam) for rec, cam in shown[:MAX_THUMBNAILS])
        note = f"<p class=counts>{more} more images not drawn</p>" if more > 0 else ""
        blocks.append(
            f'<section class="case" data-case="{escape(printable(str(c["case"])))}">'
            f"<h2>Case {escape(printable(str(c['case'])))}</h2>"
            f'<div class="verdict {escape(str(c["case_verdict"]))}" data-testid="case-verdict">'
            f"{escape(str(c[VERDICT]))}</div>"
            f"<p class=rule>Rule: {escape(str(c['rule']))}</p>"
            f"<p class=counts>{c['images']} images: {c['answered']} answered, "
            f"{c[Status.UNCERTAIN.value]} uncertain, {c[NOT_RECOGNISED]} not recognised, "
            f"{c['unreadable']} unreadable</p>"
            f"<div class=grid>{figures}</div>{note}</section>"
        )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<title>Case report</title><style>{STYLE}</style></head>
<body>
<h1>Case report, model {escape(model)}</h1>
<p class="note"><strong>{escape(NOT_A_DIAGNOSIS)}</strong></p>
<p class="counts">{len(cases)} cases, {escape(when)}. Thumbnails show where the model looked when
the model has a class activation map (red: what drove the answer most).</p>
{"".join(blocks)}
<div class="footer">{escape(NOT_A_DIAGNOSIS)} Model {escape(model)}.</div>
</body></html>
"""
