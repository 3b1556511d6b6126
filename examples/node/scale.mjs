// The scale rule of edge_infer.image.scale and the tile rule of edge_infer.tiles, in JavaScript.
//
// Red cells are about 7.5 um across in every human smear: their size in pixels says an image's
// scale. An image at the training scale is read whole; one whose cells look smaller holds
// several fields and is read as tiles resampled to the training scale, one answer made from
// the tiles' answers; one whose cells look larger (a close-up, a single-cell crop) is not
// recognised. The reading and the resampling follow OpenCV's functions as the Python runtime
// calls them (Gaussian blur, pyramid, Laplacian, area and bilinear resize); tests/
// test_node_example.py checks that both programs plan every image alike and agree on its answer.
//
// Images here are { width, height, data } with `data` 8-bit RGB, row by row.

//: blob scales tried per octave, the smallest blob read, the largest as a share of the side
const STEPS_PER_OCTAVE = 4;
const FIRST_STEP = 2;
const MAX_DIAMETER_SHARE = 1.0 / 3.0;
//: the background level (the bright plasma) is the green channel at this percentile
const BACKGROUND_PERCENTILE = 90.0;
//: the refined reading: the image read again at most this large, at most this many fields a side
const READ_SIDE = 1024;
const READ_FIELDS = 8;
//: at most this many tiles per image; more: not recognised
export const MAX_TILES = 144;

// ---------------------------------------------------------------- Python's own rounding
/** Python's round() of a non-negative number: halves to even. */
export function pyRound(x) {
  const r = Math.round(x);
  return x - Math.floor(x) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** An 8-bit value from a float, rounded as OpenCV's saturate_cast does (halves to even). */
function u8(v) {
  const r = pyRound(Math.abs(v)) * Math.sign(v);
  return r < 0 ? 0 : r > 255 ? 255 : r;
}

// ---------------------------------------------------------------- float image filters
/** OpenCV's BORDER_REFLECT_101 (its default border): gfedcb|abcdefgh|gfedcba */
function reflect101(p, len) {
  if (p >= 0 && p < len) return p;
  if (len === 1) return 0;
  do {
    p = p < 0 ? -p : 2 * len - 2 - p;
  } while (p < 0 || p >= len);
  return p;
}

/** cv2.getGaussianKernel(ksize, sigma, CV_32F) with the size GaussianBlur picks for float images */
function gaussianKernel(sigma) {
  const n = Math.round(sigma * 8 + 1) | 1;
  const scale2X = -0.5 / (sigma * sigma);
  const k = new Float64Array(n);
  let sum = 0;
  for (let i = 0; i < n; i++) {
    const x = i - (n - 1) * 0.5;
    k[i] = Math.fround(Math.exp(scale2X * x * x));
    sum += k[i];
  }
  for (let i = 0; i < n; i++) k[i] = Math.fround(k[i] / sum);
  return k;
}

/** A separable filter over a float image (rows, then columns), OpenCV's default border. */
function sepFilter({ w, h, data }, kx, ky) {
  const rx = (kx.length - 1) >> 1;
  const ry = (ky.length - 1) >> 1;
  const tmp = new Float32Array(w * h);
  const xs = Int32Array.from({ length: w + 2 * rx }, (_, i) => reflect101(i - rx, w));
  for (let y = 0; y < h; y++) {
    const row = y * w;
    for (let x = 0; x < w; x++) {
      let s = 0;
      for (let k = 0; k < kx.length; k++) s += kx[k] * data[row + xs[x + k]];
      tmp[row + x] = s;
    }
  }
  const out = new Float32Array(w * h);
  const ys = Int32Array.from({ length: h + 2 * ry }, (_, i) => reflect101(i - ry, h) * w);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      let s = 0;
      for (let k = 0; k < ky.length; k++) s += ky[k] * tmp[ys[y + k] + x];
      out[y * w + x] = s;
    }
  }
  return { w, h, data: out };
}

function gaussianBlur(img, sigma) {
  const k = gaussianKernel(sigma);
  return sepFilter(img, k, k);
}

/** cv2.pyrDown: the 5-tap binomial blur, every second pixel kept, size (w + 1) / 2. */
function pyrDown({ w, h, data }) {
  const dw = (w + 1) >> 1;
  const dh = (h + 1) >> 1;
  const taps = [1, 4, 6, 4, 1];
  const rows = new Float64Array(h * dw);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < dw; x++) {
      let s = 0;
      for (let k = 0; k < 5; k++) s += taps[k] * data[y * w + reflect101(2 * x + k - 2, w)];
      rows[y * dw + x] = s;
    }
  }
  const out = new Float32Array(dw * dh);
  for (let y = 0; y < dh; y++) {
    for (let x = 0; x < dw; x++) {
      let s = 0;
      for (let k = 0; k < 5; k++) s += taps[k] * rows[reflect101(2 * y + k - 2, h) * dw + x];
      out[y * dw + x] = s / 256;
    }
  }
  return { w: dw, h: dh, data: out };
}

