// dlforge playground: pick a model, see its card, and try it in the panel of its task: upload/draw → labels
// (image classifiers), text → labels (text classifiers), audio upload → labels (audio classifiers), text →
// text (translation), image → image (denoisers), seed/class → a grid of images (GANs).
// Plain JS, no build step (images.js holds the image ⇄ tensor helpers). It calls the server's own routes:
// GET /v2/models, GET .../card, POST .../classify for classifiers (the same preprocessing as `dlforge predict`)
// and POST .../infer for the others, with the bearer token if one is set.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { model: null, card: null, panel: null };
const TOKEN_KEY = "dlforge-token";

function setStatus(text) { $("status").textContent = text || ""; }

async function api(path, options = {}) {
  const headers = new Headers(options.headers || {});
  const token = $("token").value.trim();
  if (token) headers.set("Authorization", "Bearer " + token);
  const response = await fetch(path, { ...options, headers });
  const body = (response.headers.get("content-type") || "").includes("json") ? await response.json() : null;
  if (!response.ok) {
    const reason = body && body.error ? body.error : response.statusText;
    const hint = response.status === 401 || response.status === 403 ? " — enter the server's token above" : "";
    throw new Error(`${response.status}: ${reason}${hint}`);
  }
  return body;
}

// --- models and the model card ---------------------------------------------------------------

