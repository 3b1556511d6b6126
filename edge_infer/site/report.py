"""The site check as one self-contained HTML file: no script, no font, no request to anywhere
(a Content-Security-Policy forbids it); charts are inline SVG, thumbnails data: URLs."""

from __future__ import annotations

import base64
import datetime as dt
import re
from html import escape, unescape

from ..io.writers import printable
from ..result import Status
from .rules import VERDICT_WORDS, SiteReport, StatSummary, Verdict

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
VERDICT_CLASS = {Verdict.FITS: "fits", Verdict.CHECK: "check", Verdict.DOES_NOT_FIT: "nofit"}
STATUS_WORDS = {
    Status.OK.value: "answered",
    Status.UNCERTAIN.value: Status.UNCERTAIN.value,
    Status.OUT_OF_DISTRIBUTION.value: "not recognised",
    Status.ERROR.value: "unreadable",
}
STYLE = """
body{font:15px/1.45 system-ui,sans-serif;margin:2em auto;max-width:62em;color:#222;padding:0 1em}
h1{font-size:1.3em;margin:0 0 .2em} h2{font-size:1.1em;margin:1.6em 0 .5em}
.verdict{padding:1em 1.2em;border-radius:6px;font-size:1.25em;font-weight:600;margin:1em 0}
.fits{background:#e3f4e6;border:2px solid #2e7d32}
.check{background:#fff4dd;border:2px solid #b26a00}
.nofit{background:#fde4e4;border:2px solid #b71c1c}
table{border-collapse:collapse;margin:.4em 0}td,th{padding:.25em .6em;border-bottom:1px solid #ddd;
text-align:left;vertical-align:top}th{background:#f4f4f4}
td.n{text-align:right;font-variant-numeric:tabular-nums}
.sev-does_not_fit{color:#b71c1c;font-weight:600}.sev-fits_but_check{color:#8a5300;font-weight:600}
.grid{display:flex;flex-wrap:wrap;gap:.6em}.grid figure{margin:0;width:110px;font-size:.75em}
.grid img{width:96px;height:96px;object-fit:contain;background:#eee;display:block}
.muted{color:#666;font-size:.9em} svg text{font:11px system-ui,sans-serif}
"""


def _pct(x: float) -> str:
    return f"{x:.1%}"


def stat_chart(s: StatSummary, width: int = 420, height: int = 34) -> str:
    """Training range (grey: 5-95%, line: 1-99%, tick: median) under the lab's (blue band:
    5-95%, dot: median), on one axis."""
    t, lab = s.training, s.lab
    if not lab:
        return '<span class="muted">not measurable on these images</span>'
    values = [t["p1"], t["p99"], lab["p5"], lab["p95"]]
    lo, hi = min(values), max(values)
    pad = (hi - lo) * 0.05 or 1.0
    lo, hi = lo - pad, hi + pad

    def x(v: float) -> float:
        return 10 + (v - lo) / (hi - lo) * (width - 20)

    colour = "#b26a00" if s.direction else "#1565c0"
    return (
        f'<svg width="{width}" height="{height}" role="img" '
        f'aria-label="{escape(s.stat.title)}: lab median {lab["median"]:.3g}, training '
        f'{t["p5"]:.3g} to {t["p95"]:.3g}">'
        f'<line x1="{x(t["p1"]):.1f}" x2="{x(t["p99"]):.1f}" y1="10" y2="10" stroke="#999"/>'
        f'<rect x="{x(t["p5"]):.1f}" y="5" width="{max(1.0, x(t["p95"]) - x(t["p5"])):.1f}" '
        f'height="10" fill="#ccc"/>'
        f'<line x1="{x(t["median"]):.1f}" x2="{x(t["median"]):.1f}" y1="3" y2="17" '
        f'stroke="#333" stroke-width="2"/>'
        f'<rect x="{x(lab["p5"]):.1f}" y="21" width="{max(1.0, x(lab["p95"]) - x(lab["p5"])):.1f}"'
        f' height="8" fill="{colour}" opacity=".35"/>'
        f'<circle cx="{x(lab["median"]):.1f}" cy="25" r="4.5" fill="{colour}"/>'
        "</svg>"
    )


def _findings(report: SiteReport) -> str:
    if not report.findings:
        return "<p>Nothing to change: the images sit inside what the model was trained on.</p>"
    rows = "".join(
        f'<tr><td class="sev-{f.severity.value}">{escape(VERDICT_WORDS[f.severity].split(":")[0])}'
        f"</td><td>{escape(f.topic)}</td><td>{escape(f.measured)}</td><td>{escape(f.fix)}</td></tr>"
        for f in report.findings
    )
    return (
        "<table><tr><th>severity</th><th>what</th><th>measured</th><th>what to do</th></tr>"
        f"{rows}</table>"
    )


def _shares(report: SiteReport) -> str:
    rows = "".join(
        f"<tr><td>{escape(STATUS_WORDS.get(k, k))}</td><td class=n>{_pct(v)}</td>"
        f"<td class=n>{round(v * report.n)}</td></tr>"
        for k, v in report.shares.items()
    )
    why = ", ".join(f"{escape(k)}: {v}" for k, v in sorted(report.refusals.items()))
    spread = ", ".join(f"{escape(k)} {v}" for k, v in report.predicted.items())
    return (
        f"<table><tr><th>result</th><th>share</th><th>images</th></tr>{rows}</table>"
        + (f"<p>Not recognised, by reason: {why}.</p>" if why else "")
        + f"<p>Classes given (answered and uncertain): {spread}.</p>"
    )