/** Sum of squares of the negative part of cv2.Laplacian(ksize=1): the 4-neighbour kernel. */
function negativeLaplacianEnergy({ w, h, data }) {
  let sum = 0;
  for (let y = 0; y < h; y++) {
    const up = reflect101(y - 1, h) * w;
    const down = reflect101(y + 1, h) * w;
    for (let x = 0; x < w; x++) {
      const c = data[y * w + x];
      const v = Math.fround(
        data[up + x] + data[down + x] + data[y * w + reflect101(x - 1, w)] +
          data[y * w + reflect101(x + 1, w)] - 4 * c,
      );
      if (v < 0) sum += v * v;
    }
  }
  return sum;
}

// ---------------------------------------------------------------- the ruler
/** Mean squared negative scale-normalised Laplacian per sigma, over a pyramid (as Python). */
function scaleEnergies(dark, skipOctave) {
  const maxSigma = (MAX_DIAMETER_SHARE * Math.min(dark.w, dark.h)) / (2 * Math.SQRT2);
  const energies = [];
  const sigmas = [];
  let level = dark;
  let factor = 1;
  let preBlur = 0;
  if (skipOctave) {
    level = pyrDown(dark);
    factor = 2;
    preBlur = 0.5;
  }
  let first = FIRST_STEP;
  for (;;) {
    let blurred = level;
    let have = preBlur;
    for (let k = first; k < FIRST_STEP + STEPS_PER_OCTAVE + 2; k++) {
      const local = 2 ** (k / STEPS_PER_OCTAVE);
      const sigma = local * factor;
      if (sigma > maxSigma) return [energies, sigmas];
      blurred = gaussianBlur(blurred, Math.sqrt(local ** 2 - have ** 2));
      have = local;
      energies.push((negativeLaplacianEnergy(blurred) / (blurred.w * blurred.h)) * local ** 4);
      sigmas.push(sigma);
    }
    if (Math.min(level.w, level.h) < 32) return [energies, sigmas];
    level = pyrDown(level);
    preBlur = Math.sqrt((preBlur / 2) ** 2 + 0.25);
    factor *= 2;
    first = FIRST_STEP + 2;
  }
}

/** The diameter in pixels of the blobs that dominate the image (its red cells): 0 when under
 * the smallest scale read, Infinity when wider than a third of the image, NaN when blank. */
export function blobDiameter(img, skipOctave = false) {
  const n = img.width * img.height;
  const hist = new Float64Array(256);
  for (let i = 0; i < n; i++) hist[img.data[i * 3 + 1]]++;
  const rank = (BACKGROUND_PERCENTILE / 100) * (n - 1);
  let level = 0;
  for (let cum = 0; level < 255; level++) {
    cum += hist[level];
    if (cum >= rank + 1) break;
  }
  const background = Math.fround(level + 1);
  const dark = new Float32Array(n);
  for (let i = 0; i < n; i++) dark[i] = 1 - Math.fround(img.data[i * 3 + 1] / background);
  const [e, sigmas] = scaleEnergies({ w: img.width, h: img.height, data: dark }, skipOctave);
  if (e.length < 3 || !e.every(Number.isFinite) || Math.max(...e) <= 0) return NaN;
  const k = e.indexOf(Math.max(...e));
  if (k === 0) return 0;
  if (k === e.length - 1) return Infinity;
  const [a, b, c] = e.slice(k - 1, k + 2).map((v) => Math.log(Math.max(v, 1e-30)));
  const offset = a - 2 * b + c < 0 ? (0.5 * (a - c)) / (a - 2 * b + c) : 0;
  return 2 * Math.SQRT2 * sigmas[k] * 2 ** (offset / STEPS_PER_OCTAVE);
}

/** The red-cell diameter as a share of the side, read on the image at the network's size. */
export function quickReading(small) {
  return blobDiameter(small, true) / Math.sqrt(small.width * small.height);
}

function crop(img, x, y, w, h) {
  w = Math.min(w, img.width - x);
  h = Math.min(h, img.height - y);
  const data = new Uint8Array(w * h * 3);
  for (let r = 0; r < h; r++) {
    const from = ((y + r) * img.width + x) * 3;
    data.set(img.data.subarray(from, from + w * 3), r * w * 3);
  }
  return { width: w, height: h, data };
}

