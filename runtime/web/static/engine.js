// edgeproof's in-browser runtime: the artifact's preprocessing contract (OpenCV's arithmetic, bit for bit), the
// two WebAssembly runtimes (LiteRT.js for .tflite, onnxruntime-web for .onnx) and the scores. No network: every
// file it loads lies under this site (runtime/, models/). The page (app.js) and edgeproof's Python driver
// (edgeproof.runtime.web.browser) both use this module, so parity judges the code a phone runs.

const RUNTIME_DIR = new URL("./runtime/", import.meta.url);
const QRANGE = { int8: [-128, 127], uint8: [0, 255], int16: [-32768, 32767] };
const loaded = {};  // runtime name -> its module (loaded once per page)

export async function readModels() {
  const res = await fetch(new URL("./models.json", import.meta.url));
  if (!res.ok) throw new Error(`models.json: HTTP ${res.status}`);
  return res.json();
}

async function litertjs() {
  if (!loaded.litertjs) {
    const lt = await import(new URL("litertjs/index.js", RUNTIME_DIR).href);
    await lt.loadLiteRt(new URL("litertjs/", RUNTIME_DIR).href);  // picks the relaxed-SIMD or compat build
    loaded.litertjs = lt;
  }
  return loaded.litertjs;
}

async function ortweb() {
  if (!loaded.ort) {
    const ort = await import(new URL("ort/ort.wasm.min.mjs", RUNTIME_DIR).href);
    ort.env.wasm.wasmPaths = new URL("ort/", RUNTIME_DIR).href;
    ort.env.wasm.numThreads = 1;  // threads need cross-origin isolation (COOP/COEP), which a static host may lack
    ort.env.wasm.proxy = false;
    loaded.ort = ort;
  }
  return loaded.ort;
}

// One loaded artifact: run(typed array in the model's dtype and layout) -> Float32Array of raw output values.
export async function loadModel(entry) {
  const url = new URL(entry.file, import.meta.url).href;
  const t0 = performance.now();
  let run, close, version, inputDtype;
  if (entry.runtime === "litertjs") {
    const lt = await litertjs();
    const model = await lt.loadAndCompile(url, { accelerator: "wasm" });
    const inDetails = model.getInputDetails()[0];
    inputDtype = inDetails.dtype;
    const shape = Array.from(inDetails.shape);
    run = async (data) => {
      const tensor = new lt.Tensor(data, shape);
      try {
        const outs = await model.run(tensor);
        try { return Float32Array.from(outs[0].toTypedArray()); } finally { outs.forEach((t) => t.delete()); }
      } finally { tensor.delete(); }
    };
    close = () => model.delete();
    version = `LiteRT.js ${entry.runtime_version}`;
  } else if (entry.runtime === "ort-web") {
    const ort = await ortweb();
    const bytes = new Uint8Array(await (await fetch(url)).arrayBuffer());
    const session = await ort.InferenceSession.create(bytes, { executionProviders: ["wasm"] });
    const inName = session.inputNames[0], outName = session.outputNames[0];
    const meta = session.inputMetadata ? session.inputMetadata[0] : null;
    inputDtype = meta && meta.type ? meta.type : entry.input.dtype;
    const shape = entry.input.shape.map((d) => d ?? 1);
    run = async (data) => {
      const out = await session.run({ [inName]: new ort.Tensor(inputDtype, data, shape) });
      return Float32Array.from(out[outName].data);
    };
    close = () => session.release();
    version = `onnxruntime-web ${ort.env.versions ? ort.env.versions.web : entry.runtime_version}`;
  } else {
    throw new Error(`unknown runtime '${entry.runtime}'`);
  }
  return { entry, run, close, version, inputDtype, loadMs: performance.now() - t0 };
}

