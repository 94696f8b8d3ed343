// edgeproof serve page: pick or take a photo, POST it to /v1/classify, draw the top-k as bars.
// No framework, no CDN; text goes in with textContent only (labels come from the model file).
"use strict";

const KEY_STORE = "edgeproof-api-key";
const $ = (id) => document.getElementById(id);

function takeKeyFromFragment() {
  // /#key=... : the fragment never reaches the server (so the key is in no log); drop it from the URL bar.
  const m = location.hash.match(/(?:^#|&)key=([^&]+)/);
  if (m) {
    localStorage.setItem(KEY_STORE, decodeURIComponent(m[1]));
    history.replaceState(null, "", location.pathname + location.search);
  }
}

function headers() {
  const key = localStorage.getItem(KEY_STORE);
  return key ? { Authorization: "Bearer " + key } : {};
}

function setStatus(text, kind) {
  const s = $("status");
  s.textContent = text;
  s.className = "badge" + (kind ? " " + kind : "");
}

function showError(text) {
  const e = $("error");
  e.textContent = text || "";
  e.hidden = !text;
}

async function errorText(resp) {
  try {
    const body = await resp.json();
    if (body && body.error) return body.error;
  } catch (_) { /* not JSON */ }
  return "HTTP " + resp.status;
}

function fmtPlacement(p) {
  if (!p) return "not reported";
  const parts = [p.where || ""];
  if (p.total && p.accelerator) parts.push(`${p.accelerator}/${p.total} nodes on the accelerator`);
  return parts.filter(Boolean).join(" · ");
}

function renderParity(dd, parity) {
  dd.textContent = "";
  if (!parity) { dd.textContent = "not measured (run edgeproof parity)"; return; }
  const v = document.createElement("span");
  v.className = parity.verdict === "pass" ? "pass" : "fail";
  v.textContent = parity.verdict.toUpperCase();
  dd.appendChild(v);
  const bits = [];
  for (const b of parity.backends || []) {
    let t = b.backend ? `${b.backend}: ${b.verdict}` : String(b.verdict);
    if (typeof b.top1_agreement === "number") t += `, top-1 agreement ${(100 * b.top1_agreement).toFixed(1)}%`;
    bits.push(t);
  }
  if (parity.images) bits.push(`${parity.images} images`);
  if (parity.source) bits.push(`from ${parity.source}`);
  if (bits.length) dd.appendChild(document.createTextNode(" · " + bits.join(" · ")));
}

function renderCard(card) {
  $("m-file").textContent = card.file + (card.name !== card.file ? ` (as '${card.name}')` : "");
  $("m-format").textContent = card.format || "no edgeproof metadata";
  $("m-backend").textContent = card.backend;
  $("m-placement").textContent = fmtPlacement(card.placement);
  const pp = card.preprocess;
  $("m-input").textContent = `${pp.width}×${pp.height} ${pp.color}, ${card.input.dtype}` +
    (card.serving.max_batch > 1 ? `, batches of up to ${card.serving.max_batch}` : "");
  renderParity($("m-parity"), card.parity);
  $("m-integrity").textContent = card.integrity.sha256_verified ? "sha256 matches manifest.json" : "no manifest checked";
  const ul = $("m-labels");
  ul.textContent = "";
  const shown = card.labels.slice(0, 200);
  for (const label of shown) {
    const li = document.createElement("li");
    li.textContent = label;
    ul.appendChild(li);
  }
  $("m-nlabels").textContent = `(${card.labels.length}${card.labels.length > shown.length ? ", first 200 shown" : ""})`;
}

async function loadCard() {
  let resp;
  try {
    resp = await fetch("/v1/model", { headers: headers() });
  } catch (err) {
    setStatus("offline", "bad");
    showError("cannot reach the server: " + err);
    return;
  }
  if (resp.status === 401) {
    $("keybox").hidden = false;
    setStatus("needs key", "bad");
    return;
  }
  if (!resp.ok) { setStatus("error", "bad"); showError(await errorText(resp)); return; }
  $("keybox").hidden = true;
  const card = await resp.json();
  renderCard(card);
  setStatus(card.ready ? "ready" : "not ready", card.ready ? "ok" : "bad");
  if (!card.ready && card.not_ready_reason) showError(card.not_ready_reason);
}

function renderResults(topk) {
  const ol = $("results");
  ol.textContent = "";
  for (const { label, score } of topk) {
    const li = document.createElement("li");
    const fill = document.createElement("span");
    fill.className = "fill";
    fill.style.width = `${Math.max(0, Math.min(100, 100 * score)).toFixed(1)}%`;
    const name = document.createElement("span");
    name.className = "label";
    name.textContent = label;
    const value = document.createElement("span");
    value.className = "score";
    value.textContent = (100 * score).toFixed(1) + "%";
    li.append(fill, name, value);
    ol.appendChild(li);
  }
}

async function classify(file) {
  showError("");
  $("results").textContent = "";
  $("timing").textContent = "classifying…";
  const img = $("preview");
  if (img.dataset.url) URL.revokeObjectURL(img.dataset.url);
  img.dataset.url = URL.createObjectURL(file);
  img.onerror = () => { $("preview-wrap").hidden = true; };
  img.onload = () => { $("preview-wrap").hidden = false; };
  img.src = img.dataset.url;
  const form = new FormData();
  form.append("image", file, file.name || "photo.jpg");
  const t0 = performance.now();
  let resp;
  try {
    resp = await fetch("/v1/classify?top_k=5", { method: "POST", body: form, headers: headers() });
  } catch (err) {
    $("timing").textContent = "";
    showError("the request failed: " + err);
    return;
  }
  if (resp.status === 401) { $("timing").textContent = ""; $("keybox").hidden = false; showError("the server needs its API key"); return; }
  if (!resp.ok) { $("timing").textContent = ""; showError(await errorText(resp)); return; }
  const body = await resp.json();
  renderResults(body.top_k);
  const rtt = performance.now() - t0;
  $("timing").textContent = `server ${body.latency_ms.toFixed(1)} ms (inference ${body.inference_ms.toFixed(1)} ms) · round trip ${rtt.toFixed(0)} ms`;
  document.body.dataset.top1 = body.top_k.length ? body.top_k[0].label : "";
}

document.addEventListener("DOMContentLoaded", () => {
  // serve --web SITE: the exported in-browser site is at /web/ (the model runs on the phone, not here)
  fetch("/web/models.json", { method: "HEAD" }).then((r) => { $("weblink").hidden = !r.ok; }, () => {});
  takeKeyFromFragment();
  $("file").addEventListener("change", (ev) => {
    const f = ev.target.files && ev.target.files[0];
    if (f) classify(f);
  });
  $("keyform").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const k = $("key").value.trim();
    if (k) localStorage.setItem(KEY_STORE, k);
    $("key").value = "";
    loadCard();
  });
  loadCard();
});