function median(values) {
  const v = [...values].sort((a, b) => a - b);
  const m = v.length >> 1;
  return v.length % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
}

function spread(items, n) {
  if (items.length <= n) return items;
  return Array.from({ length: n }, (_, i) => items[pyRound((i * (items.length - 1)) / (n - 1))]);
}

function starts(length, size) {
  if (length <= size) return [0];
  const n = Math.ceil(length / size);
  return Array.from({ length: n }, (_, i) => pyRound((i * (length - size)) / (n - 1)));
}

function resizeBy(img, k) {
  const w = Math.max(1, pyRound(img.width * k));
  const h = Math.max(1, pyRound(img.height * k));
  return k < 1 ? resizeArea(img, w, h) : resizeLinear(img, w, h);
}

/** How many times larger the cells look at the network's input than in the training images
 * (edge_infer.image.scale.magnification): `full` is the image as decoded, `small` the
 * normalised network-size image. */
export function magnification(full, small, spec) {
  const reference = spec.cell_diameter_share;
  const m = quickReading(small) / reference;
  if (Number.isNaN(m) || (spec.field_scale_min <= m && m <= spec.field_scale_max)) return m;
  const { width: w, height: h } = full;
  const shrink = Math.min(1, READ_SIDE / Math.min(h, w));
  const img = shrink === 1 ? full : resizeBy(full, shrink);
  const first = blobDiameter(img) / Math.sqrt(img.width * img.height) / reference;
  if (!Number.isFinite(first) || first <= 0) return first;
  const window = small.height;
  const k = window / (first * Math.sqrt(h * w));
  if (k * Math.min(h, w) < window || k * Math.max(h, w) > 4 * READ_SIDE) return first;
  const fields = resizeBy(full, k);
  const readings = [];
  for (const y of spread(starts(fields.height, window), READ_FIELDS)) {
    for (const x of spread(starts(fields.width, window), READ_FIELDS)) {
      readings.push(quickReading(crop(fields, x, y, window, window)) / reference);
    }
  }
  const usable = readings.filter((r) => Number.isFinite(r) && r > 0);
  return usable.length ? first * median(usable) : first;
}

// ---------------------------------------------------------------- the plan and the tiles
function resampledShape(width, height, m, size) {
  const k = size / (m * Math.sqrt(height * width));
  return [Math.max(1, pyRound(height * k)), Math.max(1, pyRound(width * k))];
}

function tileBoxes(width, height, m, size) {
  const [rh, rw] = resampledShape(width, height, m, size);
  const boxes = [];
  for (const y of starts(rh, size)) {
    for (const x of starts(rw, size)) boxes.push([x, y, Math.min(size, rw), Math.min(size, rh)]);
  }
  return boxes;
}

/** "whole", "tiles" or "refuse" (edge_infer.image.scale.plan). */
export function plan(m, spec, width, height) {
  if (Number.isNaN(m) || (spec.field_scale_min <= m && m <= spec.field_scale_max)) return "whole";
  if (m <= 0 || m > spec.field_scale_max) return "refuse";
  return tileBoxes(width, height, m, spec.input_size).length <= MAX_TILES ? "tiles" : "refuse";
}

/** The image resampled to the training scale and cut into training fields: each field (RGB,
 * input size, its edge repeated where the image is shorter) and its box in the image's pixels
 * as saved (`saved`: [height, width] before the reduction to the working size, if any). */
export function tiles(full, m, spec, saved = [full.height, full.width]) {
  const size = spec.input_size;
  const [rh, rw] = resampledShape(full.width, full.height, m, size);
  const shrinking = rh * rw < full.width * full.height;
  const linear = !shrinking || spec.interpolation === "linear";
  if (!linear && spec.interpolation !== "area") {
    throw new Error(`interpolation ${spec.interpolation} is not ported to this example`);
  }
  const resampled = linear ? resizeLinear(full, rw, rh) : resizeArea(full, rw, rh);
  const backY = saved[0] / rh;
  const backX = saved[1] / rw;
  return tileBoxes(full.width, full.height, m, size).map(([x, y, bw, bh]) => ({
    field: padReplicate(crop(resampled, x, y, bw, bh), size),
    box: [pyRound(x * backX), pyRound(y * backY), pyRound(bw * backX), pyRound(bh * backY)],
  }));
}

