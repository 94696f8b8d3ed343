// The page: pick a model, classify a chosen photo or live camera frames, show top-k, latency and the runtime.
import { classify, loadModel, readModels } from "./engine.js";

const $ = (id) => document.getElementById(id);
const K = 5;
let models = [], current = null, streaming = null;

function show(result, ms) {
  $("top").replaceChildren(...result.top.map((t) => {
    const tr = document.createElement("tr");
    const name = document.createElement("td"), bar = document.createElement("td"), score = document.createElement("td");
    name.textContent = t.label;
    const b = document.createElement("div"); b.className = "bar"; b.style.width = `${Math.max(1, t.score * 100)}%`;
    bar.appendChild(b);
    score.className = "score"; score.textContent = t.score.toFixed(4);
    tr.append(name, bar, score);
    return tr;
  }));
  $("timing").textContent = `inference ${result.inferMs.toFixed(2)} ms · preprocessing ${result.preprocessMs.toFixed(2)} ms` +
    (ms ? ` · ${(1000 / ms).toFixed(1)} frames/s` : "");
  document.body.dataset.scores = JSON.stringify(Array.from(result.scores));  // for scripts that drive the page
  document.body.dataset.top1 = result.top[0].label;
}

function draw(source, w, h) {
  const c = $("view"), scale = Math.min(1, 640 / Math.max(w, h));
  c.width = Math.round(w * scale); c.height = Math.round(h * scale);
  c.getContext("2d").drawImage(source, 0, 0, c.width, c.height);
}

async function choose(index) {
  if (current) current.close();
  current = null;
  $("status").textContent = `loading ${models[index].file}…`;
  current = await loadModel(models[index]);
  $("runtime").textContent = `${current.version} (WebAssembly) · ${models[index].format} · ` +
    `${models[index].preprocess.height}x${models[index].preprocess.width} · loaded in ${current.loadMs.toFixed(0)} ms`;
  $("status").textContent = "ready: choose a photo or start the camera";
}

async function onFile(file) {
  stopCamera();
  const bmp = await createImageBitmap(file);
  draw(bmp, bmp.width, bmp.height);
  show(await classify(current, file, K));
  $("status").textContent = file.name;
}

function stopCamera() {
  if (!streaming) return;
  streaming.getTracks().forEach((t) => t.stop());
  streaming = null;
  $("camera").textContent = "live camera";
}

async function startCamera() {
  const video = $("video");
  streaming = await navigator.mediaDevices.getUserMedia({ video: { facingMode: { ideal: "environment" } }, audio: false });
  video.srcObject = streaming;
  await video.play();
  $("camera").textContent = "stop camera";
  let last = performance.now();
  // once per new camera frame where the browser says when one arrives, else once per display frame
  const next = video.requestVideoFrameCallback ? (f) => video.requestVideoFrameCallback(f) : requestAnimationFrame;
  const frame = async () => {
    if (!streaming) return;
    const bmp = await createImageBitmap(video);
    draw(bmp, bmp.width, bmp.height);
    const result = await classify(current, bmp, K);
    const now = performance.now();
    show(result, now - last);
    last = now;
    $("status").textContent = "live camera (rear camera where there is one)";
    next(frame);
  };
  next(frame);
}

async function main() {
  models = await readModels();
  $("model").replaceChildren(...models.map((m, i) => new Option(`${m.file.split("/").pop()} · ${m.runtime}`, i)));
  $("model").onchange = (e) => choose(Number(e.target.value)).catch(fail);
  $("file").onchange = (e) => e.target.files[0] && onFile(e.target.files[0]).catch(fail);
  $("camera").onclick = () => (streaming ? stopCamera() : startCamera().catch(fail));
  await choose(0);
  if ("serviceWorker" in navigator && location.protocol !== "file:" && !new URLSearchParams(location.search).has("driver")) {
    navigator.serviceWorker.register("sw.js").catch((e) => console.warn("service worker:", e));
  }
}

function fail(e) { $("error").textContent = String(e && e.message ? e.message : e); $("status").textContent = ""; }

window.edgeproofReady = main().catch(fail);
