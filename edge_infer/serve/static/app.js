// The upload page: sends each chosen image to /api/classify and shows what comes back.
// Every word about a result (the headline) and every class name comes from the server: the
// record's `headline`, `status`, `label`, and the model's own metadata from /api/model.
"use strict";

const drop = document.getElementById("drop");
const input = document.getElementById("files");
const results = document.getElementById("results");
let model = { classes: [], status: {} };
const S = () => model.status; // the status words, from the server (edge_infer.result)
const modelReady = fetch("/api/model").then((r) => r.json()).then((m) => { model = m; return m; });

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  for (const c of children) node.append(c);
  return node;
}

function pct(p) { return (100 * p).toFixed(1) + "%"; }

function classInfo(name) {
  return model.classes.find((c) => c.name === name) || { name, display: name, malignant: false };
}

function render(card, file, rec) {
  card.replaceChildren(el("h2", {}, file.name));
  if (rec.status === S().ERROR || rec.error) {
    card.append(el("div", { class: "banner failed", "data-testid": "result-headline",
                            "data-status": S().ERROR },
                   rec.headline));
    return;
  }
  // the headline is the first thing read; a result that must not be used never shows a class
  const unusable = rec.status === S().OUT_OF_DISTRIBUTION;
  let tone = "unusable";
  if (rec.status === S().OK) tone = classInfo(rec.label).malignant ? "malignant" : "benign";
  else if (rec.status === S().UNCERTAIN) tone = "review";
  const panel = el("div", { class: "result-panel" },
    el("div", { class: "result-headline " + tone, "data-testid": "result-headline",
                "data-status": rec.status, "data-label": rec.label === null ? "" : rec.label },
       rec.headline));
  if (!unusable) {
    panel.append(el("div", { class: "result-confidence", "data-testid": "result-confidence",
                             "data-confidence": String(rec.confidence) },
      "Confidence " + pct(rec.confidence) + " (calibrated)"));
  }
  const bars = el("div", { class: unusable ? "bars muted" : "bars" });
  if (unusable) {
    bars.append(el("div", { class: "note" }, "Network output, for reference only:"));
  }
  for (const [cls, p] of Object.entries(rec.probabilities)) {
    const fill = el("div", { class: "fill" });
    fill.style.width = pct(p);
    bars.append(el("div", { class: "bar" }, el("span", { title: classInfo(cls).display }, cls),
      el("div", { class: "track" }, fill), el("span", {}, pct(p))));
  }
  panel.append(bars);
  const SEGMENTATION = "green: colour-threshold segmentation; orange: all stained cells";
  const CAM = "where the model looked (red: what drove the answer most)";
  const TILES = "each tile the model read, outlined in its answer's colour: red malignant, " +
    "green Benign, amber uncertain, grey not recognised (no outline: no stained cell)";
  // the pictures of this result, one shown at a time: an image read as tiles opens on its tiles
  const views = [{ src: rec.overlay_png, alt: "segmentation overlay", caption: SEGMENTATION,
                   button: "Show the segmentation", testid: "segmentation-toggle" }];
  if (rec.cam_png) {  // a model exported with its class activation map
    const caption = rec.tiles ? CAM + ", in the tiles that gave this answer" : CAM;
    views.push({ src: rec.cam_png, alt: "class activation map", caption,
                 button: "Show where the model looked", testid: "cam-toggle" });
  }
  if (rec.tiles_png) {
    views.push({ src: rec.tiles_png, alt: "tiles", caption: TILES,
                 button: `Show the ${rec.tiles.length} tiles`, testid: "tiles-toggle" });
  }
  const overlay = el("img", { "data-testid": "overlay" });
  const caption = el("figcaption", {});
  const figure = el("figure", {}, overlay, caption);
  const buttons = [];
  const show = (view) => {
    overlay.setAttribute("src", view.src);
    overlay.setAttribute("alt", view.alt);
    caption.textContent = view.caption;
    for (const b of buttons) b.hidden = b.dataset.testid === view.testid;
  };
  if (views.length > 1) {
    for (const view of views) {
      const b = el("button", { type: "button", "data-testid": view.testid }, view.button);
      b.addEventListener("click", () => show(view));
      buttons.push(b);
      figure.append(b);
    }
  }
  show(views[views.length - 1].alt === "tiles" ? views[views.length - 1] : views[0]);
  card.append(el("div", { class: "row" },
    el("figure", {}, el("img", { src: rec.image_png, alt: "uploaded image" }),
       el("figcaption", {}, "image")),
    figure,
    panel));
}

