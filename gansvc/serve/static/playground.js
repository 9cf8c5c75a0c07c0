// gansvc playground: the served models in a browser. Plain JavaScript, no dependencies, no build step; it uses the
// same HTTP API as any client (relative URLs: it works wherever the front door is mounted) and shows the API's JSON
// errors ({"error": {"code", "message"}}) as they are written.
"use strict";

const $ = (id) => document.getElementById(id);
const MAX_SEED = Number.MAX_SAFE_INTEGER; // the API takes seeds up to 2^63-1; a JS number is exact up to 2^53-1
const ANY = ""; // a label dropdown's "any" choice: the attribute is left out and drawn from the seed

const state = {
  models: [],
  model: null,
  urls: { gen: [], walk: [], tr: [] }, // object URLs of the shown results, freed when replaced
  walk: null, // {frames: ImageBitmap[], timer, index, body, name}
  file: null,
};

class ApiProblem extends Error {
  constructor(status, code, message, retryAfter) {
    super(message);
    Object.assign(this, { status, code, retryAfter });
  }
}

// ------------------------------------------------------------------------------------------------ small helpers

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "text") node.textContent = v;
    else node.setAttribute(k, v === true ? "" : v);
  }
  node.append(...children);
  return node;
}

async function api(path, init) {
  let res;
  try {
    res = await fetch(path, init);
  } catch (err) {
    throw new ApiProblem(0, "network", `the server did not answer (${err.message}); is it running?`);
  }
  if (res.ok) return res;
  let code = `http_${res.status}`;
  let message = res.statusText || "the request failed";
  const text = await res.text().catch(() => "");
  try {
    const body = JSON.parse(text);
    if (body && body.error) ({ code, message } = body.error);
  } catch {
    if (text) message = text.slice(0, 300);
  }
  throw new ApiProblem(res.status, code, message, res.headers.get("Retry-After"));
}

// each panel shows its own messages next to the form that caused them: `.error` (role=alert) and `.status`
function showError(panel, action, err) {
  const p = err instanceof ApiProblem ? err : new ApiProblem(0, "page", String((err && err.message) || err));
  const box = panel.querySelector(".error");
  const where = p.status ? `${p.code}, HTTP ${p.status}` : p.code;
  box.replaceChildren(el("strong", { text: `Could not ${action}: ` }), p.message);
  if (p.retryAfter) box.append(` Retry in ${p.retryAfter} s.`);
  box.append(" ", el("span", { class: "code", text: `(${where})` }));
  box.hidden = false;
  setStatus(panel, "");
}

function clearError(panel) {
  const box = panel.querySelector(".error");
  box.hidden = true;
  box.replaceChildren();
}

function setStatus(panel, text) {
  const status = panel.querySelector(".status");
  if (status) status.textContent = text;
}

function freeUrls(kind) {
  for (const url of state.urls[kind]) URL.revokeObjectURL(url);
  state.urls[kind] = [];
}

function keepUrl(kind, blob) {
  const url = URL.createObjectURL(blob);
  state.urls[kind].push(url);
  return url;
}

function b64Blob(b64, type) {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  return new Blob([bytes], { type });
}

function randomSeed() {
  return Math.floor(Math.random() * 2 ** 31);
}

function readInt(id, what, lo, hi) {
  const input = $(id);
  const v = Number(input.value);
  if (input.value.trim() === "" || !Number.isInteger(v) || v < lo || v > hi) {
    input.focus();
    throw new ApiProblem(0, "invalid_input", `${what} must be a whole number from ${lo} to ${hi}`);
  }
  return v;
}

async function busy(form, action, work) {
  const panel = form.closest("section");
  const submit = form.querySelector("button[type=submit]");
  clearError(panel);
  submit.disabled = true;
  form.setAttribute("aria-busy", "true");
  const t0 = performance.now();
  try {
    const done = await work((text) => setStatus(panel, text));
    setStatus(panel, `${done} in ${((performance.now() - t0) / 1000).toFixed(2)} s`);
  } catch (err) {
    showError(panel, action, err);
  } finally {
    submit.disabled = false;
    form.removeAttribute("aria-busy");
  }
}

function download(href, filename, text) {
  return el("a", { href, download: filename, text });
}

// ------------------------------------------------------------------------------------------------------ models

