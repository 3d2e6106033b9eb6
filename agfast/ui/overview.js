// Overview: the proxy switch, request and token counters, and how to point each client at agfast.
import { api, missing } from "./api.js";
import { $, el, replace, notify, formatNumber } from "./dom.js";

const KEY = "YOUR_AGFAST_KEY";

// (title, text) per client; `base` is agfast's base URL without a trailing slash.
function snippets(base) {
  return [
    ["OpenAI SDK (Python)", `from openai import OpenAI\n\nclient = OpenAI(base_url="${base}/v1", api_key="${KEY}")`],
    ["Anthropic SDK (Python)", `from anthropic import Anthropic\n\nclient = Anthropic(base_url="${base}", api_key="${KEY}")`],
    ["Gemini SDK (google-genai)",
      `from google import genai\n\nclient = genai.Client(api_key="${KEY}", http_options={"base_url": "${base}"})`],
    ["Claude Code", `ANTHROPIC_BASE_URL=${base} ANTHROPIC_API_KEY=${KEY} claude`],
    ["Codex (~/.codex/config.toml)",
      `model_provider = "agfast"\n\n[model_providers.agfast]\nname = "agfast"\nbase_url = "${base}/v1"\n` +
      `env_key = "AGFAST_KEY"\nwire_api = "responses"`],
    ["Gemini CLI", `# ~/.gemini/settings.json: {"security":{"auth":{"selectedType":"gemini-api-key"}}}\n` +
      `GEMINI_API_KEY=${KEY} GOOGLE_GEMINI_BASE_URL=${base} gemini`],
  ];
}

function snippetCard(title, text) {
  const status = el("span", { class: "muted", "aria-live": "polite" });
  const copy = el("button", {
    type: "button", class: "quiet",
    onclick: async () => {
      try {
        await navigator.clipboard.writeText(text);
        status.textContent = "copied";
      } catch (err) {
        status.textContent = "select the text and copy it";
      }
    },
  }, "Copy");
  copy.setAttribute("aria-label", `Copy the ${title} snippet`);
  return el("div", { class: "card snippet" },
    el("div", { class: "row" }, el("h4", {}, title), status, copy),
    el("pre", { tabindex: "0" }, text));
}

function counter(label, value) {
  return el("div", { class: "counter" }, el("span", { class: "value" }, value), el("span", { class: "label" }, label));
}

async function loadCounters() {
  const box = $("#counters");
  try {
    const s = await api("GET", "/api/stats/summary");
    replace(box,
      counter("requests", formatNumber(s.requests)),
      counter("errors", formatNumber(s.errors)),
      counter("input tokens", formatNumber(s.input_tokens)),
      counter("output tokens", formatNumber(s.output_tokens)),
      counter("total tokens", formatNumber(s.total_tokens ?? (s.input_tokens || 0) + (s.output_tokens || 0))));
  } catch (err) {
    replace(box, el("p", { class: "muted" },
      missing(err) ? "Request and token counters are not available on this agfast." : err.message));
  }
}

function showStatus(status) {
  const state = $("#proxy-state");
  state.textContent = status.running ? "running" : "stopped";
  state.className = status.running ? "running" : "stopped";
  $("#proxy-accounts").textContent = `${status.active_accounts} account(s) in the pool · port ${status.port}`;
  $("#proxy-start").disabled = status.running;
  $("#proxy-stop").disabled = !status.running;
  // The address this page came from reaches agfast from this machine (base_url may name a wildcard bind).
  const base = location.origin;
  replace($("#snippets"), snippets(base).map(([title, text]) => snippetCard(title, text)));
}

async function switchProxy(action) {
  try {
    showStatus(await api("POST", `/api/proxy/${action}`));
    notify(action === "start" ? "Proxy started." : "Proxy stopped: clients get 503 until you start it.");
  } catch (err) {
    notify(err.message, true);
  }
}

export function setup() {
  $("#proxy-start").addEventListener("click", () => switchProxy("start"));
  $("#proxy-stop").addEventListener("click", () => switchProxy("stop"));
}

export async function show() {
  try {
    showStatus(await api("GET", "/api/proxy/status"));
  } catch (err) {
    notify(err.message, true);
  }
  await loadCounters();
}
