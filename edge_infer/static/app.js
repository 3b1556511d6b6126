// The upload page: sends each chosen image to /api/classify and shows what comes back.
"use strict";

const WORDS = {
  Benign: "Benign (hematogone)",
  Early: "Early Pre-B ALL",
  Pre: "Pre-B ALL",
  Pro: "Pro-B ALL",
};

const drop = document.getElementById("drop");
const input = document.getElementById("files");
const results = document.getElementById("results");

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  for (const c of children) node.append(c);
  return node;
}

function pct(p) { return (100 * p).toFixed(1) + "%"; }

function render(card, file, rec) {
  card.replaceChildren(el("h2", {}, file.name));
  if (rec.error) {
    card.append(el("div", { class: "banner error", "data-testid": "error" },
      "Could not classify: " + rec.error));
    return;
  }
  const malignant = rec.label !== "Benign";
  const verdict = el("div", { class: "verdict" },
    el("div", { class: "label " + (malignant ? "malignant" : "benign"), "data-testid": "label",
                "data-label": rec.label }, WORDS[rec.label] || rec.label),
    el("div", { class: "confidence", "data-testid": "confidence",
                "data-confidence": String(rec.confidence) },
       "Confidence " + pct(rec.confidence) + " (calibrated)"));
  if (rec.out_of_distribution) {
    verdict.append(el("div", { class: "banner ood", "data-testid": "ood" },
      "Not recognised: " + rec.message + ". Do not use this result."));
  } else if (rec.uncertain) {
    verdict.append(el("div", { class: "banner uncertain", "data-testid": "uncertain" },
      "Uncertain: review by a specialist."));
  }
  for (const [cls, p] of Object.entries(rec.probabilities)) {
    const fill = el("div", { class: "fill" });
    fill.style.width = pct(p);
    verdict.append(el("div", { class: "bar" }, el("span", {}, WORDS[cls] ? cls : cls),
      el("div", { class: "track" }, fill), el("span", {}, pct(p))));
  }
  card.append(el("div", { class: "row" },
    el("figure", {}, el("img", { src: rec.image_png, alt: "uploaded image" }),
       el("figcaption", {}, "image")),
    el("figure", {}, el("img", { src: rec.overlay_png, alt: "segmentation overlay" }),
       el("figcaption", {}, "green: colour-threshold segmentation; orange: all stained cells")),
    verdict));
}

async function classify(file) {
  const card = el("article", { class: "card" }, el("h2", {}, file.name), "Classifying...");
  results.prepend(card);
  try {
    const resp = await fetch("/api/classify?overlay=1", {
      method: "POST",
      headers: { "Content-Type": "application/octet-stream" },
      body: file,
    });
    const rec = await resp.json();
    render(card, file, rec);
  } catch (err) {
    render(card, file, { error: String(err) });
  }
}

function handle(files) { for (const f of files) classify(f); }

input.addEventListener("change", () => handle(input.files));
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  handle(e.dataTransfer.files);
});

fetch("/api/model").then((r) => r.json()).then((m) => {
  const x = m.metrics || {};
  const acc = x.test_accuracy !== undefined ? pct(x.test_accuracy) : "n/a";
  const sens = x.malignant_sensitivity !== undefined ? pct(x.malignant_sensitivity) : "n/a";
  document.getElementById("model-line").textContent =
    `Model ${m.model_version}: test accuracy ${acc}, malignant sensitivity ${sens} ` +
    `(n=${x.test_n}, held-out split of the public ALL dataset, Aria et al. 2021). ` +
    `Results below ${pct(m.uncertain_below)} confidence are marked uncertain.`;
}).catch(() => {
  document.getElementById("model-line").textContent = "Model information unavailable.";
});