async function loadModels() {
  const select = $("model");
  select.disabled = true;
  try {
    const res = await api("v1/models");
    state.models = (await res.json()).models;
  } catch (err) {
    showError($("model").closest("section"), "list the models", err);
    state.models = [];
  }
  const wanted = new URLSearchParams(location.search).get("model") || (state.model && state.model.name);
  select.replaceChildren(
    ...state.models.map((m) => el("option", { value: m.name, text: `${m.name} (${m.family}, ${m.task})` })),
  );
  $("no-models").hidden = state.models.length > 0;
  select.disabled = state.models.length === 0;
  if (state.models.some((m) => m.name === wanted)) select.value = wanted;
  selectModel(select.value);
}

function selectModel(name) {
  const m = state.models.find((x) => x.name === name) || null;
  state.model = m;
  stopWalk();
  for (const kind of Object.keys(state.urls)) freeUrls(kind);
  $("gen-result").replaceChildren();
  $("tr-result").replaceChildren();
  $("walk-result").hidden = true;
  $("card").hidden = !m;
  $("generate-panel").hidden = !m || m.task !== "generate";
  $("walk-panel").hidden = !m || m.task !== "generate";
  $("translate-panel").hidden = !m || m.task === "generate";
  if (!m) return;
  const url = new URL(location.href);
  url.searchParams.set("model", m.name);
  history.replaceState(null, "", url);
  renderCard(m);
  if (m.task === "generate") setUpGeneration(m);
  else setUpTranslation(m);
}

function renderCard(m) {
  const facts = [
    ["Family", m.family],
    ["Task", m.task === "generate" ? "generate (noise → image)" : "translate (image → image)"],
    ["Dataset", m.dataset || "not recorded"],
    ["Training steps", Number.isInteger(m.step) ? m.step.toLocaleString("en-US") : "not recorded"],
    ["Version", `${m.version} of ${m.registry_name}`],
    ["Registered", m.created || "not recorded"],
    ["Image size", `${m.image.width} × ${m.image.height}, ${m.image.channels === 1 ? "grayscale" : "colour"}`],
  ];
  if (m.task === "generate") {
    const attrs = Object.entries(m.attributes || {});
    facts.push(
      ["Labels", attrs.length ? attrs.map(([k, v]) => `${k}: ${v.join(", ")}`).join("; ") : "none"],
      ["Latent size", m.latent_dim ?? "—"],
      ["Images per request", `at most ${m.max_n}`],
    );
  } else {
    facts.push(
      ["Directions", m.directions.map((d) => (d === "a2b" ? "A → B" : "B → A")).join(", ")],
      ["Attention heatmap", m.heatmap ? "yes" : "no"],
      ["Largest input", `${m.max_pixels.toLocaleString("en-US")} pixels (width × height)`],
    );
  }
  $("card-facts").replaceChildren(...facts.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: String(v) })]));

  const metrics = Object.entries(m.metrics || {});
  $("card-no-metrics").hidden = metrics.length > 0;
  $("card-metrics").hidden = metrics.length === 0;
  $("card-metrics").tBodies[0].replaceChildren(
    ...metrics.map(([k, v]) =>
      el("tr", {}, el("th", { scope: "row", text: k }), el("td", { class: "num", text: formatNumber(v) })),
    ),
  );
  const proto = m.metric_protocol || {};
  $("card-protocol").textContent = metrics.length ? describeProtocol(proto) : "";
  $("card-protocol-details").hidden = Object.keys(proto).length === 0;
  $("card-protocol-json").textContent = JSON.stringify(proto, null, 2);
}

function formatNumber(v) {
  if (typeof v !== "number") return String(v);
  return Number.isInteger(v) ? v.toLocaleString("en-US") : String(Number(v.toPrecision(5)));
}

function describeProtocol(p) {
  if (!Object.keys(p).length) return "How these metrics were computed was not recorded.";
  const parts = [];
  if (p.extractor) {
    let w = p.weights_sha256 ? ` (weights sha256 ${p.weights_sha256.slice(0, 12)}…` : " (";
    if (p.weights_sha256 && p.weights_are_published === false) w += ", not the published weights: not comparable with papers";
    parts.push(`Features: ${p.extractor}${w ? w + ")" : ""}`.replace(" ()", ""));
  }
  if (p.resize) parts.push(`resize: ${p.resize}`);
  if (p.n_generated !== undefined) parts.push(`${p.n_generated} generated vs ${p.n_real ?? "?"} real images`);
  const ref = p.reference || {};
  if (ref.split) parts.push(`reference split: ${ref.split}`);
  return parts.length ? `${parts.join("; ")}.` : "See the full record below.";
}