// ---- preprocessing: OpenCV's cv2.resize arithmetic (edgeproof.runtime.preprocess.prepare) ------------------
const f32 = Math.fround;
function rint(v) {  // round half to even, as np.rint and OpenCV's cvRound
  const r = Math.round(v);
  return (Math.abs(v % 1) === 0.5 && r % 2 !== 0) ? r - 1 : r;
}
function linearCoefs(dst, src, clamp) {  // cv::resize INTER_LINEAR: offsets and 11-bit fixed-point weights
  const scale = 1 / (dst / src), ofs = new Int32Array(dst), a0 = new Int32Array(dst), a1 = new Int32Array(dst);
  for (let d = 0; d < dst; d++) {
    let f = f32((d + 0.5) * scale - 0.5), s = Math.floor(f);
    f = f32(f - s);
    if (clamp && s < 0) { f = 0; s = 0; }
    if (clamp && s >= src - 1) { f = 0; s = src - 1; }
    ofs[d] = s; a0[d] = rint(f32(f32(1 - f) * 2048)); a1[d] = rint(f32(f * 2048));
  }
  return [ofs, a0, a1];
}
// RGBA bytes (w x h) -> RGB uint8 (W x H), exactly as cv2.resize does on 8-bit images.
export function resizeRGBA(rgba, w, h, W, H, interpolation) {
  const out = new Uint8Array(W * H * 3);
  if (w === W && h === H) {
    for (let i = 0, j = 0; i < W * H; i++, j += 4) { out[3 * i] = rgba[j]; out[3 * i + 1] = rgba[j + 1]; out[3 * i + 2] = rgba[j + 2]; }
    return out;
  }
  if (interpolation === "nearest") {
    const sx = 1 / (W / w), sy = 1 / (H / h);
    for (let y = 0; y < H; y++) {
      const yy = Math.min(Math.floor(y * sy), h - 1);
      for (let x = 0; x < W; x++) {
        const xx = Math.min(Math.floor(x * sx), w - 1), j = (yy * w + xx) * 4, i = (y * W + x) * 3;
        out[i] = rgba[j]; out[i + 1] = rgba[j + 1]; out[i + 2] = rgba[j + 2];
      }
    }
    return out;
  }
  if (interpolation !== "bilinear") throw new Error(`interpolation '${interpolation}' is not implemented in the page`);
  if (w === 2 * W && h === 2 * H) {  // OpenCV turns an exact 2x bilinear downscale into INTER_AREA's 2x2 mean
    for (let y = 0; y < H; y++) for (let x = 0; x < W; x++) for (let c = 0; c < 3; c++) {
      const j = ((2 * y) * w + 2 * x) * 4 + c;
      out[(y * W + x) * 3 + c] = (rgba[j] + rgba[j + 4] + rgba[j + 4 * w] + rgba[j + 4 * w + 4] + 2) >> 2;
    }
    return out;
  }
  const [xo, xa0, xa1] = linearCoefs(W, w, true), [yo, ya0, ya1] = linearCoefs(H, h, false);
  const rowCache = new Map();
  const hrow = (sy) => {  // the horizontal pass of source row sy, int32 (weights sum to 2048)
    sy = Math.min(Math.max(sy, 0), h - 1);
    let r = rowCache.get(sy);
    if (!r) {
      r = new Int32Array(W * 3);
      const base = sy * w * 4;
      for (let x = 0; x < W; x++) {
        const s0 = base + xo[x] * 4, s1 = base + Math.min(xo[x] + 1, w - 1) * 4;
        for (let c = 0; c < 3; c++) r[x * 3 + c] = rgba[s0 + c] * xa0[x] + rgba[s1 + c] * xa1[x];
      }
      rowCache.set(sy, r);
    }
    return r;
  };
  for (let y = 0; y < H; y++) {  // the vertical pass as OpenCV's SIMD kernel computes it (16-bit high products)
    const r0 = hrow(yo[y]), r1 = hrow(yo[y] + 1), b0 = ya0[y], b1 = ya1[y];
    for (let i = 0; i < W * 3; i++) {
      const v = ((((r0[i] >> 4) * b0) >> 16) + (((r1[i] >> 4) * b1) >> 16) + 2) >> 2;
      out[y * W * 3 + i] = v < 0 ? 0 : v > 255 ? 255 : v;
    }
  }
  return out;
}

// Decoded pixels -> float32 HWC in the model's input space: colour order, then (x * scale - mean) / std.
export function normalize(rgb, pp) {
  const n = pp.height * pp.width, x = new Float32Array(n * 3);
  const order = pp.color === "BGR" ? [2, 1, 0] : [0, 1, 2];
  const scale = f32(pp.scale), mean = pp.mean.length === 1 ? [pp.mean[0], pp.mean[0], pp.mean[0]] : pp.mean;
  const std = pp.std.length === 1 ? [pp.std[0], pp.std[0], pp.std[0]] : pp.std;
  const norm = mean.some((m) => m !== 0) || std.some((s) => s !== 1);
  for (let i = 0; i < n; i++) for (let c = 0; c < 3; c++) {
    let v = rgb[i * 3 + order[c]];
    if (scale !== 1) v = f32(v * scale);
    if (norm) v = f32(f32(v - f32(mean[c])) / f32(std[c]));
    x[i * 3 + c] = v;
  }
  return x;
}

