// The dashboard's entry: sign-in, the page switch (#hash), and each page's setup/show/hide.
import { api, setCsrf, whenSignedOut } from "./api.js";
import { $, notify } from "./dom.js";
import * as overview from "./overview.js";
import * as accounts from "./accounts.js";
import * as requests from "./requests.js";
import * as tokens from "./tokens.js";
import * as settings from "./settings.js";

const PAGES = { overview, accounts, requests, tokens, settings };
let current = null;

function pageName() {
  const name = location.hash.slice(1);
  return Object.hasOwn(PAGES, name) ? name : "overview";
}

async function showPage() {
  const name = pageName();
  if (current && current !== name && PAGES[current].hide) PAGES[current].hide();
  current = name;
  for (const key of Object.keys(PAGES)) $(`#page-${key}`).hidden = key !== name;
  for (const link of document.querySelectorAll("nav a")) {
    if (link.dataset.page === name) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  notify("");
  await PAGES[name].show();
  // Another page may have been chosen while this one loaded: the newest choice wins.
  if (current === name) document.body.dataset.page = name;
}

function signedOut() {
  if (current && PAGES[current].hide) PAGES[current].hide();
  current = null;
  $("#shell").hidden = true;
  $("#login").hidden = false;
  $("#password").focus();
}

async function signedIn(csrf) {
  setCsrf(csrf);
  $("#login").hidden = true;
  $("#shell").hidden = false;
  await showPage();
}

async function signIn(event) {
  event.preventDefault();
  const error = $("#login-error");
  error.textContent = "";
  try {
    const r = await api("POST", "/api/session", { password: $("#password").value });
    $("#password").value = "";
    $("#login-note").textContent = "";
    await signedIn(r.csrf_token);
  } catch (err) {
    error.textContent = err.message;
  }
}

async function signOut() {
  try {
    await api("DELETE", "/api/session");
  } catch (err) {
    // Signed out already (expired): the sign-in page is where we go either way.
  }
  setCsrf(null);
  signedOut();
}

async function start() {
  whenSignedOut(signedOut);
  for (const page of Object.values(PAGES)) page.setup();
  $("#login-form").addEventListener("submit", signIn);
  $("#logout").addEventListener("click", signOut);
  window.addEventListener("hashchange", () => { if (!$("#shell").hidden) showPage(); });
  try {
    // A reload: the cookie may still hold a session; ask for its CSRF token.
    const r = await api("GET", "/api/session");
    if (r.signed_in) {
      await signedIn(r.csrf_token);
      return;
    }
  } catch (err) {
    // Not signed in.
  }
  signedOut();
}

start();
