// Settings that apply live (POST /api/config): auth mode, scheduling, the monitor, model mapping, the api key.
import { api } from "./api.js";
import { $, el, replace, notify } from "./dom.js";

// Random bytes in a regenerated api key (192 bits, as hex after "sk-").
const KEY_BYTES = 24;

function mappingRow(from = "", to = "") {
  const row = el("div", { class: "mapping" });
  const source = el("input", { type: "text", class: "map-from", value: from, placeholder: "model clients ask for (e.g. gpt-4o)" });
  const target = el("input", { type: "text", class: "map-to", value: to, placeholder: "model to call (e.g. gemini-3-flash)" });
  source.setAttribute("aria-label", "Model clients ask for");
  target.setAttribute("aria-label", "Model agfast calls instead");
  row.append(source, el("span", { "aria-hidden": "true" }, "→"), target,
    el("button", { type: "button", class: "quiet", onclick: () => row.remove() }, "Remove"));
  return row;
}

function mappingFromForm() {
  const mapping = {};
  for (const row of document.querySelectorAll("#mapping-rows .mapping")) {
    const from = $(".map-from", row).value.trim();
    const to = $(".map-to", row).value.trim();
    if (from && to) mapping[from] = to;
  }
  return mapping;
}

// The settings as the form shows them, by their /api/config keys.
let loaded = {};

function formValues() {
  return {
    auth_mode: $("#set-auth").value,
    "scheduling.mode": $("#set-scheduling").value,
    "monitor.enabled": $("#set-monitor").checked,
    custom_mapping: mappingFromForm(),
  };
}

function fillForm(config) {
  $("#set-auth").value = config.auth_mode;
  $("#set-scheduling").value = config["scheduling.mode"] ?? config.scheduling?.mode ?? "Balance";
  $("#set-monitor").checked = Boolean(config["monitor.enabled"] ?? config.monitor?.enabled);
  replace($("#mapping-rows"), Object.entries(config.custom_mapping || {}).map(([from, to]) => mappingRow(from, to)));
  $("#api-key-masked").textContent = config.api_key || "(none)";
  loaded = formValues();
}

const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);

async function save(event) {
  event.preventDefault();
  // Only what the user changed is sent: a setting someone else changed meanwhile is left as it is.
  const values = formValues();
  const changes = Object.fromEntries(Object.entries(values).filter(([key, value]) => !same(value, loaded[key])));
  if (!Object.keys(changes).length) {
    notify("Nothing changed.");
    return;
  }
  try {
    const r = await api("POST", "/api/config", changes);
    fillForm(r.config);
    notify(`Saved: ${r.changed.join(", ")}.`);
  } catch (err) {
    notify(err.message, true);
  }
}

async function regenerate() {
  if (!window.confirm("Regenerate the API key? Every client using the old key stops working.")) return;
  const bytes = new Uint8Array(KEY_BYTES);
  crypto.getRandomValues(bytes);
  const key = "sk-" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  try {
    const shown = `New key (shown once, copy it now): ${key}`;
    // Without an admin password the key is also the sign-in secret: every browser is now signed out, so the
    // sign-in page shows the new key too.
    $("#login-note").textContent = shown;
    const r = await api("POST", "/api/config", { api_key: key });
    $("#new-key").textContent = shown;
    fillForm(r.config);
    notify("API key regenerated.");
  } catch (err) {
    notify(err.message, true);
  }
}

export function setup() {
  $("#settings-form").addEventListener("submit", save);
  $("#mapping-add").addEventListener("click", () => {
    const row = mappingRow();
    $("#mapping-rows").append(row);
    $(".map-from", row).focus();
  });
  $("#regenerate-key").addEventListener("click", regenerate);
}

export async function show() {
  try {
    fillForm(await api("GET", "/api/config"));
  } catch (err) {
    notify(err.message, true);
  }
}
