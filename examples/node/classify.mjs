#!/usr/bin/env node
// Classify blood smear images with the edge-infer ONNX model from Node.js.
//
//   node classify.mjs [--model M.onnx] IMAGE_OR_FOLDER...
//
// Prints one JSON line per image, like `edge-infer classify --format jsonl` (path, verdict,
// status, label, raw_label, confidence, reason, probabilities, ood_score, image_score, model).
// Everything comes from the model file: its metadata (read here from the ONNX protobuf) says
// how to prepare the input; the graph computes the probabilities, both out-of-distribution
// guards and the decision (status_code, reason_code, label_index, decoded with the metadata's
// codes). This program only decodes the image, resizes it (OpenCV's area interpolation) and
// applies the white-patch normalisation the metadata describes.
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import ort from "onnxruntime-node";
import jpeg from "jpeg-js";
import { PNG } from "pngjs";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const DEFAULT_MODEL = path.join(HERE, "..", "..", "models", "all_pbs_cnn.onnx");

// ---------------------------------------------------------------- ONNX metadata_props
function readVarint(buf, pos) {
  let value = 0n;
  let shift = 0n;
  for (;;) {
    const b = buf[pos++];
    value |= BigInt(b & 0x7f) << shift;
    if (!(b & 0x80)) return [value, pos];
    shift += 7n;
  }
}

function fields(buf) {
  // top-level protobuf fields: [number, wireType, bytes|value]
  const out = [];
  let pos = 0;
  while (pos < buf.length) {
    let tag;
    [tag, pos] = readVarint(buf, pos);
    const field = Number(tag >> 3n);
    const wire = Number(tag & 7n);
    if (wire === 0) {
      let v;
      [v, pos] = readVarint(buf, pos);
      out.push([field, wire, v]);
    } else if (wire === 1) {
      pos += 8;
    } else if (wire === 5) {
      pos += 4;
    } else if (wire === 2) {
      let len;
      [len, pos] = readVarint(buf, pos);
      out.push([field, wire, buf.subarray(pos, pos + Number(len))]);
      pos += Number(len);
    } else {
      throw new Error(`unsupported protobuf wire type ${wire}`);
    }
  }
  return out;
}

export function modelMetadata(file) {
  const meta = {};
  for (const [field, wire, bytes] of fields(fs.readFileSync(file))) {
    if (field !== 14 || wire !== 2) continue; // ModelProto.metadata_props
    let key;
    let value;
    for (const [f, , b] of fields(bytes)) {
      if (f === 1) key = b.toString("utf8");
      if (f === 2) value = b.toString("utf8");
    }
    meta[key] = JSON.parse(value);
  }
  if (!("edge_infer.schema" in meta)) throw new Error(`${file}: no edge_infer metadata`);
  return meta;
}

// ---------------------------------------------------------------- decoding
function decode(file) {
  const data = fs.readFileSync(file);
  if (data[0] === 0x89 && data[1] === 0x50) {
    const png = PNG.sync.read(data);
    return { width: png.width, height: png.height, rgba: png.data };
  }
  if (data[0] === 0xff && data[1] === 0xd8) {
    const img = jpeg.decode(data, { useTArray: true, formatAsRGBA: true });
    return { width: img.width, height: img.height, rgba: img.data };
  }
  throw new Error("not a PNG or JPEG image");
}

// ---------------------------------------------------------------- OpenCV INTER_AREA
function areaTable(ssize, dsize) {
  // for each destination pixel: the source pixels it covers and their weights
  const scale = ssize / dsize;
  const tab = [];
  for (let d = 0; d < dsize; d++) {
    const f1 = d * scale;
    const f2 = f1 + scale;
    const cell = Math.min(scale, ssize - f1);
    let s2 = Math.min(Math.floor(f2), ssize - 1);
    const s1 = Math.min(Math.ceil(f1), s2);
    if (s1 - f1 > 1e-3) tab.push([d, s1 - 1, Math.fround((s1 - f1) / cell)]);
    for (let s = s1; s < s2; s++) tab.push([d, s, Math.fround(1.0 / cell)]);
    if (f2 - s2 > 1e-3) tab.push([d, s2, Math.fround(Math.min(Math.min(f2 - s2, 1.0), cell) / cell)]);
  }
  return tab;
}

function resizeArea(img, size) {
  // 8-bit RGB out of RGBA in, float accumulation as OpenCV does, rounded half to even
  const { width, height, rgba } = img;
  const out = new Uint8Array(size * size * 3);
  const xtab = areaTable(width, size);
  const ytab = areaTable(height, size);
  for (let c = 0; c < 3; c++) {
    let k = 0;
    for (let dy = 0; dy < size; dy++) {
      const sum = new Float32Array(size);
      while (k < ytab.length && ytab[k][0] === dy) {
        const [, sy, beta] = ytab[k++];
        const buf = new Float32Array(size);
        for (const [dx, sx, alpha] of xtab) {
          buf[dx] = Math.fround(buf[dx] + Math.fround(rgba[(sy * width + sx) * 4 + c] * alpha));
        }
        for (let dx = 0; dx < size; dx++) sum[dx] = Math.fround(sum[dx] + Math.fround(beta * buf[dx]));
      }
      for (let dx = 0; dx < size; dx++) {
        const v = sum[dx];
        const r = Math.round(v);
        const even = Math.abs(v - Math.trunc(v)) === 0.5 && r % 2 !== 0 ? r - 1 : r;
        out[(dy * size + dx) * 3 + c] = Math.max(0, Math.min(255, even));
      }
    }
  }
  return out;
}

