// qzhou-plugins inspect: the page's script. Hand-written, no library, no build step, no network but
// this page's own /api. The state of a view lives in the address (?view=search&collection=...&q=...),
// so a search is a link: shared, reopened, bookmarked, and the browser's back button works.
"use strict";

const FIELDS = ["collection", "q", "mode", "k", "fusion", "rrf_k", "alpha", "candidates", "where",
  "where_document", "rerank", "rerank_model"];
const INPUT_ID = { where: "where-filter" };
const $ = (id) => document.getElementById(id);
const evaluation = { files: [], loaded: false, answer: null };

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (key === "text") node.textContent = value; else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

// -- the API ---------------------------------------------------------------------------------------

function apiKey() {
  const match = location.hash.match(/key=([^&]+)/);
  if (match) {
    sessionStorage.setItem("qzhou-inspect-key", decodeURIComponent(match[1]));
    history.replaceState(null, "", location.pathname + location.search);
  }
  return sessionStorage.getItem("qzhou-inspect-key");
}

async function api(path, body) {
  const headers = { "Content-Type": "application/json" };
  const key = apiKey();
  if (key) headers.Authorization = "Bearer " + key;
  const init = body === undefined ? { headers } : { method: "POST", headers, body: JSON.stringify(body) };
  const response = await fetch(path, init);
  const answer = await response.json().catch(() => ({ error: { message: response.statusText } }));
  if (response.status === 401) $("key-form").hidden = false;
  if (!response.ok) throw new Error(answer.error ? answer.error.message : response.statusText);
  return answer;
}

function showError(error) {
  const box = $("error");
  box.hidden = !error;
  box.textContent = error ? "Error: " + (error.message || error) : "";
}

// -- the address -----------------------------------------------------------------------------------

function params() { return new URLSearchParams(location.search); }

function go(query, replace = false) {
  const address = "?" + query.toString();
  if (replace) history.replaceState(null, "", address); else history.pushState(null, "", address);
  render();
}

function searchQuery(view) {
  const query = new URLSearchParams({ view });
  for (const name of FIELDS) {
    const value = $(INPUT_ID[name] || name).value.trim();
    if (value) query.set(name, value);
  }
  return query;
}

function fillForm(query) {
  for (const name of FIELDS) {
    const input = $(INPUT_ID[name] || name);
    if (query.has(name)) input.value = query.get(name);
  }
}

function requestOf(query) {
  const body = {};
  for (const name of FIELDS) if (query.has(name)) body[name] = query.get(name);
  return body;
}

// -- the views -------------------------------------------------------------------------------------

async function render() {
  const query = params();
  const view = query.get("view") || (query.has("q") ? "search" : "collections");
  const shown = view === "compare" ? "search" : view;
  for (const section of document.querySelectorAll("main > section")) section.hidden = section.id !== "view-" + shown;
  for (const link of document.querySelectorAll("nav a")) {
    if (link.dataset.view === shown) link.setAttribute("aria-current", "page"); else link.removeAttribute("aria-current");
  }
  showError(null);
  try {
    fillForm(query);
    await loadCollections();
    fillForm(query);  // again: the collection's option exists now
    if (view === "search" || view === "compare") await renderSearch(query, view);
    if (view === "document") await renderDocument(query);
    if (view === "evaluation") await renderEvaluation();
  } catch (error) {
    showError(error);
  }
}

let collections = null;

async function loadCollections() {
  if (collections) return;
  const answer = await api("/api/collections");
  collections = answer.collections;
  $("where").textContent = answer.where;
  const select = $("collection");
  const body = $("collections").tBodies[0];
  for (const one of collections) {
    select.append(el("option", { text: one.name }));
    body.append(collectionRow(one));
  }
  const usable = collections.find((one) => !one.error);
  if (usable) select.value = usable.name;
}

function collectionRow(one) {
  if (one.error) return el("tr", {}, el("td", { text: one.name }), el("td", { colspan: 7, class: "bad", text: one.error }));
  const searchLink = el("a", { href: "?" + new URLSearchParams({ view: "search", collection: one.name }), text: "search" });
  const lexical = `${one.analyzer} analyzer, ${one.lexical_engine}: ${one.lexical_index.state}`;
  return el("tr", {},
    el("th", { scope: "row", text: one.name }), el("td", { text: String(one.count) }),
    el("td", { text: one.model + (one.max_length ? ` (max_length ${one.max_length})` : "") }),
    el("td", {}, el("code", { text: JSON.stringify(one.query_prefix) })),
    el("td", {}, el("code", { text: JSON.stringify(one.document_prefix) })),
    el("td", { text: `${one.dimension} dimensions, ${one.vector_family}, ${one.pooling} pooling` }),
    el("td", { class: one.lexical_index.in_step ? "" : "warn", text: lexical }), el("td", {}, searchLink));
}

async function renderSearch(query, view) {
  $("results").hidden = true;
  $("compare").hidden = true;
  if (!query.get("q")) return;
  const body = requestOf(query);
  if (!body.collection) body.collection = $("collection").value;
  if (view === "compare") renderCompare(await api("/api/compare", body), body.collection);
  else renderResults(await api("/api/search", body), body.collection);
}

