// The try-it page: plain JS, no build step, no external URLs. Everything the user typed is
// put in the page with textContent (never innerHTML), so the text cannot inject markup.
// Nothing here knows a task by name: the input boxes follow the tool's input schema
// (GET /v1/tools: one box for a text, one per field for an object such as a question and its
// context), and a prediction is drawn by its shape (entities with offsets, label probabilities,
// or else its JSON). A run whose task streams (GET /v1/model: "streams") gets a chat box instead,
// talking to the OpenAI-compatible POST /v1/chat/completions: the reply is read token by token
// from its server-sent events (fetch + ReadableStream).
"use strict";

const PALETTE = ["#7aecec", "#bfeeb7", "#feca74", "#ff9561", "#aa9cfc", "#c887fb", "#9cc9cc", "#ffeb80",
                 "#ff8197", "#f0d0ff", "#e4e7d2", "#bfe1d9", "#e2b4a6", "#c5d1f7"];
const $ = (id) => document.getElementById(id);
const state = { info: null, types: [], fields: null, json: [], key: sessionStorage.getItem("runassist-api-key") || "" };
const chat = { messages: [], controller: null };  // the conversation so far; the reply being streamed

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k === "style") node.style.cssText = v;
    else node.setAttribute(k, v);
  }
  for (const child of children) node.append(child);
  return node;
}

function headers() {
  const h = { "Content-Type": "application/json" };
  if (state.key) h["X-API-Key"] = state.key;
  return h;
}

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: headers() });
  let body = null;
  try { body = await response.json(); } catch (e) { /* not JSON */ }
  if (!response.ok) {
    if (response.status === 401) $("auth").hidden = false;
    const message = body && body.error ? body.error.message : `HTTP ${response.status}`;
    throw new Error(message);
  }
  return body;
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

// "B-PER" -> "PER"; the types keep the model's label order, so a type's colour never changes.
function entityTypes(labels) {
  const types = [];
  for (const label of labels) {
    if (label === "O") continue;
    const type = /^[BIESLU]-/.test(label) ? label.slice(2) : label;
    if (!types.includes(type)) types.push(type);
  }
  return types;
}

function colour(type) {
  const i = state.types.indexOf(type);
  return PALETTE[(i < 0 ? state.types.length : i) % PALETTE.length];
}

function fmt(v) {
  return typeof v === "number" ? (Number.isInteger(v) ? String(v) : v.toFixed(4)) : String(v);
}

function renderInfo(info) {
  state.info = info;
  state.types = entityTypes(info.labels || []);
  $("model-name").textContent = info.run;
  $("model-about").textContent = `${info.title || info.task} model fine-tuned from ${info.base_model} ` +
    `(backend ${info.backend})`;
  const table = $("metrics-table");
  table.replaceChildren();
  const metrics = info.metrics || {};
  const rows = ["dev", "test"].filter((s) => metrics[s]);
  const cols = [];
  for (const s of rows) {
    for (const [k, v] of Object.entries(metrics[s])) if (typeof v === "number" && !cols.includes(k)) cols.push(k);
  }
  if (rows.length) {
    table.append(el("tr", {}, el("th", {}, "split"), ...cols.map((c) => el("th", {}, c))));
    for (const s of rows) {
      table.append(el("tr", { "data-split": s }, el("td", {}, s),
                      ...cols.map((c) => el("td", {}, c in metrics[s] ? fmt(metrics[s][c]) : "-"))));
    }
  } else {
    table.append(el("tr", {}, el("td", {}, "no metrics in this run's summary.json")));
  }
  const best = metrics.best;
  const parts = [info.labels_summary, best ? `best dev ${best.metric} ${fmt(best.value)} at step ${best.step}` : ""];
  $("labels").textContent = parts.filter(Boolean).join(" · ");
}