// -------------------------------------------------------------------------------------------------- generation

function labelSelects(box, attributes, prefix) {
  const fields = box.querySelector(".fields");
  const entries = Object.entries(attributes || {});
  box.hidden = entries.length === 0;
  fields.replaceChildren(
    ...entries.map(([name, values]) => {
      const id = `${prefix}-${name}`;
      const select = el(
        "select",
        { id, "data-attribute": name },
        el("option", { value: ANY, text: "any" }),
        ...values.map((v) => el("option", { value: v, text: v })),
      );
      return el("div", { class: "field" }, el("label", { for: id, text: name.replaceAll("_", " ") }), select);
    }),
  );
}

function chosenLabels(box) {
  const labels = {};
  for (const select of box.querySelectorAll("select[data-attribute]")) {
    if (select.value !== ANY) labels[select.dataset.attribute] = select.value;
  }
  return labels;
}

function setUpGeneration(m) {
  for (const id of ["gen-seed", "walk-a", "walk-b"]) if (!$(id).value) $(id).value = randomSeed();
  for (const [id, hint] of [["gen-n", "gen-n-hint"], ["walk-steps", "walk-steps-hint"]]) {
    $(id).max = m.max_n;
    if (Number($(id).value) > m.max_n) $(id).value = m.max_n;
    $(hint).textContent = `at most ${m.max_n} for this model`;
  }
  labelSelects($("gen-labels"), m.attributes, "gen-label");
  labelSelects($("walk-labels-a"), m.attributes, "walk-a-label");
  labelSelects($("walk-labels-b"), m.attributes, "walk-b-label");
}

