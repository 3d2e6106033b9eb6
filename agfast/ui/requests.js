// Live requests: the monitor's newest rows, polled while the page is open, and one request's detail.
import { api, missing, query } from "./api.js";
import { $, el, replace, notify, localTime, formatNumber } from "./dom.js";

// How often the table asks for new rows: live enough to watch, cheap for agfast (one indexed query).
const POLL_MS = 2000;
const PAGE_ROWS = 100;
let timer = null;
let filterDelay = null;

function failed(row) { return row.status >= 400 || Boolean(row.error); }

function logRow(row) {
  const model = row.mapped_model && row.mapped_model !== row.model ? `${row.model} → ${row.mapped_model}` : row.model;
  const tr = el("tr", {
    tabindex: "0", class: failed(row) ? "failed" : null, "data-id": String(row.id),
    onclick: () => openDetail(row.id),
    onkeydown: (event) => { if (event.key === "Enter" || event.key === " ") { event.preventDefault(); openDetail(row.id); } },
  },
  el("td", {}, localTime(row.timestamp)),
  el("td", { class: "status" }, String(row.status)),
  el("td", { class: "model" }, model || "—"),
  el("td", {}, row.account_email || "—"),
  el("td", { class: "in" }, formatNumber(row.input_tokens)),
  el("td", { class: "out" }, formatNumber(row.output_tokens)),
  el("td", {}, String(row.duration)),
  el("td", { class: "url", title: row.url }, `${row.method} ${row.url}`));
  return tr;
}

// The rows of a /api/logs answer, whether it is the list itself or an object holding it.
function rowsOf(data) {
  if (Array.isArray(data)) return data;
  if (data && typeof data === "object") return data.logs || data.items || data.rows || [];
  return [];
}

async function refresh() {
  const params = { filter: $("#log-filter").value.trim(), errorsOnly: $("#log-errors").checked ? "true" : "", limit: PAGE_ROWS };
  const body = $("#log-table tbody");
  try {
    const rows = rowsOf(await api("GET", `/api/logs${query(params)}`));
    replace(body, rows.map(logRow));
    $("#log-count").textContent = `${rows.length} shown`;
    api("GET", `/api/logs/count${query({ filter: params.filter, errorsOnly: params.errorsOnly })}`)
      .then((n) => {
        const total = typeof n === "number" ? n : n && n.count;
        if (typeof total === "number") $("#log-count").textContent = `${rows.length} shown of ${total}`;
      })
      .catch(() => {});
    return true;
  } catch (err) {
    const text = missing(err) ? "Live requests are not available on this agfast (no /api/logs)." : err.message;
    replace(body, el("tr", {}, el("td", { colspan: "8", class: "muted" }, text)));
    if (missing(err)) stopPolling();
    return !missing(err);
  }
}

function field(name, value) {
  return [el("dt", {}, name), el("dd", {}, value === undefined || value === null || value === "" ? "—" : String(value))];
}

function pretty(text) {
  if (text === null || text === undefined || text === "") return "(not kept)";
  if (typeof text !== "string") return JSON.stringify(text, null, 2);
  try { return JSON.stringify(JSON.parse(text), null, 2); } catch (err) { return text; }
}

async function openDetail(id) {
  let row;
  try {
    row = await api("GET", `/api/logs/${encodeURIComponent(id)}`);
  } catch (err) {
    notify(err.message, true);
    return;
  }
  $("#detail-title").textContent = `${row.method} ${row.url} → ${row.status}`;
  replace($("#detail-fields"),
    field("time", localTime(row.timestamp)), field("request id", row.request_id),
    field("model", row.model), field("sent to Google as", row.mapped_model), field("account", row.account_email),
    field("client", row.client_ip), field("protocol", row.protocol), field("stream", row.stream),
    field("attempts", row.attempts), field("retries", (row.retries || []).join(", ")),
    field("tokens in / out / cached", `${row.input_tokens} / ${row.output_tokens} / ${row.cached_tokens}`),
    field("duration ms (first byte, upstream)", `${row.duration} (${row.first_byte}, ${row.upstream})`),
    field("error", row.error), field("bodies truncated", row.truncated));
  $("#detail-request").textContent = pretty(row.request_body);
  $("#detail-response").textContent = pretty(row.response_body);
  const box = $("#log-detail");
  box.hidden = false;
  $("#detail-close").focus();
}

function stopPolling() {
  if (timer !== null) window.clearInterval(timer);
  timer = null;
}

export function setup() {
  $("#log-filter").addEventListener("input", () => {
    window.clearTimeout(filterDelay);
    filterDelay = window.setTimeout(refresh, 250);
  });
  $("#log-errors").addEventListener("change", refresh);
  $("#detail-close").addEventListener("click", () => { $("#log-detail").hidden = true; });
}

export async function show() {
  if (await refresh() && timer === null) timer = window.setInterval(refresh, POLL_MS);
}

export function hide() { stopPolling(); }