// One input of the tool, from its JSON schema: a string (one box), or an object whose string
// properties each get a box. Of an anyOf the first string form wins (a text rather than a pair).
function renderForm(itemSchema) {
  const options = itemSchema && itemSchema.anyOf ? itemSchema.anyOf : [itemSchema || { type: "string" }];
  const text = options.find((o) => o && o.type === "string");
  const object = options.find((o) => o && o.type === "object" && o.properties);
  const form = $("fields");
  const fields = text || !object ? null : Object.keys(object.properties);
  if (form.dataset.shape === JSON.stringify(fields)) return;  // same boxes: keep what the user typed
  form.dataset.shape = JSON.stringify(fields);
  form.replaceChildren();
  if (!fields) {
    state.fields = null;
    form.append(el("label", { for: "input" }, "Text"),
                el("textarea", { id: "input", rows: "6", placeholder: "Type or paste text, then Predict (Ctrl+Enter)" }));
    return;
  }
  state.fields = fields;
  state.json = fields.filter((n) => object.properties[n].type !== "string");  // typed as JSON, e.g. a span
  for (const name of fields) {
    const rows = name === "context" || name === "text" ? "6" : "2";
    const hint = state.json.includes(name) ? " (JSON, e.g. {\"start\": 0, \"end\": 4})" : "";
    form.append(el("label", { for: `field-${name}` }, name + hint),
                el("textarea", { id: `field-${name}`, "data-field": name, rows,
                                 placeholder: (object.properties[name].description || name) + hint }));
  }
}