/** cv2.copyMakeBorder(..., BORDER_REPLICATE) on the right and bottom up to size x size. */
function padReplicate(img, size) {
  if (img.width === size && img.height === size) return img;
  const data = new Uint8Array(size * size * 3);
  for (let y = 0; y < size; y++) {
    const sy = Math.min(y, img.height - 1);
    for (let x = 0; x < size; x++) {
      const from = (sy * img.width + Math.min(x, img.width - 1)) * 3;
      data.set(img.data.subarray(from, from + 3), (y * size + x) * 3);
    }
  }
  return { width: size, height: size, data };
}

// ---------------------------------------------------------------- OpenCV's resizes (8-bit RGB)
/** OpenCV's factor: the inverse of the destination-to-source ratio, as it computes it. */
const cvFactor = (ssize, dsize) => 1 / (dsize / ssize);

function areaTable(ssize, dsize) {
  // for each destination pixel: the source pixels it covers and their weights
  const scale = cvFactor(ssize, dsize);
  const tab = [];
  for (let d = 0; d < dsize; d++) {
    const f1 = d * scale;
    const f2 = f1 + scale;
    const cell = Math.min(scale, ssize - f1);
    const s2 = Math.min(Math.floor(f2), ssize - 1);
    const s1 = Math.min(Math.ceil(f1), s2);
    if (s1 - f1 > 1e-3) tab.push([d, s1 - 1, Math.fround((s1 - f1) / cell)]);
    for (let s = s1; s < s2; s++) tab.push([d, s, Math.fround(1.0 / cell)]);
    if (f2 - s2 > 1e-3) {
      tab.push([d, s2, Math.fround(Math.min(Math.min(f2 - s2, 1.0), cell) / cell)]);
    }
  }
  return tab;
}

/** cv2.resize(..., INTER_AREA) shrinking: float accumulation as OpenCV does; a whole-number
 * factor on both axes takes OpenCV's block average instead, as it does. */
export function resizeArea(img, dw, dh) {
  const { width, height, data } = img;
  const fx = cvFactor(width, dw);
  const fy = cvFactor(height, dh);
  const whole = (f) => Math.abs(f - Math.round(f)) < Number.EPSILON;
  if (whole(fx) && whole(fy)) return blockAverage(img, Math.round(fx), Math.round(fy));
  const out = new Uint8Array(dw * dh * 3);
  const xtab = areaTable(width, dw);
  const ytab = areaTable(height, dh);
  for (let c = 0; c < 3; c++) {
    let k = 0;
    for (let dy = 0; dy < dh; dy++) {
      const sum = new Float32Array(dw);
      while (k < ytab.length && ytab[k][0] === dy) {
        const [, sy, beta] = ytab[k++];
        const buf = new Float32Array(dw);
        for (const [dx, sx, alpha] of xtab) {
          buf[dx] = Math.fround(buf[dx] + Math.fround(data[(sy * width + sx) * 3 + c] * alpha));
        }
        for (let dx = 0; dx < dw; dx++) sum[dx] = Math.fround(sum[dx] + Math.fround(beta * buf[dx]));
      }
      for (let dx = 0; dx < dw; dx++) out[(dy * dw + dx) * 3 + c] = u8(sum[dx]);
    }
  }
  return { width: dw, height: dh, data: out };
}

function blockAverage({ width, height, data }, fx, fy) {
  const dw = width / fx;
  const dh = height / fy;
  const out = new Uint8Array(dw * dh * 3);
  const inv = Math.fround(1 / (fx * fy));
  for (let y = 0; y < dh; y++) {
    for (let x = 0; x < dw; x++) {
      for (let c = 0; c < 3; c++) {
        let s = 0;
        for (let j = 0; j < fy; j++) {
          for (let i = 0; i < fx; i++) s += data[((y * fy + j) * width + x * fx + i) * 3 + c];
        }
        out[(y * dw + x) * 3 + c] = fx === 2 && fy === 2 ? (s + 2) >> 2 : u8(Math.fround(s * inv));
      }
    }
  }
  return { width: dw, height: dh, data: out };
}

/** Per destination index: the two source indices and their 11-bit fixed-point weights. Along
 * x, OpenCV moves a position outside the image onto its edge pixel (weight 1); along y, it
 * keeps the weights and reads the edge row twice. */
