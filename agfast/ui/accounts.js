// Accounts: tier, per-model quota bars with reset times, lockouts with a countdown, and the account chores.
import { api, missing } from "./api.js";
import { $, el, replace, notify, duration, localTime } from "./dom.js";

let ticker = null;

function quotaRows(quota) {
  if (!quota.models.length) return el("p", { class: "muted" }, "No quota reported yet.");
  const grid = el("div", { class: "quota" });
  for (const m of quota.models) {
    const pct = Math.round(Number(m.percentage) || 0);
    const meter = el("meter", { min: 0, max: 100, low: 20, high: 50, optimum: 100, value: pct });
    meter.setAttribute("aria-label", `${m.name}: ${pct}% left`);
    grid.append(el("span", { class: "name", title: m.name }, m.name), meter, el("span", {}, `${pct}%`));
    if (m.reset_time) grid.append(el("span", { class: "reset" }, `resets ${localTime(m.reset_time)}`));
  }
  return grid;
}

function lockoutRow(account, lock) {
  const until = Date.now() + lock.seconds_left * 1000;
  const left = el("span", { class: "countdown", "data-until": String(until) }, duration(lock.seconds_left));
  const scope = lock.scope === "account" ? "whole account" : lock.scope;
  return el("div", { class: "lockout" }, `Locked (${scope}, ${lock.reason}) for `, left);
}

function accountCard(account, quota) {
  const ok = account.status === "ok" && !account.proxy_disabled;
  const status = account.proxy_disabled ? "disabled" : account.status;
  const card = el("article", { class: "card account", "data-email": account.email },
    el("div", { class: "row" },
      el("span", { class: "email" }, account.email),
      el("span", { class: "badge" }, account.tier || "tier unknown"),
      el("span", { class: `badge ${ok ? "ok" : "bad"}` }, status)));
  if (quota) card.append(quotaRows(quota));
  else card.append(el("p", { class: "muted" }, "Quota not available."));
  const locks = account.lockouts || [];
  for (const lock of locks) card.append(lockoutRow(account, lock));
  const actions = el("div", { class: "row" });
  if (locks.length) {
    actions.append(el("button", { type: "button", class: "clear-lockouts", onclick: () => clearLockouts(account) },
      "Clear lockouts"));
  }
  actions.append(
    el("button", { type: "button", class: "quiet", onclick: () => toggle(account) },
      account.proxy_disabled ? "Enable" : "Disable"),
    el("button", { type: "button", class: "danger", onclick: () => remove(account) }, "Remove"));
  card.append(actions);
  return card;
}

async function clearLockouts(account) {
  await act(async () => {
    const r = await api("DELETE", `/api/proxy/rate-limits/${encodeURIComponent(account.id)}`);
    return `Cleared ${r.cleared} lockout(s) of ${account.email}.`;
  });
}

async function toggle(account) {
  await act(async () => {
    const enable = Boolean(account.proxy_disabled);
    await api("POST", `/api/accounts/${encodeURIComponent(account.id)}/toggle-proxy`, { enable });
    return `${account.email} ${enable ? "enabled" : "disabled"}.`;
  });
}

async function remove(account) {
  if (!window.confirm(`Remove ${account.email}? Its account file is deleted.`)) return;
  await act(async () => {
    await api("DELETE", `/api/accounts/${encodeURIComponent(account.id)}`);
    return `${account.email} removed.`;
  });
}

// Run one change, say how it went, and show the accounts as they are now.
async function act(change) {
  try {
    notify(await change());
  } catch (err) {
    notify(err.message, true);
  }
  await show();
}

function tick() {
  const now = Date.now();
  for (const node of document.querySelectorAll("#account-list .countdown")) {
    const left = (Number(node.dataset.until) - now) / 1000;
    node.textContent = left > 0 ? duration(left) : "expired";
  }
}

async function signInWithGoogle() {
  try {
    const r = await api("POST", "/api/accounts/oauth/start", {});
    const url = typeof r === "string" ? r : r && (r.url || r.auth_url || r.authUrl);
    if (!url) throw new Error("agfast gave no sign-in address.");
    window.open(url, "_blank", "noopener");
    notify("Finish the sign-in in the new tab; the account appears here once Google sends you back.");
  } catch (err) {
    notify(missing(err) ? "Sign in with Google is not available on this agfast; use `agfast accounts login`."
      : err.message, true);
  }
}

export function setup() {
  $("#signin-google").addEventListener("click", signInWithGoogle);
  $("#refresh-quota").addEventListener("click", () => act(async () => {
    await api("POST", "/api/accounts/refresh");
    return "Quota refreshed.";
  }));
  $("#add-token").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = $("#refresh-token");
    act(async () => {
      const r = await api("POST", "/api/accounts", { refreshToken: input.value.trim() });
      input.value = "";
      return `${r.account.email} ${r.result}.`;
    });
  });
}

export async function show() {
  const list = $("#account-list");
  let accounts;
  try {
    accounts = (await api("GET", "/api/accounts")).accounts;
  } catch (err) {
    replace(list, el("p", { class: "error" }, err.message));
    return;
  }
  if (!accounts.length) {
    replace(list, el("p", { class: "muted" }, "No accounts yet: sign in with Google or add a refresh token."));
    return;
  }
  const quotas = await Promise.all(accounts.map((a) =>
    api("GET", `/api/accounts/${encodeURIComponent(a.id)}/quota`).catch(() => null)));
  replace(list, accounts.map((a, i) => accountCard(a, quotas[i])));
  if (ticker === null) ticker = window.setInterval(tick, 1000);
}

export function hide() {
  if (ticker !== null) window.clearInterval(ticker);
  ticker = null;
}