// A model that takes files (GET /v1/model: "media" is "image" or "audio"): a drop zone and a file
// picker instead of text boxes; the file is shown (an <img>, or an <audio> player) and uploaded as
// multipart/form-data. Only the kind of media decides the preview, never the task's name.
function renderMedia(info) {
  const form = $("fields");
  if (form.dataset.shape === "media") return;
  form.dataset.shape = "media";
  state.fields = null;
  state.media = info.media;
  const accept = (info.media_suffixes || []).join(",");
  const input = el("input", { id: "file-input", type: "file", accept });
  const zone = el("div", { id: "drop", class: "drop", tabindex: "0" },
                  `Drop ${info.media === "image" ? "an image" : "a recording"} here, or `,
                  el("label", { for: "file-input", class: "pick" }, "choose a file"), input);
  const preview = el("div", { id: "preview", class: "preview" });
  form.replaceChildren(zone, preview);
  input.addEventListener("change", () => input.files[0] && chooseFile(input.files[0]));
  zone.addEventListener("dragover", (ev) => { ev.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (ev) => {
    ev.preventDefault();
    zone.classList.remove("over");
    if (ev.dataTransfer.files.length) chooseFile(ev.dataTransfer.files[0]);
  });
}

function chooseFile(file) {
  state.file = file;
  const url = URL.createObjectURL(file);
  const shown = state.media === "audio" ? el("audio", { controls: "", src: url })
                                        : el("img", { id: "preview-image", alt: file.name, src: url });
  $("preview").replaceChildren(shown, el("div", { class: "muted" }, file.name));
  predict();
}

async function predictFile() {
  if (!state.file) { showError("choose a file first"); return; }
  showError("");
  $("submit").disabled = true;
  $("status").textContent = "predicting…";
  const started = performance.now();
  try {
    const form = new FormData();
    form.append("file", state.file, state.file.name);
    const h = state.key ? { "X-API-Key": state.key } : {};  // the browser sets the multipart Content-Type
    const response = await fetch("v1/predict", { method: "POST", body: form, headers: h });
    const body = await response.json().catch(() => null);
    if (!response.ok) throw new Error(body && body.error ? body.error.message : `HTTP ${response.status}`);
    const prediction = body.predictions[0];
    if (prediction.probs) renderProbs(prediction);
    else $("result").replaceChildren();
    showRaw(prediction, started);
  } catch (e) {
    showError(e.message);
    $("status").textContent = "";
  } finally {
    $("submit").disabled = false;
  }
}

// The prediction's JSON under the rendering, and how long the request took.
function showRaw(prediction, started) {
  $("raw").textContent = JSON.stringify(prediction, null, 2);
  $("output").hidden = false;
  $("status").textContent = `${Math.round(performance.now() - started)} ms`;
}

function readInput() {
  if (!state.fields) return { item: $("input").value, text: $("input").value };
  const item = {};
  for (const name of state.fields) {
    const value = $(`field-${name}`).value;
    if (!state.json.includes(name)) { item[name] = value; continue; }
    try { item[name] = JSON.parse(value); } catch (e) { throw new Error(`${name}: not valid JSON`); }
  }
  // Offsets in a prediction point into the longest field (a QA answer into its context).
  const text = state.fields.filter((n) => typeof item[n] === "string").map((n) => item[n])
    .reduce((a, b) => (b.length > a.length ? b : a), "");
  return { item, text };
}

function renderLegend(found) {
  const legend = $("legend");
  legend.replaceChildren();
  for (const type of state.types) {
    legend.append(el("span", { class: "legend-item" + (found.has(type) ? "" : " absent"), "data-label": type,
                               style: `--ent-color: ${colour(type)}` }, type));
  }
}

function renderEntities(text, prediction) {
  // Offsets count Unicode code points (Python str indices); JS strings count UTF-16 units.
  const chars = Array.from(text);
  const out = $("result");
  out.replaceChildren();
  const entities = (prediction.entities || []).filter((e) => Number.isInteger(e.start))
    .sort((a, b) => a.start - b.start);
  let at = 0;
  for (const e of entities) {
    if (e.start < at) continue;
    out.append(chars.slice(at, e.start).join(""));
    const mark = el("mark", { class: `entity entity-${e.label}`, "data-label": e.label,
                              title: `${e.label} (score ${fmt(e.score)})`, style: `--ent-color: ${colour(e.label)}` },
                    chars.slice(e.start, e.end).join(""), el("span", { class: "entity-label" }, e.label));
    out.append(mark);
    at = e.end;
  }
  out.append(chars.slice(at).join(""));
  if (!entities.length) out.append(el("div", { class: "none" }, "no entities found"));
  renderLegend(new Set(entities.map((e) => e.label)));
}

function renderProbs(prediction) {
  $("legend").replaceChildren();
  const chosen = new Set(prediction.labels || []);
  const grid = el("div", { class: "probs" });
  for (const [label, p] of Object.entries(prediction.probs || {})) {
    const pct = Math.max(0, Math.min(100, p * 100));
    grid.append(el("div", { class: "prob-row" + (chosen.has(label) ? " chosen" : ""), "data-label": label },
                   el("span", { class: "prob-label" }, label),
                   el("div", { class: "prob-bar" }, el("div", { class: "prob-fill", style: `width: ${pct}%` })),
                   el("span", { class: "prob-value" }, pct.toFixed(1) + "%")));
  }
  $("result").replaceChildren(grid);
}

async function predict() {
  if (state.media) return predictFile();
  let item, text;
  try { ({ item, text } = readInput()); } catch (e) { showError(e.message); return; }
  if (!text.trim()) { showError("type some text first"); return; }
  showError("");
  $("submit").disabled = true;
  $("status").textContent = "predicting…";
  const started = performance.now();
  try {
    const body = await api("v1/predict", { method: "POST", body: JSON.stringify({ inputs: [item] }) });
    const prediction = body.predictions[0];
    if (Array.isArray(prediction.entities)) renderEntities(text, prediction);
    else if (prediction.probs) renderProbs(prediction);
    else { $("legend").replaceChildren(); $("result").replaceChildren(); }  // the JSON below says it all
    showRaw(prediction, started);
  } catch (e) {
    showError(e.message);
    $("status").textContent = "";
  } finally {
    $("submit").disabled = false;
  }
}

// -- chat ----------------------------------------------------------------------

function chatBubble(role, text) {
  const node = el("div", { class: `msg msg-${role}`, "data-role": role }, el("div", { class: "msg-text" }));
  node.firstChild.textContent = text;  // never markup: the user's text and the model's are both untrusted
  $("chat-log").append(node);
  node.scrollIntoView({ block: "end" });
  return node;
}

function chatBusy(busy) {
  $("chat-send").disabled = busy;
  $("chat-stop").hidden = !busy;
}

// The events of an OpenAI streamed completion ("data: {json}" blocks, then "data: [DONE]"): calls
// onDelta with each piece of the reply's text.
async function readEvents(response, onDelta) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      for (const line of block.split("\n")) {
        if (!line.startsWith("data: ") || line === "data: [DONE]") continue;
        const chunk = JSON.parse(line.slice(6));
        if (chunk.error) throw new Error(chunk.error.message);
        const delta = chunk.choices && chunk.choices[0] ? chunk.choices[0].delta : null;
        if (delta && delta.content) onDelta(delta.content);
      }
    }
  }
}