// ---------------------------------------------------------------- white patch
function whitePatch(rgb, spec) {
  const n = rgb.length / 3;
  const rank = (spec.white_percentile / 100) * (n - 1);
  const out = new Uint8Array(rgb.length);
  for (let c = 0; c < 3; c++) {
    const hist = new Float64Array(256);
    for (let i = 0; i < n; i++) hist[rgb[i * 3 + c]]++;
    let level = 0;
    for (let cum = 0; level < 256; level++) {
      cum += hist[level];
      if (cum >= rank + 1) break;
    }
    // models exported before the floor was in the metadata used 8
    const gain = spec.white_target / Math.max(level, spec.white_floor ?? 8);
    for (let i = 0; i < n; i++) {
      out[i * 3 + c] = Math.min(255, Math.max(0, Math.floor(rgb[i * 3 + c] * gain + 0.5)));
    }
  }
  return out;
}

export function prepare(file, spec) {
  const small = resizeArea(decode(file), spec.input_size);
  const rgb = spec.normalise === "white_patch" ? whitePatch(small, spec) : small;
  const scale = Math.fround(spec.scale);
  const x = new Float32Array(rgb.length);
  for (let i = 0; i < rgb.length; i++) x[i] = rgb[i] * scale;
  return x; // RGB, HWC
}

// ---------------------------------------------------------------- classify
const round = (v, d) => Math.round(v * 10 ** d) / 10 ** d;

export async function classify(files, modelPath = DEFAULT_MODEL) {
  const meta = modelMetadata(modelPath);
  const spec = meta.preprocess;
  const session = await ort.InferenceSession.create(modelPath, { intraOpNumThreads: 1 });
  const size = spec.input_size;
  const classes = meta.classes.map((c) => c.name);
  const codes = meta.guards.codes;
  const records = [];
  // edge_infer.image.scale (reading the image's scale from its red cells, tiles, refusing
  // close-ups) is not ported here: with a model that has a scale rule, this example's answers
  // hold only for images at the training magnification, and every record says so
  const scaleRule = (spec.cell_diameter_share ?? 0) > 0;
  if (scaleRule) {
    console.error(
      "note: this model reads each image's scale (edge_infer.image.scale); this example does " +
        "not: use it only on images taken at the training magnification (100x oil, one field)",
    );
  }
  for (const file of files) {
    let out;
    try {
      const x = new ort.Tensor("float32", prepare(file, spec), [1, size, size, 3]);
      out = await session.run({ [meta.input.name]: x });
    } catch (err) {
      records.push({ path: file, verdict: "error", status: "error", label: null, error: String(err.message || err) });
      continue;
    }
    const probs = Array.from(out.probabilities.data);
    const k = Number(out.label_index.data[0]);
    const status = codes.status_code[Number(out.status_code.data[0])];
    const label = status === "out_of_distribution" ? null : classes[k];
    records.push({
      path: file,
      verdict: status === "ok" ? classes[k] : status === "out_of_distribution" ? "not_recognised" : status,
      status,
      label,
      raw_label: classes[k],
      confidence: round(probs[k], 6),
      reason: codes.reason_code[Number(out.reason_code.data[0])],
      probabilities: Object.fromEntries(classes.map((c, i) => [c, round(probs[i], 6)])),
      ood_score: round(Number(out.ood_score.data[0]), 4),
      image_score: round(Number(out.image_score.data[0]), 4),
      model: meta.version,
      ...(scaleRule ? { scale_rule: "not applied by this example" } : {}),
    });
  }
  return records;
}

function expand(args) {
  const files = [];
  for (const a of args) {
    if (fs.statSync(a).isDirectory()) {
      for (const name of fs.readdirSync(a).sort()) {
        if (/\.(jpe?g|png)$/i.test(name)) files.push(path.join(a, name));
      }
    } else files.push(a);
  }
  return files;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const args = process.argv.slice(2);
  let model = DEFAULT_MODEL;
  const m = args.indexOf("--model");
  if (m >= 0) {
    model = args[m + 1];
    args.splice(m, 2);
  }
  if (!args.length) {
    console.error("usage: node classify.mjs [--model M.onnx] IMAGE_OR_FOLDER...");
    process.exit(2);
  }
  const records = await classify(expand(args), model);
  for (const r of records) process.stdout.write(JSON.stringify(r) + "\n");
  process.exit(records.some((r) => r.status === "error") ? 1 : 0);
}
