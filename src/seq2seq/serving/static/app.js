// The seq2seq web page: sends the form to POST /v1/generate and shows the n-best outputs,
// highlighted as Python when the model writes code, with an interactive attention heatmap.
// Everything is built with DOM nodes and textContent (never innerHTML), so model output
// cannot inject markup.
"use strict";

const $ = (id) => document.getElementById(id);
let models = [];

// ------------------------------------------------------------------ Python highlighting
const KEYWORDS = new Set(("False None True and as assert async await break class continue def del elif else " +
  "except finally for from global if import in is lambda nonlocal not or pass raise return try while with yield").split(" "));
const BUILTINS = new Set(("abs all any bool dict enumerate filter float format int isinstance len list map max min " +
  "next open print range reversed round set sorted str sum super tuple type zip").split(" "));
// One alternative per token class, tried in order at each position: comment, string (with
// prefixes, triple quotes, unterminated strings up to the end of the line), number, name, other.
const PY_TOKEN = new RegExp([
  /(#[^\n]*)/.source,
  /((?:[rRbBuUfF]{1,2})?(?:'''[\s\S]*?(?:'''|$)|"""[\s\S]*?(?:"""|$)|'(?:\\.|[^'\\\n])*'?|"(?:\\.|[^"\\\n])*"?))/.source,
  /(0[xXoObB][\da-fA-F_]+|\d[\d_]*(?:\.[\d_]*)?(?:[eE][+-]?\d+)?[jJ]?|\.\d[\d_]*(?:[eE][+-]?\d+)?)/.source,
  /([A-Za-z_]\w*)/.source,
  /([^\sA-Za-z_\d'"#]+)/.source,
].join("|"), "g");

function span(className, text) {
  const node = document.createElement("span");
  if (className) node.className = className;
  node.textContent = text;
  return node;
}

function nameClass(name, rest) {
  if (KEYWORDS.has(name)) return "kw";
  if (/^\s*\(/.test(rest)) return BUILTINS.has(name) ? "bi" : "fn";
  return BUILTINS.has(name) ? "bi" : "";
}

/** Python source as a fragment of spans classed kw, bi, fn, str, num, com, op. */
function highlightPython(code) {
  const fragment = document.createDocumentFragment();
  let last = 0;
  for (const match of code.matchAll(PY_TOKEN)) {
    if (match.index > last) fragment.append(code.slice(last, match.index));
    const [text, comment, string, number, name] = match;
    const after = code.slice(match.index + text.length);
    const kind = comment ? "com" : string ? "str" : number ? "num" : name ? nameClass(name, after) : "op";
    fragment.append(kind ? span(kind, text) : text);
    last = match.index + text.length;
  }
  fragment.append(code.slice(last));
  return fragment;
}

function codeBlock(text, isCode) {
  if (!text) return span("muted", "(empty output)");
  const code = document.createElement("code");
  code.append(isCode ? highlightPython(text) : text);
  return code;
}

// ------------------------------------------------------------------ form and requests
function selectedModel() {
  return models.find((model) => model.name === $("model").value) || models[0];
}

function describeModel(model) {
  const arch = model.architecture;
  const kind = arch.preset || `${arch.encoder.cell}/${arch.decoder.cell}`;
  const loss = model.training.best_valid_loss;
  return [
    kind, `${model.parameters.toLocaleString("en")} parameters`,
    `vocabularies ${model.src_vocab_size} → ${model.tgt_vocab_size}`,
    loss == null ? null : `best valid loss ${loss.toFixed(3)}`,
    `output: ${model.target}`, model.device,
  ].filter(Boolean).join(" · ");
}

async function loadModels() {
  const response = await fetch("/v1/models");
  models = await response.json();
  for (const model of models) $("model").append(new Option(model.name, model.name));
  showModel();
}

function showModel() {
  const model = selectedModel();
  $("model-summary").textContent = describeModel(model);
  $("constrain-option").hidden = model.target !== "python";  // the constraint is about Python syntax
}

function showMode() {
  const mode = $("mode").value;
  for (const label of document.querySelectorAll("[data-mode]")) label.hidden = label.dataset.mode !== mode;
}

function requestBody() {
  const inputs = $("source").value.split("\n").map((line) => line.trim()).filter(Boolean);
  const body = { inputs, model: $("model").value };
  const mode = $("mode").value;
  if ($("constrain").checked && !$("constrain-option").hidden) body.constrain = "grammar";
  if (mode === "beam") {
    Object.assign(body, { beam: Number($("beam").value), nbest: Number($("nbest").value) });
  } else if (mode === "sample") {
    Object.assign(body, { sample: true, temperature: Number($("temperature").value) });
    if ($("seed").value !== "") body.seed = Number($("seed").value);
  }
  return body;
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

async function generate(event) {
  event.preventDefault();
  const button = $("generate");
  if (button.disabled) return;
  button.disabled = true;
  button.textContent = "Generating…";
  $("results").setAttribute("aria-busy", "true");
  showError("");
  try {
    const response = await fetch("/v1/generate", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(requestBody()),
    });
    const answer = await response.json();
    if (!response.ok) {
      showError(answer.error || `error ${response.status}`);
      return;
    }
    const isCode = models.find((model) => model.name === answer.model)?.target === "python";
    $("results").replaceChildren(...answer.results.map((result) => renderResult(result, isCode)));
  } catch (error) {
    showError(`Could not reach the server: ${error.message}`);
  } finally {
    button.disabled = false;
    button.textContent = "Generate";
    $("results").removeAttribute("aria-busy");
  }
}

// ------------------------------------------------------------------ results
function badge(parses) {
  if (parses === null) return null;
  return span(parses ? "badge ok" : "badge bad", parses ? "parses" : "syntax error");
}

function renderResult(result, isCode) {
  const article = document.createElement("article");
  article.className = "result";
  const heading = document.createElement("h2");
  heading.textContent = result.source;
  const best = document.createElement("div");
  best.className = "best";
  const list = document.createElement("ol");
  list.className = "nbest";
  list.setAttribute("aria-label", "n-best outputs, best first");
  const panel = document.createElement("div");
  panel.className = "attention";

  const select = (index) => {
    const generation = result.generations[index];
    const pre = document.createElement("pre");
    pre.append(codeBlock(generation.text, isCode));
    const meta = document.createElement("p");
    meta.className = "meta";
    meta.append(...[badge(generation.parses), span("score", `score ${generation.normalized_score.toFixed(3)}`),
      generation.finished ? null : span("badge warn", "stopped at max length")].filter(Boolean));
    best.replaceChildren(pre, meta);
    for (const [i, item] of [...list.children].entries()) item.firstChild.setAttribute("aria-pressed", String(i === index));
    renderAttention(panel, generation.attention);
  };

  for (const [index, generation] of result.generations.entries()) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "alternative";
    button.append(codeBlock(generation.text, isCode), span("score", generation.normalized_score.toFixed(3)));
    const parsed = badge(generation.parses);
    if (parsed) button.append(parsed);
    button.addEventListener("click", () => select(index));
    const item = document.createElement("li");
    item.append(button);
    list.append(item);
  }
  article.append(heading, best);
  if (result.generations.length > 1) article.append(list);
  article.append(panel);
  select(0);
  return article;
}

// ------------------------------------------------------------------ attention heatmap
function tokenButton(text, axis, index) {
  const button = document.createElement("button");
  button.type = "button";
  button.className = "tok";
  button.dataset[axis] = String(index);
  button.textContent = text;
  return button;
}

function shade(node, weight) {
  node.style.setProperty("--w", weight.toFixed(3));
  node.dataset.weight = weight.toFixed(3);
  node.classList.toggle("lit", weight >= 0.05);
  node.classList.toggle("strong", weight >= 0.5);
}

function heatmapTable(attention) {
  const table = document.createElement("table");
  table.className = "heatmap";
  const caption = document.createElement("caption");
  caption.className = "visually-hidden";
  caption.textContent = "Attention weights: rows are output tokens, columns source tokens";
  const head = table.createTHead().insertRow();
  head.append(document.createElement("th"));
  for (const [col, token] of attention.source_tokens.entries()) {
    const th = document.createElement("th");
    th.scope = "col";
    th.dataset.col = String(col);
    th.textContent = token;
    head.append(th);
  }
  const body = table.createTBody();
  for (const [row, weights] of attention.weights.entries()) {
    const tr = body.insertRow();
    const th = document.createElement("th");
    th.scope = "row";
    th.dataset.row = String(row);
    th.textContent = attention.output_tokens[row];
    tr.append(th);
    for (const [col, weight] of weights.entries()) {
      const td = tr.insertCell();
      td.dataset.row = String(row);
      td.dataset.col = String(col);
      td.title = `${attention.output_tokens[row]} → ${attention.source_tokens[col]}: ${weight.toFixed(3)}`;
      td.style.setProperty("--w", weight.toFixed(3));
    }
  }
  table.prepend(caption);
  return table;
}

/** Pointer or focus on an output token shades the source tokens by its weights, and the reverse. */
function linkHighlights(panel, attention) {
  const sources = [...panel.querySelectorAll(".source-tokens .tok")];
  const outputs = [...panel.querySelectorAll(".output-tokens .tok")];
  const clear = () => {
    for (const node of [...sources, ...outputs]) shade(node, 0);
    for (const node of panel.querySelectorAll(".active")) node.classList.remove("active", "active-row", "active-col");
  };
  const mark = (selector, axisClass) => {
    for (const node of panel.querySelectorAll(selector)) node.classList.add("active", axisClass);
  };
  const light = (target) => {
    const cell = target.closest("[data-row], [data-col]");
    if (!cell || !panel.contains(cell)) return;
    clear();
    const { row, col } = cell.dataset;
    if (row !== undefined) {
      sources.forEach((node, j) => shade(node, attention.weights[row][j]));
      mark(`[data-row="${row}"]`, "active-row");
    } else {
      outputs.forEach((node, i) => shade(node, attention.weights[i][col]));
      mark(`[data-col="${col}"]`, "active-col");
    }
  };
  panel.addEventListener("mouseover", (event) => light(event.target));
  panel.addEventListener("focusin", (event) => light(event.target));
  panel.addEventListener("mouseleave", clear);
  panel.addEventListener("focusout", (event) => { if (!panel.contains(event.relatedTarget)) clear(); });
}

function tokenRow(className, label, tokens, axis) {
  const row = document.createElement("div");
  row.className = `tokens ${className}`;
  row.setAttribute("role", "group");
  row.setAttribute("aria-label", label);
  row.append(span("axis", label), ...tokens.map((token, index) => tokenButton(token, axis, index)));
  return row;
}

/** The heatmap of `attention`; with `attention.heads` (a multi-head or Transformer model), buttons
 * switch between the heads' mean (the weights the toolkit scores) and each head's own weights. */
function renderAttention(panel, attention, shown = -1) {
  if (!attention) {
    panel.replaceChildren(span("muted", "This model has no attention to show."));
    return;
  }
  const heads = attention.heads || [];
  const view = { ...attention, weights: shown < 0 ? attention.weights : heads[shown] };
  const content = document.createElement("div");  // new each time: its listeners read this view only
  const heading = document.createElement("h3");
  heading.textContent = shown < 0 ? "Attention" : `Attention: head ${shown + 1} of ${heads.length}`;
  const hint = span("muted hint", "Hover or focus a token: an output token shades the source tokens it attends to, a source token the output tokens that attend to it.");
  const scroller = document.createElement("div");
  scroller.className = "heatmap-scroll";
  scroller.tabIndex = 0;  // a scrollable region must be reachable by keyboard
  scroller.setAttribute("aria-label", "attention heatmap");
  scroller.append(heatmapTable(view));
  content.append(heading, hint);
  if (heads.length) {
    content.append(headPicker(heads.length, shown, (choice) => {
      renderAttention(panel, attention, choice);
      panel.querySelector('.head[aria-pressed="true"]').focus();  // the re-render would drop the focus
    }));
  }
  content.append(
    tokenRow("source-tokens", "source", view.source_tokens, "col"),
    tokenRow("output-tokens", "output", view.output_tokens, "row"), scroller);
  panel.replaceChildren(content);
  linkHighlights(content, view);
}

function headPicker(count, shown, choose) {
  const group = document.createElement("div");
  group.className = "heads";
  group.setAttribute("role", "group");
  group.setAttribute("aria-label", "attention heads");
  const choices = [[-1, "mean of the heads"], ...Array.from({ length: count }, (_, i) => [i, `head ${i + 1}`])];
  for (const [choice, label] of choices) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "head";
    button.textContent = label;
    button.setAttribute("aria-pressed", String(choice === shown));
    button.addEventListener("click", () => choose(choice));
    group.append(button);
  }
  return group;
}

// ------------------------------------------------------------------ start
function submitOnEnter(event) {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    $("generate-form").requestSubmit();
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("generate-form").addEventListener("submit", generate);
  $("source").addEventListener("keydown", submitOnEnter);
  $("mode").addEventListener("change", showMode);
  $("model").addEventListener("change", showModel);
  showMode();
  loadModels().catch((error) => showError(`Could not load the models: ${error.message}`));
});
