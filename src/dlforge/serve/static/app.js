// dlforge playground: pick a model, give it an image / text / WAV, see the top-k labels and the model card.
// Plain JS, no build step. It calls the server's own routes: GET /v2/models, GET .../card and
// POST .../classify (the same preprocessing as `dlforge predict`), with the bearer token if one is set.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { model: null, card: null };
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
  select.replaceChildren(...models.map((m) => new Option(`${m.name} (v${m.versions.join(", v")})`, m.name)));
  const wanted = decodeURIComponent(location.pathname.replace(/^\/playground\//, ""));
  const first = models.find((m) => m.name === wanted) || models[0];
  if (!first) { setStatus("no models are loaded"); return; }
  select.value = first.name;
  await loadModel(first.name);
}

async function loadModel(name) {
  state.card = await api(`/v2/models/${encodeURIComponent(name)}/card`);
  state.model = name;
  $("topk").replaceChildren();
  $("latency").textContent = "";
  showInput(inputKind(state.card));
  renderCard(state.card);
  setStatus("");
}

function inputKind(card) {
  const kind = (card.preprocessing || {}).kind;
  if (kind) return kind;
  return card.inputs.length === 1 && card.inputs[0].datatype === "BYTES" ? "text" : "tensor";
}

function showInput(kind) {
  const panels = { image: "image-input", text: "text-input", audio: "audio-input" };
  for (const id of ["image-input", "text-input", "audio-input", "other-input"]) $(id).hidden = true;
  $(panels[kind] || "other-input").hidden = false;
}

function row(cells, tag = "td") {
  const tr = document.createElement("tr");
  for (const text of cells) { const cell = document.createElement(tag); cell.textContent = text; tr.append(cell); }
  return tr;
}

function renderCard(card) {
  const facts = [["name", card.name], ["version", card.version], ["versions", card.versions.join(", ")],
    ["task", card.task], ["input", card.inputs.map((t) => `${t.name} ${t.datatype} [${t.shape}]`).join("; ")],
    ["created", card.created], ["dlforge", card.dlforge_version],
    ["ONNX parity", `max |diff| ${card.onnx.parity_max_abs_diff.toExponential(2)} ≤ ${card.onnx.tolerance}`]];
  $("card").replaceChildren(...facts.flatMap(([k, v]) => {
    const dt = document.createElement("dt"); dt.textContent = k;
    const dd = document.createElement("dd"); dd.textContent = v;
    return [dt, dd];
  }));
  const metrics = Object.entries(card.metrics).filter(([, v]) => typeof v === "number");
  $("metrics").replaceChildren(...metrics.map(([k, v]) => row([k, Number.isInteger(v) ? v : v.toFixed(4)])));
  $("labels").textContent = card.labels.join(", ");
  $("files").replaceChildren(...Object.entries(card.files).map(([f, e]) => row([f, e.sha256, `${e.bytes} B`])));
  drawConfusion(card.metrics.confusion_matrix, card.labels);
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

async function classify(form) {
  const card = state.card;
  const path = `/v2/models/${encodeURIComponent(card.name)}/versions/${encodeURIComponent(card.version)}` +
    "/classify?top_k=5";
  setStatus("");
  const started = performance.now();
  try {
    const body = await api(path, { method: "POST", body: form });
    $("latency").textContent = `round trip ${(performance.now() - started).toFixed(1)} ms`;
    renderTopK(body.predictions);
  } catch (error) {
    setStatus(error.message);
  }
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
  $("classify-drawing").addEventListener("click", () => canvas.toBlob((blob) => classifyFile(new File([blob], "drawing.png"))));
}

function setupUploads() {
  const drop = $("drop");
  const show = (file) => {
    const preview = $("preview");
    preview.src = URL.createObjectURL(file);
    preview.hidden = false;
    classifyFile(file);
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
  setupCanvas();
  setupUploads();
  loadModels().catch((error) => setStatus(error.message));
}

start();