async function sendChat() {
  const text = $("chat-input").value;
  if (!text.trim() || chat.controller) return;
  showError("");
  $("chat-input").value = "";
  const conversation = chat.messages;  // "New conversation" while this streams starts another
  conversation.push({ role: "user", content: text });
  const asked = chatBubble("user", text);
  const reply = chatBubble("assistant", "");
  reply.classList.add("pending");
  chat.controller = new AbortController();
  chatBusy(true);
  $("chat-status").textContent = "generating…";
  const started = performance.now();
  let content = "", pieces = 0;
  try {
    const response = await fetch("v1/chat/completions", {
      method: "POST", headers: headers(), signal: chat.controller.signal,
      // a model that takes one text (text-to-text) gets the latest message alone, each turn on its own
      body: JSON.stringify({ model: state.info ? state.info.run : "", stream: true,
                             messages: state.info && state.info.conversation ? conversation : conversation.slice(-1) }),
    });
    if (!response.ok) {
      let body = null;
      try { body = await response.json(); } catch (e) { /* not JSON */ }
      if (response.status === 401) $("auth").hidden = false;
      throw new Error(body && body.error ? body.error.message : `HTTP ${response.status}`);
    }
    await readEvents(response, (piece) => {
      content += piece;
      pieces += 1;
      reply.firstChild.textContent = content;
      reply.dataset.pieces = String(pieces);
      reply.scrollIntoView({ block: "end" });
    });
    $("chat-status").textContent = `${Math.round(performance.now() - started)} ms`;
  } catch (e) {
    if (e.name !== "AbortError") showError(e.message);
    $("chat-status").textContent = e.name === "AbortError" ? "stopped" : "";
  } finally {
    reply.classList.remove("pending");
    if (content.trim()) {
      conversation.push({ role: "assistant", content });  // a stopped reply is kept as far as it got
    } else if (conversation === chat.messages) {  // nothing came back: take the question back, to send again
      conversation.pop();
      asked.remove();
      reply.remove();
      if (!$("chat-input").value) $("chat-input").value = text;
    }
    reply.dataset.done = "1";
    chat.controller = null;
    chatBusy(false);
  }
}

function newConversation() {
  if (chat.controller) chat.controller.abort();
  chat.messages = [];
  $("chat-log").replaceChildren();
  $("chat-status").textContent = "";
  showError("");
}

async function loadInfo() {
  try {
    const [info, tool] = await Promise.all([api("v1/model"), api("v1/tools")]);
    if (info.media) renderMedia(info);
    else renderForm(((tool.function.parameters.properties || {}).inputs || {}).items);
    renderInfo(info);
    $("chat").hidden = !info.streams;  // a model that generates text: a conversation, not one prediction
    $("try").hidden = !!info.streams;
    showError("");
  } catch (e) {
    showError(e.message);
  }
}

async function main() {
  $("api-key").value = state.key;
  $("api-key").addEventListener("change", (ev) => {
    state.key = ev.target.value.trim();
    sessionStorage.setItem("runassist-api-key", state.key);
    loadInfo();
  });
  $("submit").addEventListener("click", predict);
  $("chat-send").addEventListener("click", sendChat);
  $("chat-stop").addEventListener("click", () => chat.controller && chat.controller.abort());
  $("chat-new").addEventListener("click", newConversation);
  $("chat-input").addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && !ev.shiftKey) { ev.preventDefault(); sendChat(); }
  });
  $("fields").addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) predict();
  });
  try {
    const health = await api("health");
    $("auth").hidden = !health.auth_required;
  } catch (e) { /* the next call reports the problem */ }
  await loadInfo();
  document.body.dataset.ready = "1";
}

main();