function renderResults(answer, collection) {
  $("results").hidden = false;
  $("instructed").textContent = answer.instructed_query === null ? "Lexical mode: no model reads the query." : "";
  if (answer.instructed_query !== null) {
    $("instructed").append("The model saw: ", el("code", { text: answer.instructed_query }),
      answer.query_prefix ? "" : " (no instruction: this collection's model takes none)");
  }
  $("terms").textContent = answer.lexical_terms.length ? "Lexical terms: " + answer.lexical_terms.join(" ") : "";
  $("scores-line").textContent = answer.scores_line || "No results.";
  const body = $("hits").tBodies[0];
  body.replaceChildren(...answer.hits.map((hit) => hitRow(hit, collection)));
}

const number = (value, digits = 4) => (value === null || value === undefined ? "—" : value.toFixed(digits));
const placed = (rank, score, digits) => (rank === null ? "—" : `#${rank} · ${number(score, digits)}`);

function hitRow(hit, collection) {
  const link = el("a", { href: "?" + new URLSearchParams({ view: "document", collection, id: hit.id }),
    text: hit.source, title: "open the whole chunk and its neighbours" });
  return el("tr", { "data-id": hit.id },
    el("td", { text: String(hit.rank) }), el("td", { text: number(hit.score) }),
    el("td", { class: "dense", text: placed(hit.dense_rank, hit.dense_score, 4) }),
    el("td", { class: "lexical", text: placed(hit.lexical_rank, hit.lexical_score, 2) }),
    el("td", { text: number(hit.fused_score) }), el("td", { class: "rerank", text: number(hit.rerank_score) }),
    el("td", { text: hit.sources.join(" + ") }), el("td", {}, link, el("br"), el("small", { class: "metadata", text: metadataLine(hit.metadata) })),
    el("td", { class: "text" }, highlighted(hit.document, hit.spans, 360)));
}

function metadataLine(metadata) {
  return Object.entries(metadata).filter(([key]) => key !== "source").map(([key, value]) => `${key}: ${value}`).join(", ");
}

function highlighted(text, spans, most) {
  const out = el("span");
  let at = 0;
  for (const [start, end] of spans) {
    if (start >= most) break;
    out.append(text.slice(at, start), el("mark", { text: text.slice(start, end) }));
    at = end;
  }
  out.append(text.slice(at, Math.max(at, most)) + (text.length > most ? "…" : ""));
  return out;
}

function renderCompare(answer, collection) {
  $("compare").hidden = false;
  const reranked = answer.lists.reranked;
  $("compare-note").textContent = "The same query in each mode (no rerank)"
    + (reranked ? `, then the ${reranked.mode} list reranked. ${reranked.scores_line}` : ".")
    + " A line joins a chunk's places.";
  const order = ["dense", "hybrid", "lexical", ...(reranked ? ["reranked"] : [])];
  const columns = order.map((mode) => {
    const list = el("ol", { class: "compare-list", "data-mode": mode });
    for (const hit of answer.lists[mode].hits) {
      const link = el("a", { href: "?" + new URLSearchParams({ view: "document", collection, id: hit.id }), text: hit.source });
      list.append(el("li", { "data-id": hit.id }, link, el("br"), el("small", { text: `${hit.score_scale} ${number(hit.score)}` })));
    }
    const title = mode === "reranked" ? `${reranked.mode}, reranked` : mode;
    return el("div", { class: "compare-column" }, el("h3", { text: title }), list);
  });
  const lines = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  lines.id = "compare-lines";
  $("compare-lists").replaceChildren(...columns, lines);
  requestAnimationFrame(() => drawLines(columns, lines));
}

function drawLines(columns, svg) {
  const box = $("compare-lists").getBoundingClientRect();
  svg.setAttribute("width", box.width);
  svg.setAttribute("height", box.height);
  for (let left = 0; left + 1 < columns.length; left++) {
    for (const item of columns[left].querySelectorAll("li")) {
      const other = columns[left + 1].querySelector(`li[data-id="${CSS.escape(item.dataset.id)}"]`);
      if (!other) continue;
      const a = item.getBoundingClientRect(), b = other.getBoundingClientRect();
      const line = document.createElementNS("http://www.w3.org/2000/svg", "line");
      line.setAttribute("x1", a.right - box.left); line.setAttribute("y1", a.top + a.height / 2 - box.top);
      line.setAttribute("x2", b.left - box.left); line.setAttribute("y2", b.top + b.height / 2 - box.top);
      svg.append(line);
    }
  }
}