// float32 NHWC (model-input space) -> the typed array the runtime takes: quantized (round half to even,
// saturated, as Model._quantize) and/or transposed to NCHW.
export function toModelInput(x, entry) {
  const spec = entry.input, pp = entry.preprocess, H = pp.height, W = pp.width;
  let src = x;
  if (pp.layout === "NCHW") {
    src = new Float32Array(x.length);
    for (let c = 0; c < 3; c++) for (let i = 0; i < H * W; i++) src[c * H * W + i] = x[i * 3 + c];
  }
  const q = QRANGE[spec.dtype];
  if (!q || !spec.scale) return spec.dtype === "float32" ? src : typed(spec.dtype, src);
  const out = typed(spec.dtype, src.length), inv = 1 / f32(spec.scale), zp = spec.zero_point || 0;
  for (let i = 0; i < src.length; i++) { const v = rint(src[i] * inv + zp); out[i] = v < q[0] ? q[0] : v > q[1] ? q[1] : v; }
  return out;
}
function typed(dtype, arg) {
  const C = { int8: Int8Array, uint8: Uint8Array, int16: Int16Array, int32: Int32Array, float32: Float32Array }[dtype];
  if (!C) throw new Error(`input dtype '${dtype}' has no typed array here`);
  return new C(arg);
}

// Raw output -> class scores, as edgeproof.contract.class_scores (dequantize, then the head's activation).
export function scores(raw, entry) {
  const o = entry.output || {};
  let v = Float32Array.from(raw);
  if (QRANGE[o.dtype] && o.scale) v = v.map((z) => (z - (o.zero_point || 0)) * o.scale);
  const head = entry.output_kind;
  if (head === "sigmoid" || head === "sigmoid-logit") {
    let p = head === "sigmoid" ? v[0] : 1 / (1 + Math.exp(-v[0]));
    p = Math.min(Math.max(p, 0), 1);
    return Float32Array.from([1 - p, p]);
  }
  if (head === "logits") {
    const m = Math.max(...v), e = v.map((z) => Math.exp(z - m)), s = e.reduce((a, b) => a + b, 0);
    return e.map((z) => z / s);
  }
  return v;
}

export function topk(s, labels, k) {
  return Array.from(s, (score, i) => ({ label: labels[i] ?? `class_${i}`, index: i, score }))
    .sort((a, b) => b.score - a.score || a.index - b.index).slice(0, k);
}

// Any image source (File/Blob, ImageBitmap, <video>) -> RGBA pixels at natural size, no colour conversion.
export async function pixelsOf(source) {
  let bmp = source, w, h;
  if (source instanceof Blob) {
    bmp = await createImageBitmap(source, { colorSpaceConversion: "none", premultiplyAlpha: "none" });
  }
  w = bmp.videoWidth || bmp.width; h = bmp.videoHeight || bmp.height;
  const canvas = new OffscreenCanvas(w, h), ctx = canvas.getContext("2d", { willReadFrequently: true });
  ctx.drawImage(bmp, 0, 0);
  return { rgba: ctx.getImageData(0, 0, w, h).data, w, h };
}

export async function preprocess(source, entry) {
  const pp = entry.preprocess, { rgba, w, h } = await pixelsOf(source);
  return normalize(resizeRGBA(rgba, w, h, pp.width, pp.height, pp.interpolation), pp);
}

// The whole page path: image -> preprocess -> run -> scores, with the time of each step (performance.now).
export async function classify(model, source, k = 5) {
  const t0 = performance.now();
  const x = await preprocess(source, model.entry);
  const t1 = performance.now();
  const raw = await model.run(toModelInput(x, model.entry));
  const t2 = performance.now();
  const s = scores(raw, model.entry);
  return { scores: s, top: topk(s, model.entry.labels, k), preprocessMs: t1 - t0, inferMs: t2 - t1 };
}