function errorHeadline(reason) {
  return (model.error_headline || "{reason}").replace("{reason}", reason);
}

async function classify(file, where) {
  const card = el("article", { class: "card" }, el("h2", {}, file.name), "Classifying...");
  where.append(card);
  let rec;
  try {
    await modelReady.catch(() => null);
    const resp = await fetch("/api/classify?overlay=1&cam=1", {
      method: "POST",
      headers: { "Content-Type": "application/octet-stream" },
      body: file,
    });
    rec = await resp.json();
  } catch (err) {
    rec = { status: S().ERROR, error: String(err), headline: errorHeadline(String(err)) };
  }
  render(card, file, rec);
  return rec.status ? rec : { ...rec, status: S().ERROR };
}

// images dropped together are one case: its verdict (the server's rule) comes first
async function renderCase(card, recs) {
  const resp = await fetch("/api/case", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ records: recs.map((r) => ({ status: r.status, label: r.label })) }),
  });
  const c = await resp.json();
  card.replaceChildren(
    el("h2", {}, `Case: ${recs.length} images dropped together`),
    el("div", { class: "case-verdict " + c.case_verdict, "data-testid": "case-verdict",
                "data-verdict": c.case_verdict }, c.verdict || c.headline),
    el("p", { class: "case-counts" }, `${c.answered} answered, ${c.uncertain} uncertain, ` +
       `${c.not_recognised} not recognised, ${c.unreadable} unreadable. Rule: ${c.rule}`));
}

async function handle(files) {
  const group = el("section", { class: "group" });
  results.prepend(group);
  let caseCard = null;
  if (files.length > 1) {
    caseCard = el("article", { class: "card case" }, "Classifying the case...");
    group.append(caseCard);
  }
  const recs = await Promise.all([...files].map((f) => classify(f, group)));
  if (caseCard) await renderCase(caseCard, recs).catch((err) => {
    caseCard.replaceChildren(errorHeadline(String(err)));
  });
}

input.addEventListener("change", () => handle(input.files));
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  handle(e.dataTransfer.files);
});

modelReady.then((m) => {
  // the classes as the model names them: the page spells none itself
  const benign = m.classes.filter((c) => !c.malignant).map((c) => c.display);
  const malignant = m.classes.filter((c) => c.malignant).map((c) => c.display);
  document.getElementById("classes-line").textContent =
    `${benign.join(", ")} or malignant: ${malignant.join(", ")}`;
  const figures = (m.metrics || []).map((x) =>
    `${x.title} (n=${x.n}): ` +
    `accuracy ${pct(x.accuracy)}, malignant sensitivity ${pct(x.malignant_sensitivity)}`);
  document.getElementById("model-line").textContent =
    `Model ${m.version}. Test figures on held-out images of the public ALL dataset ` +
    `(Aria et al. 2021): ${figures.join("; ") || "n/a"}. ` +
    (m.known_weakness ? `${m.known_weakness} ` : "") +
    `Results below ${pct(m.uncertain_below)} confidence are marked uncertain.`;
}).catch(() => {
  document.getElementById("model-line").textContent = "Model information unavailable.";
});

// the site check given to the server (edge-infer serve --site-report), if any
fetch("/api/site-check").then((r) => (r.ok ? r.json() : null)).then((s) => {
  if (!s) return;
  const p = document.createElement("p");
  p.id = "site-check";
  p.append("Site check for this microscope: ");
  const a = document.createElement("a");
  a.href = s.url;
  a.textContent = s.verdict_words;
  p.append(a);
  document.getElementById("footer").append(p);
}).catch(() => {});