async function renderDocument(query) {
  const answer = await api("/api/document?" + new URLSearchParams({ collection: query.get("collection"), id: query.get("id") }));
  $("document-title").textContent = `Chunk ${answer.id} of ${answer.collection}`;
  $("document-text").textContent = answer.document;
  const rows = Object.entries(answer.metadata).map(([key, value]) =>
    el("tr", {}, el("th", { scope: "row", text: key }), el("td", { text: String(value) })));
  $("document-metadata").tBodies[0].replaceChildren(el("tr", {}, el("th", { scope: "row", text: "id" }), el("td", { text: answer.id })), ...rows);
  $("neighbours").replaceChildren(...answer.neighbours.map((one) => {
    const label = `chunk ${one.metadata.chunk ?? "?"}` + (one.current ? " (this one)" : "");
    const head = one.current ? el("strong", { text: label })
      : el("a", { href: "?" + new URLSearchParams({ view: "document", collection: answer.collection, id: one.id }), text: label });
    return el("li", { class: one.current ? "current" : "" }, head, el("p", { text: one.document }));
  }));
}

// -- evaluation ------------------------------------------------------------------------------------

async function renderEvaluation() {
  if (!evaluation.loaded) {
    evaluation.files = (await api("/api/evaluations")).files;
    evaluation.loaded = true;
  }
  if (!evaluation.files.length) {
    $("eval-note").textContent = "Open one or more `qzhou-plugins eval retrieval ... --json` files (or start inspect with --eval PATH).";
    return;
  }
  const pair = { files: evaluation.files };
  if ($("eval-first").value !== "") pair.first = Number($("eval-first").value);
  if ($("eval-second").value !== "") pair.second = Number($("eval-second").value);
  const answer = await api("/api/plots", pair);
  evaluation.answer = answer;
  $("eval-note").textContent = answer.note || `${answer.runs.length} run(s) from ${evaluation.files.length} file(s).`;
  $("eval-bars").innerHTML = answer.bars;  // SVG drawn by the server from numbers, its text escaped there
  $("eval-scatter").innerHTML = answer.scatter || "";
  for (const [id, chosen] of [["eval-first", (answer.pair || [0])[0]], ["eval-second", (answer.pair || [0, 1])[1]]]) {
    $(id).replaceChildren(...answer.runs.map((run, index) => el("option", { value: String(index), text: run.label })));
    if (chosen !== undefined) $(id).value = String(chosen);
  }
  $("worst").replaceChildren(...answer.worst.map(worstQuery));
}

function worstQuery(one) {
  const results = el("ul");
  for (const first of one.first) {
    results.append(el("li", { class: first.relevance > 0 ? "relevant" : "" },
      el("code", { text: first.id }), first.relevance > 0 ? " (relevant) " : " ", first.excerpt));
  }
  return el("li", {}, el("strong", { text: one.query }),
    ` — nDCG@10 ${number(one.ndcg_at_10, 3)}, recall@100 ${number(one.recall_at_100, 3)}`, results);
}

async function openFiles(input) {
  try {
    for (const file of input.files) {
      let result;
      try { result = JSON.parse(await file.text()); } catch (error) { throw new Error(`${file.name}: not JSON (${error.message})`); }
      evaluation.files.push({ name: file.name, result });
    }
    showError(null);
    await renderEvaluation();
  } catch (error) {
    showError(error);
  }
}

function save(id, format) {
  const svg = $(id).innerHTML;
  if (!svg) return;
  const blob = new Blob([svg], { type: "image/svg+xml" });
  if (format === "svg") return download(blob, id + ".svg");
  const image = new Image();
  image.onload = () => {
    const canvas = el("canvas", { width: image.width * 2, height: image.height * 2 });
    const context = canvas.getContext("2d");
    context.scale(2, 2);
    context.drawImage(image, 0, 0);
    canvas.toBlob((png) => download(png, id + ".png"));
  };
  image.src = URL.createObjectURL(blob);
}

function download(blob, name) {
  const link = el("a", { href: URL.createObjectURL(blob), download: name });
  document.body.append(link);
  link.click();
  link.remove();
}

// -- wiring ----------------------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  apiKey();
  $("search-form").addEventListener("submit", (event) => { event.preventDefault(); go(searchQuery("search")); });
  $("compare-button").addEventListener("click", () => go(searchQuery("compare")));
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem("qzhou-inspect-key", $("api-key").value);
    $("key-form").hidden = true;
    collections = null;
    render();
  });
  for (const link of document.querySelectorAll("nav a")) {
    link.addEventListener("click", (event) => { event.preventDefault(); go(new URLSearchParams({ view: link.dataset.view })); });
  }
  document.body.addEventListener("click", (event) => {
    const link = event.target.closest("main a[href^='?']");
    if (link && !event.ctrlKey && !event.metaKey && !event.shiftKey) { event.preventDefault(); go(new URLSearchParams(link.getAttribute("href").slice(1))); }
  });
  $("eval-files").addEventListener("change", (event) => openFiles(event.target));
  for (const id of ["eval-first", "eval-second"]) $(id).addEventListener("change", () => renderEvaluation().catch(showError));
  for (const button of document.querySelectorAll("[data-save]")) button.addEventListener("click", () => save(button.dataset.save, button.dataset.format));
  window.addEventListener("popstate", render);
  render();
});