async function generate(progress) {
  const m = state.model;
  const seed = readInt("gen-seed", "The seed", 0, MAX_SEED);
  const n = readInt("gen-n", "The number of images", 1, m.max_n);
  const body = { n, seed, format: n === 1 ? "png" : "grid" };
  if ($("gen-truncate").checked) {
    const t = Number($("gen-truncation").value);
    if (!(t >= 0.05 && t <= 10)) throw new ApiProblem(0, "invalid_input", "truncation must be from 0.05 to 10");
    body.truncation = t;
  }
  if (m.conditional) {
    const labels = chosenLabels($("gen-labels"));
    if (Object.keys(labels).length) body.labels = labels;
  }
  progress(`Generating ${n} image${n > 1 ? "s" : ""}…`);
  const res = await api(`v1/models/${encodeURIComponent(m.name)}/generate`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  const blob = await res.blob();
  freeUrls("gen");
  const url = keepUrl("gen", blob);
  const labelText = body.labels ? `, ${Object.entries(body.labels).map(([k, v]) => `${k} ${v}`).join(", ")}` : "";
  const what = `${n} image${n > 1 ? "s" : ""} of ${m.name} v${res.headers.get("X-Model-Version")}, seed ${seed}`;
  $("gen-result").replaceChildren(
    el(
      "figure",
      {},
      el("img", { src: url, alt: `${what}${labelText}`, class: n > 1 ? "grid" : "", id: "gen-image" }),
      el("figcaption", { text: `${what}${labelText}${body.truncation ? `, truncation ${body.truncation}` : ""}` }),
      download(url, `${m.name}-v${res.headers.get("X-Model-Version")}-seed${seed}-n${n}.png`, "Download PNG"),
    ),
  );
  return `Generated ${what}`;
}

// ------------------------------------------------------------------------------------------------ latent walks

function walkBody(format) {
  const m = state.model;
  const body = {
    seeds: [readInt("walk-a", "Seed A", 0, MAX_SEED), readInt("walk-b", "Seed B", 0, MAX_SEED)],
    steps: readInt("walk-steps", "The number of frames", 2, m.max_n),
    method: $("walk-method").value,
    format,
  };
  if (m.conditional) {
    const a = chosenLabels($("walk-labels-a"));
    const b = chosenLabels($("walk-labels-b"));
    if (Object.keys(a).length || Object.keys(b).length) body.labels = [a, b];
  }
  return body;
}

async function postWalk(name, body) {
  return api(`v1/models/${encodeURIComponent(name)}/interpolate`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
}

async function walk(progress) {
  const m = state.model;
  const body = walkBody("grid"); // the frames come as one grid PNG; the page cuts them out and animates them
  progress(`Walking ${body.steps} frames from seed ${body.seeds[0]} to ${body.seeds[1]}…`);
  const res = await postWalk(m.name, body);
  const blob = await res.blob();
  const cols = Number(res.headers.get("X-Grid-Columns"));
  const pad = Number(res.headers.get("X-Grid-Pad"));
  const sheet = await createImageBitmap(blob);
  const { width: w, height: h } = m.image;
  const frames = [];
  for (let i = 0; i < body.steps; i++) {
    const r = Math.floor(i / cols);
    const c = i % cols;
    frames.push(await createImageBitmap(sheet, pad + c * (w + pad), pad + r * (h + pad), w, h));
  }
  stopWalk();
  freeUrls("walk");
  const url = keepUrl("walk", blob);
  const tag = `${m.name}-v${res.headers.get("X-Model-Version")}-walk-${body.seeds[0]}-${body.seeds[1]}-${body.steps}`;
  state.walk = { frames, index: 0, timer: null, body, name: m.name, tag };
  const canvas = $("walk-canvas");
  canvas.width = w;
  canvas.height = h;
  $("walk-frame").max = frames.length - 1;
  $("walk-download-grid").href = url;
  $("walk-download-grid").download = `${tag}.png`;
  $("walk-caption").textContent =
    `${m.name}: ${body.steps} frames, seed ${body.seeds[0]} → ${body.seeds[1]} (${body.method})`;
  $("walk-result").hidden = false;
  showFrame(0);
  // an animation that starts by itself is what the person asked for, unless they asked their system for less motion
  if (!matchMedia("(prefers-reduced-motion: reduce)").matches) playWalk();
  return `Walked ${body.steps} frames`;
}

function showFrame(i) {
  const wk = state.walk;
  if (!wk) return;
  wk.index = i;
  const canvas = $("walk-canvas");
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  ctx.drawImage(wk.frames[i], 0, 0);
  $("walk-frame").value = i;
  $("walk-frame-out").textContent = `${i + 1} / ${wk.frames.length}`;
  canvas.setAttribute("aria-label", `latent walk, frame ${i + 1} of ${wk.frames.length}`);
}

function playWalk() {
  const wk = state.walk;
  if (!wk || wk.timer) return;
  // back and forth (ping-pong), 10 frames a second: the served WebP / GIF loop at the same rate
  let dir = 1;
  wk.timer = setInterval(() => {
    let next = wk.index + dir;
    if (next < 0 || next >= wk.frames.length) {
      dir = -dir;
      next = wk.index + dir;
    }
    showFrame(Math.max(0, Math.min(wk.frames.length - 1, next)));
  }, 100);
  $("walk-play").textContent = "Pause";
  $("walk-play").setAttribute("aria-pressed", "true");
}

function stopWalk() {
  const wk = state.walk;
  if (wk && wk.timer) clearInterval(wk.timer);
  if (wk) wk.timer = null;
  $("walk-play").textContent = "Play";
  $("walk-play").setAttribute("aria-pressed", "false");
}

async function downloadWalk(format, button) {
  const wk = state.walk;
  const panel = button.closest("section");
  if (!wk) return;
  clearError(panel);
  button.disabled = true;
  try {
    const res = await postWalk(wk.name, { ...wk.body, format });
    const url = keepUrl("walk", await res.blob());
    const a = download(url, `${wk.tag}.${format}`, "");
    document.body.append(a);
    a.click();
    a.remove();
    setStatus(panel, `Saved the walk as an animated ${format.toUpperCase()}`);
  } catch (err) {
    showError(panel, `make the animated ${format.toUpperCase()}`, err);
  } finally {
    button.disabled = false;
  }
}

// ------------------------------------------------------------------------------------------------- translation

function setUpTranslation(m) {
  const names = { a2b: "A → B", b2a: "B → A" };
  const options = m.directions.map((d) => el("option", { value: d, text: names[d] }));
  if (m.directions.length > 1) options.push(el("option", { value: m.directions.join(","), text: "both directions" }));
  $("tr-direction").replaceChildren(...options);
  $("tr-heatmap-field").hidden = !m.heatmap;
}

function chooseFile(file) {
  state.file = file || null;
  $("tr-file-name").textContent = file ? `${file.name} (${file.type || "unknown type"}, ${file.size} bytes)` : "";
}

function figure(src, caption, alt, name) {
  return el(
    "figure",
    {},
    el("img", { src, alt }),
    el("figcaption", { text: caption }),
    name ? download(src, name, `Download ${caption[0].toLowerCase()}${caption.slice(1)}`) : "",
  );
}

async function translate(progress) {
  const m = state.model;
  const file = state.file;
  if (!file) throw new ApiProblem(0, "no_file", "choose or drop a PNG or JPEG image first");
  if (m.max_request_bytes && file.size > m.max_request_bytes) {
    throw new ApiProblem(
      413,
      "payload_too_large",
      `${file.name} is ${file.size.toLocaleString("en-US")} bytes; this server takes at most ` +
        `${m.max_request_bytes.toLocaleString("en-US")} bytes per request (max_request_bytes): resize or compress it`,
    );
  }
  const directions = $("tr-direction").value.split(",");
  const heatmap = m.heatmap && $("tr-heatmap").checked;
  progress(`Translating ${file.name}…`);
  const rows = [];
  const stem = file.name.replace(/\.[^.]*$/, "") || "image";
  for (const d of directions) {
    const form = new FormData();
    form.append("image", file, file.name);
    const res = await api(`v1/models/${encodeURIComponent(m.name)}/translate?direction=${d}&heatmap=${heatmap}`, {
      method: "POST",
      body: form,
    });
    const label = d === "a2b" ? "A → B" : "B → A";
    const tag = `${stem}-${m.name}-v${res.headers.get("X-Model-Version")}-${d}`;
    if (heatmap) {
      const out = await res.json();
      rows.push([
        [keepUrl("tr", b64Blob(out.image, "image/png")), `Output ${label}`, `${tag}.png`],
        [keepUrl("tr", b64Blob(out.heatmap, "image/png")), `Heatmap ${label}`, `${tag}-heatmap.png`],
      ]);
    } else {
      rows.push([[keepUrl("tr", await res.blob()), `Output ${label}`, `${tag}.png`]]);
    }
  }
  const input = keepUrl("tr", file); // a File is a Blob
  $("tr-result").replaceChildren(
    ...rows.map((row) =>
      el(
        "div",
        { class: "row" },
        figure(input, "Input", `the uploaded image ${file.name}`),
        ...row.map(([src, caption, name]) => figure(src, caption, `${caption} of ${file.name} by ${m.name}`, name)),
      ),
    ),
  );
  return `Translated ${file.name} (${directions.length} direction${directions.length > 1 ? "s" : ""})`;
}

// ------------------------------------------------------------------------------------------------------ wiring

function wire() {
  const modelPanel = $("model").closest("section");
  $("model").addEventListener("change", (e) => {
    for (const panel of document.querySelectorAll("section")) clearError(panel);
    selectModel(e.target.value);
  });
  $("reload").addEventListener("click", () => {
    clearError(modelPanel);
    loadModels();
  });
  for (const button of document.querySelectorAll("[data-new-seed]")) {
    button.addEventListener("click", () => {
      $(button.dataset.newSeed).value = randomSeed();
    });
  }
  $("gen-truncate").addEventListener("change", (e) => {
    $("gen-truncation").disabled = !e.target.checked;
  });
  $("generate-form").addEventListener("submit", (e) => {
    e.preventDefault();
    busy(e.target, "generate", generate);
  });
  $("walk-form").addEventListener("submit", (e) => {
    e.preventDefault();
    busy(e.target, "walk the latent space", walk);
  });
  $("walk-play").addEventListener("click", () => (state.walk && state.walk.timer ? stopWalk() : playWalk()));
  $("walk-frame").addEventListener("input", (e) => {
    stopWalk();
    showFrame(Number(e.target.value));
  });
  for (const button of document.querySelectorAll("[data-walk-format]")) {
    button.addEventListener("click", () => downloadWalk(button.dataset.walkFormat, button));
  }
  $("translate-form").addEventListener("submit", (e) => {
    e.preventDefault();
    busy(e.target, "translate", translate);
  });
  $("tr-file").addEventListener("change", (e) => chooseFile(e.target.files[0]));
  const drop = $("drop");
  for (const type of ["dragenter", "dragover"]) {
    drop.addEventListener(type, (e) => {
      e.preventDefault();
      drop.classList.add("over");
    });
  }
  for (const type of ["dragleave", "drop"]) drop.addEventListener(type, () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    const file = e.dataTransfer && e.dataTransfer.files[0];
    if (file) chooseFile(file);
  });
}

wire();
loadModels();