async function loadModels() {
  const { models } = await api("/v2/models");
  const select = $("model");
  select.replaceChildren(...models.map((m) => {
    const versions = m.versions.length ? ` (v${m.versions.join(", v")})` : "";
    const option = new Option(`${m.name}${versions}${m.ready ? "" : " — not ready"}`, m.name);
    option.disabled = !m.ready;  // its card and routes answer 503: nothing to try
    return option;
  }));
  const wanted = decodeURIComponent(location.pathname.replace(/^\/playground\//, ""));
  const asked = models.find((m) => m.name === wanted);
  const first = asked && asked.ready ? asked : models.find((m) => m.ready);
  if (!first) {
    setStatus(models.length ? "no model is ready (POST /v2/repository/index says why)" : "no models are loaded");
    return;
  }
  select.value = first.name;
  await loadModel(first.name);
  if (asked && !asked.ready) setStatus(`model '${asked.name}' is not ready; showing '${first.name}'`);
}

async function loadModel(name) {
  state.card = await api(`/v2/models/${encodeURIComponent(name)}/card`);
  state.model = name;
  state.panel = panelOf(state.card);
  $("topk").replaceChildren();
  $("latency").textContent = "";
  showPanel(state.panel, state.card);
  renderCard(state.card);
  setStatus("");
}

// The card's task picks the panel; a classifier's input kind picks among its three.
function panelOf(card) {
  const kind = (card.preprocessing || {}).kind;
  const names = card.inputs.map((t) => t.name);
  if (card.task === "denoise") return "denoise";
  if (card.task === "gan" || (names.includes("seed") && kind === "generator")) return "generate";
  if (card.task === "seq2seq" || kind === "translation") return "translate";
  if (["image", "text", "audio"].includes(kind)) return kind;
  return card.inputs.length === 1 && card.inputs[0].datatype === "BYTES" ? "text" : "tensor";
}

const PANELS = { image: "image-input", denoise: "image-input", text: "text-input", translate: "text-input",
  audio: "audio-input", generate: "generate-input" };

function showPanel(panel, card) {
  for (const id of ["image-input", "text-input", "audio-input", "generate-input", "other-input"]) $(id).hidden = true;
  $(PANELS[panel] || "other-input").hidden = false;
  $("classify-text").textContent = panel === "translate" ? "Translate" : "Classify text";
  $("classify-drawing").textContent = panel === "denoise" ? "Denoise drawing" : "Classify drawing";
  $("noise-label").hidden = panel !== "denoise";
  $("topk").hidden = !["image", "text", "translate", "audio"].includes(panel);
  $("denoised").hidden = true;
  $("grid").hidden = true;
  const conditional = card.inputs.some((t) => t.name === "class");
  $("class-label").hidden = !conditional;
  if (panel === "generate" && conditional) {
    $("class").replaceChildren(new Option("each class in turn", "-1"),
      ...card.labels.map((label, i) => new Option(label, String(i))));
  }
}

function row(cells, tag = "td") {
  const tr = document.createElement("tr");
  for (const text of cells) { const cell = document.createElement(tag); cell.textContent = text; tr.append(cell); }
  return tr;
}

function renderCard(card) {
  const parity = card.onnx ? `max |diff| ${card.onnx.parity_max_abs_diff.toExponential(2)} ≤ ${card.onnx.tolerance}`
    : "—";
  const tensors = (list) => list.map((t) => `${t.name} ${t.datatype} [${t.shape}]`).join("; ");
  const facts = [["name", card.name], ["version", card.version], ["versions", card.versions.join(", ")],
    ["task", card.task], ["input", tensors(card.inputs)], ["output", tensors(card.outputs)],
    ["created", card.created], ["dlforge", card.dlforge_version], ["ONNX parity", parity]];
  $("card").replaceChildren(...facts.flatMap(([k, v]) => {
    const dt = document.createElement("dt"); dt.textContent = k;
    const dd = document.createElement("dd"); dd.textContent = v;
    return [dt, dd];
  }));
  const metrics = Object.entries(card.metrics || {}).filter(([, v]) => typeof v === "number");
  $("metrics").replaceChildren(...metrics.map(([k, v]) => row([k, Number.isInteger(v) ? v : v.toFixed(4)])));
  $("labels").textContent = (card.labels || []).join(", ") || "—";
  $("files").replaceChildren(...Object.entries(card.files || {}).map(([f, e]) => row([f, e.sha256, `${e.bytes} B`])));
  drawConfusion((card.metrics || {}).confusion_matrix, card.labels || []);
}

function drawConfusion(matrix, labels) {
  const canvas = $("confusion");
  const ctx = canvas.getContext("2d");
  $("no-confusion").hidden = Boolean(matrix);
  canvas.hidden = !matrix;
  if (!matrix) return;
  const n = matrix.length, pad = 24, cell = (canvas.width - pad) / n;
  const max = Math.max(1, ...matrix.flat());
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  ctx.font = `${Math.min(12, cell * 0.45)}px system-ui`;
  ctx.textAlign = "center";
  ctx.textBaseline = "middle";
  matrix.forEach((values, i) => values.forEach((count, j) => {
    const shade = count / max;  // rows: true label, columns: predicted
    ctx.fillStyle = `rgba(31, 94, 216, ${0.08 + 0.92 * shade})`;
    ctx.fillRect(pad + j * cell, pad + i * cell, cell - 1, cell - 1);
    ctx.fillStyle = shade > 0.5 ? "#fff" : "#1d2330";
    ctx.fillText(String(count), pad + (j + 0.5) * cell, pad + (i + 0.5) * cell);
  }));
  ctx.fillStyle = "#556";
  labels.slice(0, n).forEach((label, k) => {
    ctx.fillText(label.slice(0, 3), pad + (k + 0.5) * cell, pad / 2);
    ctx.fillText(label.slice(0, 3), pad / 2, pad + (k + 0.5) * cell);
  });
}

// --- classify ----------------------------------------------------------------------------------

function modelPath(card) {
  return `/v2/models/${encodeURIComponent(card.name)}/versions/${encodeURIComponent(card.version)}`;
}

function showLatency(started) {
  $("latency").textContent = `round trip ${(performance.now() - started).toFixed(1)} ms`;
}

async function classify(form) {
  const path = `${modelPath(state.card)}/classify?top_k=5`;
  setStatus("");
  const started = performance.now();
  try {
    const body = await api(path, { method: "POST", body: form });
    showLatency(started);
    renderTopK(body.predictions);
  } catch (error) {
    setStatus(error.message);
  }
}

// --- the tasks that answer through /infer: one V2 request, its outputs drawn ----------------------------

async function infer(inputs) {
  setStatus("");
  const started = performance.now();
  try {
    const body = await api(`${modelPath(state.card)}/infer`, { method: "POST",
      headers: { "Content-Type": "application/json" }, body: JSON.stringify({ inputs }) });
    showLatency(started);
    return body;
  } catch (error) {
    setStatus(error.message);
    return null;
  }
}

// translation: one sentence a line → a V2 BYTES tensor (the card's input: the codec's `text`) → one a line
async function translate(text) {
  const lines = text.split("\n").map((line) => line.trim()).filter((line) => line);
  if (!lines.length) { setStatus("type a sentence to translate"); return; }
  const body = await infer([{ name: state.card.inputs[0].name, datatype: "BYTES", shape: [lines.length], data: lines }]);
  if (!body) return;
  $("topk").replaceChildren(...body.outputs[0].data.map((translation, i) => {
    const li = document.createElement("li");
    const source = document.createElement("span"); source.className = "source"; source.textContent = lines[i];
    const target = document.createElement("span"); target.className = "translation"; target.textContent = translation;
    li.append(source, target);
    return li;
  }));
}

function outputRange(card) {
  return (card.preprocessing || {}).output_range || [0, 1];
}

// denoising: the image at the model's size (+ the chosen noise) → FP32 [1, C, H, W] → the denoised image
async function denoise(source) {
  const spec = state.card.inputs[0];
  const shape = [1, ...spec.shape.slice(1)];
  const data = imageToTensor(source, shape, Number($("noise").value));
  const body = await infer([{ name: spec.name, datatype: "FP32", shape, data }]);
  if (!body) return;
  const out = body.outputs[0];
  drawOne($("denoise-in"), data, shape, [0, 1]);
  drawOne($("denoise-out"), out.data, out.shape, outputRange(state.card));
  $("denoised").hidden = false;
}

function drawOne(canvas, data, shape, range) {
  const scale = Math.max(1, Math.floor(160 / Math.max(shape[2], shape[3])));
  canvas.width = shape[3] * scale;
  canvas.height = shape[2] * scale;
  drawTensorImage(canvas.getContext("2d"), data, 0, shape, range, 0, 0, scale);
}

// generation: seeds first..first+n-1 (and a class each, for a conditional GAN) → a grid of images
async function generate() {
  const card = state.card;
  const first = Math.max(0, Math.floor(Number($("seed").value) || 0));
  const count = Math.min(64, Math.max(1, Math.floor(Number($("count").value) || 16)));
  const seeds = Array.from({ length: count }, (_, i) => first + i);
  const inputs = [{ name: "seed", datatype: "INT64", shape: [count], data: seeds }];
  if (card.inputs.some((t) => t.name === "class")) {
    const chosen = Number($("class").value);
    const classes = seeds.map((_, i) => (chosen >= 0 ? chosen : i % card.labels.length));
    inputs.push({ name: "class", datatype: "INT64", shape: [count], data: classes });
  }
  const body = await infer(inputs);
  if (!body) return;
  const out = body.outputs.find((o) => o.name === "image") || body.outputs[0];
  drawTensorGrid($("grid"), out.data, out.shape, outputRange(card));
  $("grid").hidden = false;
}

function renderTopK(predictions) {
  $("topk").replaceChildren(...predictions.map((p) => {
    const li = document.createElement("li");
    const label = document.createElement("span"); label.className = "label"; label.textContent = p.label;
    const track = document.createElement("span");
    const bar = document.createElement("span"); bar.className = "bar";
    bar.style.display = "block";
    bar.style.width = `${Math.max(1, p.probability * 100)}%`;
    track.append(bar);
    const pct = document.createElement("span"); pct.className = "p";
    pct.textContent = `${(p.probability * 100).toFixed(1)}%`;
    li.append(label, track, pct);
    return li;
  }));
}

function classifyFile(file) {
  const form = new FormData();
  form.append("file", file, file.name || "upload");
  return classify(form);
}

// An uploaded image: classified by the server's own decoder, or denoised at the model's size here.
async function useImage(file) {
  if (state.panel !== "denoise") return classifyFile(file);
  const image = new Image();
  image.src = URL.createObjectURL(file);
  try {
    await image.decode();
  } catch {
    setStatus(`${file.name}: not an image this browser can decode`);
    return null;
  }
  return denoise(image);
}

// --- inputs: a drawing canvas, a drop zone, a text box, a WAV upload ---------------------------

function setupCanvas() {
  const canvas = $("draw");
  const ctx = canvas.getContext("2d");
  const clear = () => { ctx.fillStyle = "#000"; ctx.fillRect(0, 0, canvas.width, canvas.height); };
  clear();
  let drawing = false;
  const point = (e) => { const r = canvas.getBoundingClientRect(); return [e.clientX - r.left, e.clientY - r.top]; };
  canvas.addEventListener("pointerdown", (e) => {
    drawing = true;
    canvas.setPointerCapture(e.pointerId);
    ctx.beginPath();
    ctx.moveTo(...point(e));
  });
  canvas.addEventListener("pointermove", (e) => {
    if (!drawing) return;
    ctx.strokeStyle = "#fff";  // white ink on black, like the digits data set
    ctx.lineWidth = canvas.width / 10;
    ctx.lineCap = ctx.lineJoin = "round";
    ctx.lineTo(...point(e));
    ctx.stroke();
  });
  canvas.addEventListener("pointerup", () => { drawing = false; });
  $("clear").addEventListener("click", clear);
  $("classify-drawing").addEventListener("click", () => {
    if (state.panel === "denoise") { denoise(canvas); return; }
    canvas.toBlob((blob) => classifyFile(new File([blob], "drawing.png")));
  });
}

function setupUploads() {
  const drop = $("drop");
  const show = (file) => {
    const preview = $("preview");
    preview.src = URL.createObjectURL(file);
    preview.hidden = false;
    useImage(file);
  };
  $("image-file").addEventListener("change", (e) => e.target.files[0] && show(e.target.files[0]));
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    if (e.dataTransfer.files[0]) show(e.dataTransfer.files[0]);
  });
  $("classify-text").addEventListener("click", () => {
    if (state.panel === "translate") { translate($("text").value); return; }
    const form = new FormData();
    form.append("text", $("text").value);
    classify(form);
  });
  $("audio-file").addEventListener("change", (e) => {
    const file = e.target.files[0];
    if (!file) return;
    $("player").src = URL.createObjectURL(file);
    $("player").hidden = false;
    classifyFile(file);
  });
}

function start() {
  const token = $("token");
  $("auth").addEventListener("submit", (e) => { e.preventDefault(); token.dispatchEvent(new Event("change")); });
  token.value = sessionStorage.getItem(TOKEN_KEY) || "";
  token.addEventListener("change", () => {
    sessionStorage.setItem(TOKEN_KEY, token.value.trim());
    loadModels().catch((error) => setStatus(error.message));
  });
  $("model").addEventListener("change", (e) => {
    history.replaceState(null, "", `/playground/${encodeURIComponent(e.target.value)}`);
    loadModel(e.target.value).catch((error) => setStatus(error.message));
  });
  $("generate").addEventListener("click", generate);
  setupCanvas();
  setupUploads();
  loadModels().catch((error) => setStatus(error.message));
}

start();