function linearTable(ssize, dsize, alongX) {
  const scale = cvFactor(ssize, dsize);
  const clip = (i) => Math.min(Math.max(i, 0), ssize - 1);
  const tab = [];
  for (let d = 0; d < dsize; d++) {
    // in float, as OpenCV computes it
    let f = Math.fround((d + 0.5) * scale - 0.5);
    let s = Math.floor(f);
    f = Math.fround(f - s);
    if (alongX && s < 0) [f, s] = [0, 0];
    if (alongX && s >= ssize - 1) [f, s] = [0, ssize - 1];
    tab.push([clip(s), clip(s + 1), pyRound(Math.fround(1 - f) * 2048), pyRound(f * 2048)]);
  }
  return tab;
}

/** cv2.resize(..., INTER_LINEAR) on 8-bit images: OpenCV's 11-bit fixed-point weights, its
 * horizontal pass in integers and its vectorised vertical rounding. */
export function resizeLinear(img, dw, dh) {
  const { width, data } = img;
  const xt = linearTable(width, dw, true);
  const yt = linearTable(img.height, dh, false);
  const rows = new Map();
  const row = (sy) => {
    if (!rows.has(sy)) {
      const r = new Int32Array(dw * 3);
      for (let dx = 0; dx < dw; dx++) {
        const [s0, s1, a0, a1] = xt[dx];
        for (let c = 0; c < 3; c++) {
          r[dx * 3 + c] = data[(sy * width + s0) * 3 + c] * a0 + data[(sy * width + s1) * 3 + c] * a1;
        }
      }
      rows.set(sy, r);
    }
    return rows.get(sy);
  };
  const out = new Uint8Array(dw * dh * 3);
  for (let dy = 0; dy < dh; dy++) {
    const [s0, s1, b0, b1] = yt[dy];
    const r0 = row(s0);
    const r1 = row(s1);
    for (let i = 0; i < dw * 3; i++) {
      const v = (((b0 * (r0[i] >> 4)) >> 16) + ((b1 * (r1[i] >> 4)) >> 16) + 2) >> 2;
      out[dy * dw * 3 + i] = v < 0 ? 0 : v > 255 ? 255 : v;
    }
    if (dy > 0 && yt[dy - 1][0] < s0) rows.delete(yt[dy - 1][0]);
  }
  return { width: dw, height: dh, data: out };
}

// ---------------------------------------------------------------- one answer from the tiles
/** The image's one answer from its tiles' answers (edge_infer.tiles.combine; the rule in words
 * there): no cell in any tile -> no cell; any tile with a cell not recognised -> not
 * recognised; every tile with a cell the same class with status ok -> that class; otherwise
 * uncertain ("fields_disagree"), the malignant class most tiles gave (ties: the higher mean
 * probability), Benign only if no tile gave a malignant class. Probabilities and scores: the
 * mean over the tiles with a cell. Answers are { status, label, raw_label, confidence, reason,
 * probabilities, ood_score, image_score }; the result also holds the tiles and the scale. */
export function combine(answers, boxes, m, classes) {
  const extra = { magnification: m, tiles: answers.map((a, i) => ({ box: boxes[i], answer: a })) };
  const withCell = answers.filter((a) => a.reason !== "no_cell");
  if (!withCell.length) return { ...answers[0], ...extra };
  const refused = withCell.find((a) => a.status === "out_of_distribution");
  if (refused) return { ...refused, ...extra };
  const names = classes.map((c) => c.name);
  const avg = (f) => withCell.reduce((s, a) => s + f(a), 0) / withCell.length;
  const mean = names.map((c) => avg((a) => a.probabilities[c]));
  const counts = new Map();
  for (const a of withCell) counts.set(a.raw_label, (counts.get(a.raw_label) ?? 0) + 1);
  const agreed = counts.size === 1 && withCell.every((a) => a.status === "ok");
  const malignant = new Set(classes.filter((c) => c.malignant).map((c) => c.name));
  let label = withCell[0].raw_label;
  if (!agreed) {
    const given = [...counts.keys()].filter((c) => malignant.has(c));
    const key = (c) => [counts.get(c) ?? 0, mean[names.indexOf(c)]];
    // the first of the pool with the most tiles, then with the higher mean probability
    label = (given.length ? given : names).reduce((best, c) => {
      const [n, p] = key(c);
      const [bn, bp] = key(best);
      return n > bn || (n === bn && p > bp) ? c : best;
    });
  }
  return {
    ...withCell[0],
    status: agreed ? "ok" : "uncertain",
    label,
    raw_label: label,
    confidence: mean[names.indexOf(label)],
    reason: agreed ? null : "fields_disagree",
    probabilities: Object.fromEntries(names.map((c, i) => [c, mean[i]])),
    ood_score: avg((a) => a.ood_score ?? 0),
    image_score: avg((a) => a.image_score ?? 0),
    ...extra,
  };
}