def _stats(report: SiteReport) -> str:
    rows = []
    for s in report.stats:
        t, lab = s.training, s.lab
        flag = {"low": "below training", "high": "above training"}.get(s.direction, "")
        nums = (
            f"lab {lab['median']:.3g} ({lab['p5']:.3g}-{lab['p95']:.3g})<br>"
            f"training {t['median']:.3g} ({t['p5']:.3g}-{t['p95']:.3g})"
            if lab
            else ""
        )
        rows.append(
            f"<tr><td>{escape(s.stat.title)}<br><span class=muted>{escape(s.stat.unit)}"
            f"</span></td><td>{stat_chart(s)}</td><td class=muted>{nums}</td>"
            f"<td class=sev-fits_but_check>{flag}</td></tr>"
        )
    return (
        '<p class="muted">Grey: the training images (band 5-95%, line 1-99%, bar: median). '
        "Dot and band: this site's images (median, 5-95%).</p>"
        "<table>" + "".join(rows) + "</table>"
    )


def _labelled(report: SiteReport) -> str:
    fig = report.labelled
    if not fig:
        return ""

    def rate(f: dict) -> str:
        if f["value"] is None:
            return "n/a"
        return f"{f['value']:.3f} ({f['k']}/{f['n']}, 95% CI {f['ci95'][0]:.3f}-{f['ci95'][1]:.3f})"

    head = "".join(f"<th>{escape(c)}</th>" for c in fig["columns"])
    body = "".join(
        f"<tr><th>{escape(r)}</th>" + "".join(f"<td class=n>{v}</td>" for v in row) + "</tr>"
        for r, row in zip(fig["rows"], fig["confusion"], strict=True)
    )
    recall = "".join(
        f"<tr><td>{escape(c)}</td><td>{rate(f)}</td></tr>" for c, f in fig["recall"].items()
    )
    return (
        "<h2>Against the lab's confirmed diagnoses</h2><table>"
        "<tr><td>accuracy of the answers given (status ok)</td>"
        f"<td>{rate(fig['accuracy_ok'])}</td></tr>"
        "<tr><td>accuracy, answered and uncertain</td>"
        f"<td>{rate(fig['accuracy_answered'])}</td></tr>"
        f"<tr><td>malignant sensitivity</td><td>{rate(fig['malignant_sensitivity'])}</td></tr>"
        f"{recall}</table>"
        "<p class=muted>Confusion matrix: rows the confirmed class, columns what the model "
        "reported.</p>"
        f"<table><tr><th>confirmed \\ reported</th>{head}</tr>{body}</table>"
    )


def _refused(report: SiteReport) -> str:
    shown = [im for im in report.images if im.thumbnail]
    total = sum(1 for im in report.images if im.outcome.status is Status.OUT_OF_DISTRIBUTION)
    if not total:
        return ""
    figs = "".join(
        f'<figure><img alt="" src="data:image/jpeg;base64,'
        f'{base64.b64encode(im.thumbnail).decode()}"><figcaption>'
        f"{escape(printable(im.path.rsplit('/', 1)[-1]))}<br>"
        f"{escape(im.why or im.outcome.reason.value)}"
        "</figcaption></figure>"
        for im in shown
    )
    more = f" (the first {len(shown)} shown)" if len(shown) < total else ""
    return f"<h2>Not recognised: {total} images{more}</h2><div class=grid>{figs}</div>"


VERDICT_META = "edge-infer-site-verdict"
#: the model the report was made with: "<version> <sha256 of the model file>"
MODEL_META = "edge-infer-site-model"


def model_of(html: str) -> tuple[str, str] | None:
    """(version, sha256) of the model a written report was made with, or None."""
    m = re.search(rf'<meta name="{MODEL_META}" content="([^" ]*) ([0-9a-f]{{64}})">', html)
    return (unescape(m.group(1)), m.group(2)) if m else None


def verdict_of(html: str) -> Verdict | None:
    """The verdict a written report holds (for the page's link to it), or None."""
    m = re.search(rf'<meta name="{VERDICT_META}" content="([a-z_]+)">', html)
    try:
        return Verdict(m.group(1)) if m else None
    except ValueError:
        return None


def render(report: SiteReport) -> str:
    when = dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    notes = "".join(f"<li>{escape(n)}</li>" for n in report.notes)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="{VERDICT_META}" content="{report.verdict.value}">
<meta name="{MODEL_META}" content="{escape(report.model.replace(" ", "_"))} {report.model_sha256}">
<title>Site check: {escape(report.verdict.value)}</title><style>{STYLE}</style></head>
<body>
<h1>Site check for model {escape(report.model)}</h1>
<p class="muted">Model file sha256 {report.model_sha256}.</p>
<p class="muted">{report.n} images from {escape(printable(report.folder))}, {escape(when)}.
The check changes nothing in the model: no guard or threshold is relaxed.</p>
<div class="verdict {VERDICT_CLASS[report.verdict]}" id="verdict"
 data-verdict="{report.verdict.value}">
{escape(VERDICT_WORDS[report.verdict])}</div>
<h2>Reasons and what to change</h2>{_findings(report)}
{f"<ul class=muted>{notes}</ul>" if notes else ""}
<h2>What the model answered</h2>{_shares(report)}
<h2>This site's images against the training images</h2>{_stats(report)}
{_labelled(report)}
{_refused(report)}
</body></html>
"""
