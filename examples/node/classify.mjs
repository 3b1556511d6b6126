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
// codes). This program decodes the image, resizes it (OpenCV's area interpolation), applies
// the white-patch normalisation the metadata describes and, for a model with a scale rule,
// reads the image's scale from its red cells (scale.mjs): an image of several fields is read as
// tiles at the training scale with one answer, a close-up is not recognised (reason
// "magnification"), as `edge-infer classify` does.
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import ort from "onnxruntime-node";
import decodeJpeg, { init as initJpeg } from "@jsquash/jpeg/decode.js";
import { PNG } from "pngjs";
import { combine, magnification, plan, pyRound, resizeArea, tiles } from "./scale.mjs";

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
// JPEG: libjpeg-turbo (MozJPEG's decoder, compiled to WebAssembly) at its default settings,
// as OpenCV decodes: the same pixels as edge-infer (pure-JS decoders differ by a grey level
// here and there, enough to change an answer near a threshold)
let jpegReady;
async function readJpeg(data) {
  jpegReady ??= (async () => {
    const wasm = new URL(import.meta.resolve("@jsquash/jpeg/codec/dec/mozjpeg_dec.wasm"));
    await initJpeg(await WebAssembly.compile(fs.readFileSync(wasm)));
  })();
  await jpegReady;
  // preserveOrientation: the EXIF orientation applied, as OpenCV's imdecode does
  return decodeJpeg(data, { preserveOrientation: true });
}

async function decode(file) {
  const data = fs.readFileSync(file);
  let img;
  if (data[0] === 0x89 && data[1] === 0x50) img = PNG.sync.read(data);
  else if (data[0] === 0xff && data[1] === 0xd8) img = await readJpeg(data);
  else throw new Error("not a PNG or JPEG image");
  const n = img.width * img.height;
  const rgb = new Uint8Array(n * 3);
  for (let i = 0; i < n; i++) rgb.set(img.data.subarray(i * 4, i * 4 + 3), i * 3);
  // RGB; `saved`: [height, width] as saved, for the tiles' boxes
  const saved = [img.height, img.width];
  return { ...reduceToWorkingSize({ width: img.width, height: img.height, data: rgb }), saved };
}

//: a larger image is reduced (area averaging) right after decoding, as edge_infer does
//: (edge_infer.image.decode.MAX_WORKING_SIDE): the network reads 160 px, the checks need no more
const MAX_WORKING_SIDE = 1024;
const MIN_SIDE = 32;

function reduceToWorkingSize(img) {
  const long = Math.max(img.width, img.height);
  if (long <= MAX_WORKING_SIDE) return img;
  const f = MAX_WORKING_SIDE / long;
  const w = Math.max(MIN_SIDE, pyRound(img.width * f));
  const h = Math.max(MIN_SIDE, pyRound(img.height * f));
  return resizeArea(img, w, h);
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

function normalise(rgb, spec) {
  return spec.normalise === "white_patch" ? whitePatch(rgb, spec) : rgb;
}

function toTensor(rgb, spec) {
  const scale = Math.fround(spec.scale);
  const x = new Float32Array(rgb.length);
  for (let i = 0; i < rgb.length; i++) x[i] = rgb[i] * scale;
  return x; // RGB, HWC
}

/** The network input(s) of one image: { inputs: [Float32Array], plan, magnification, boxes }.
 * Without a scale rule, or at the training scale, one input: the image whole. */
export async function prepare(file, spec) {
  const img = await decode(file);
  const size = spec.input_size;
  const small = normalise(resizeArea(img, size, size).data, spec);
  const whole = { inputs: [toTensor(small, spec)], plan: "whole", magnification: null };
  if (!((spec.cell_diameter_share ?? 0) > 0)) return whole;
  const m = magnification(img, { width: size, height: size, data: small }, spec);
  const p = plan(m, spec, img.width, img.height);
  if (p === "whole") return whole;
  if (p === "refuse") return { ...whole, plan: p, magnification: m };
  const cut = tiles(img, m, spec, img.saved);
  return {
    inputs: cut.map((t) => toTensor(normalise(t.field.data, spec), spec)),
    plan: p,
    magnification: m,
    boxes: cut.map((t) => t.box),
  };
}

// ---------------------------------------------------------------- classify
const round = (v, d) => Math.round(v * 10 ** d) / 10 ** d;
const verdictOf = (a) =>
  a.status === "ok" ? a.label : a.status === "out_of_distribution" ? "not_recognised" : a.status;

/** The graph's answers for a batch of inputs, decoded with the metadata's codes. */
async function answer(session, meta, inputs) {
  const size = meta.preprocess.input_size;
  const batch = new Float32Array(inputs.length * size * size * 3);
  inputs.forEach((x, i) => batch.set(x, i * x.length));
  const x = new ort.Tensor("float32", batch, [inputs.length, size, size, 3]);
  const out = await session.run({ [meta.input.name]: x });
  const classes = meta.classes.map((c) => c.name);
  const codes = meta.guards.codes;
  return inputs.map((_, i) => {
    const probs = Array.from(out.probabilities.data.slice(i * classes.length, (i + 1) * classes.length));
    const k = Number(out.label_index.data[i]);
    const status = codes.status_code[Number(out.status_code.data[i])];
    return {
      status,
      label: status === "out_of_distribution" ? null : classes[k],
      raw_label: classes[k],
      confidence: probs[k],
      reason: codes.reason_code[Number(out.reason_code.data[i])],
      probabilities: Object.fromEntries(classes.map((c, j) => [c, probs[j]])),
      ood_score: Number(out.ood_score.data[i]),
      image_score: Number(out.image_score.data[i]),
    };
  });
}

function record(file, a, meta) {
  const rec = {
    path: file,
    verdict: verdictOf(a),
    status: a.status,
    label: a.label,
    raw_label: a.raw_label,
    confidence: round(a.confidence, 6),
    reason: a.reason,
    probabilities: Object.fromEntries(Object.entries(a.probabilities).map(([c, p]) => [c, round(p, 6)])),
    ood_score: round(a.ood_score, 4),
    image_score: round(a.image_score, 4),
    model: meta.version,
  };
  if (a.magnification !== undefined) {
    // JSON has no infinity: cells too large (or small) to measure have no figure
    rec.magnification = Number.isFinite(a.magnification) ? round(a.magnification, 3) : null;
  }
  if (a.tiles) {
    rec.tiles = a.tiles.map((t) => ({
      box: t.box,
      verdict: verdictOf(t.answer),
      confidence: round(t.answer.confidence, 6),
      reason: t.answer.reason,
    }));
  }
  return rec;
}

export async function classify(files, modelPath = DEFAULT_MODEL) {
  const meta = modelMetadata(modelPath);
  const spec = meta.preprocess;
  const session = await ort.InferenceSession.create(modelPath, { intraOpNumThreads: 1 });
  const records = [];
  for (const file of files) {
    let a;
    try {
      const p = await prepare(file, spec);
      const answers = await answer(session, meta, p.inputs);
      if (p.plan === "whole") a = answers[0];
      else if (p.plan === "refuse") {
        // less than one training field: the graph's answer is not to be used
        a = { ...answers[0], status: "out_of_distribution", label: null, reason: "magnification" };
        a.magnification = p.magnification;
      } else a = combine(answers, p.boxes, p.magnification, meta.classes);
    } catch (err) {
      records.push({ path: file, verdict: "error", status: "error", label: null, error: String(err.message || err) });
      continue;
    }
    records.push(record(file, a, meta));
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
