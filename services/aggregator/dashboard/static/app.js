// The page's shell: sign-in, the hash router (#/ deployments, #/d/NAME?range=1h monitoring view,
// #/r/ID one request, #/rejudges/NAME and #/rejudge/ID re-judges, #/agreement/NAME judges against
// people), the top bar. Views are in deployments.js, monitor.js, request.js, rejudge.js and agreement.js.

import { agreementView } from "./agreement.js";
import { ApiError, signIn, signOut } from "./api.js";
import { deploymentsView } from "./deployments.js";
import { h } from "./format.js";
import { MonitorView } from "./monitor.js";
import { rejudgeListView, rejudgeView } from "./rejudge.js";
import { findBox, requestView } from "./request.js";

const main = document.getElementById("main");
const crumbs = document.getElementById("crumbs");
const topRight = document.getElementById("topbar-right");
let current = null;

const shell = {
  setCrumbs(...items) {
    crumbs.replaceChildren(...items.flatMap((item, i) => (i ? [h("span", { class: "crumb-sep" }, "/"), item] : [item])));
  },
  setSignedIn(signedIn) {
    topRight.replaceChildren(...(signedIn ? [findBox(), h("button", { class: "link", type: "button", onclick: leave }, "Sign out")] : []));
  },
  fail: (error) => showError(error),
};

function parseHash() {
  const [path, search] = location.hash.replace(/^#/, "").split("?");
  return { parts: path.split("/").filter(Boolean).map(decodeURIComponent), params: new URLSearchParams(search || "") };
}

async function route() {
  if (current && current.close) current.close();
  current = null;
  const { parts, params } = parseHash();
  try {
    if (parts[0] === "d" && parts[1]) {
      current = new MonitorView(main, parts[1], params, shell);
      await current.open();
    } else if (parts[0] === "r" && parts[1]) {
      current = await requestView(main, parts[1], shell);
    } else if (parts[0] === "rejudges" && parts[1]) {
      current = await rejudgeListView(main, parts[1], shell);
    } else if (parts[0] === "rejudge" && parts[1]) {
      current = await rejudgeView(main, parts[1], shell);
    } else if (parts[0] === "agreement" && parts[1]) {
      current = await agreementView(main, parts[1], params, shell);
    } else {
      current = await deploymentsView(main, shell);
    }
    shell.setSignedIn(true);
  } catch (error) {
    showError(error);
  }
}

function showError(error) {
  if (current && current.close) current.close();
  if (error instanceof ApiError && error.status === 401) return showSignIn();
  shell.setSignedIn(!(error instanceof ApiError && error.type === "not_configured"));
  const hint = error instanceof ApiError && error.type === "not_configured"
    ? "Start the aggregator with PROMPTPULSE_API_READ_KEY set (make up does it and writes the key to .local/keys/api-read.key)."
    : error instanceof ApiError && error.status === 404
      ? "Check the deployment's name, or go back to the list."
      : "The aggregator or its database may be starting or restarting.";
  main.replaceChildren(h("section", { class: "panel notice-panel" },
    h("h2", {}, "Cannot show this page"),
    h("p", {}, error.message || String(error)),
    h("p", { class: "muted" }, hint),
    h("div", { class: "actions" },
      h("button", { type: "button", class: "primary", onclick: route }, "Try again"),
      h("a", { href: "#/", class: "button" }, "All deployments"))));
}

function showSignIn(message) {
  shell.setSignedIn(false);
  shell.setCrumbs();
  const input = h("input", { type: "password", id: "read-key", name: "key", autocomplete: "current-password",
    placeholder: "ppapi_read_…", required: true, spellcheck: "false" });
  const error = h("p", { class: "form-error", role: "alert" }, message || "");
  const button = h("button", { type: "submit", class: "primary" }, "Sign in");
  const form = h("form", { class: "signin", id: "signin" },
    h("h1", {}, "Sign in"),
    h("p", { class: "muted" }, "Enter the query API's read key. It is exchanged once for a browser session (an HttpOnly cookie) and not kept by the page."),
    h("input", { type: "text", name: "username", autocomplete: "username", value: "promptpulse-read-key", hidden: true, "aria-hidden": "true" }),
    h("label", { for: "read-key" }, "Read key"), input, error, button,
    h("p", { class: "small muted" }, "Local stack: the key is in .local/keys/api-read.key (written by make up)."));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    button.disabled = true;
    error.textContent = "";
    try {
      await signIn(input.value.trim());
      input.value = "";
      await route();
    } catch (failure) {
      error.textContent = failure.status === 401 ? "That key was not accepted." : failure.message;
      button.disabled = false;
      input.focus();
    }
  });
  main.replaceChildren(h("div", { class: "signin-wrap" }, form));
  input.focus();
}

async function leave() {
  if (current && current.close) current.close();
  current = null;
  try {
    await signOut();
  } finally {
    showSignIn("Signed out.");
  }
}

window.addEventListener("hashchange", route);
route();
