// One request by id (#/r/ID): where an on-call engineer lands with the x-request-id of a
// reported answer. The same details as a row of the sampled requests table, for any request in
// any deployment (payloads only where they were kept), and its trace.

import { api, paths } from "./api.js";
import { h } from "./format.js";
import { detail } from "./requests.js";
import { openTrace } from "./trace.js";

export async function requestView(root, id, shell) {
  shell.setCrumbs(h("a", { href: "#/" }, "Deployments"), h("span", {}, "Request"));
  root.replaceChildren(h("div", { class: "loading" }, "Loading the request…"));
  let r;
  try {
    r = await api(paths.request(id));
  } catch (error) {
    if (error.status !== 404) throw error;
    root.replaceChildren(h("section", { class: "panel notice-panel", id: "request-missing" },
      h("h2", {}, "No such request stored"),
      h("p", {}, error.message),
      h("p", { class: "muted" }, "A request reaches the aggregator within a second or two of its answer, and is kept for the retention period. Check the id: it is the gateway's x-request-id header.")));
    return null;
  }
  shell.setCrumbs(h("a", { href: "#/" }, "Deployments"),
    h("a", { href: `#/d/${encodeURIComponent(r.deployment)}` }, r.deployment), h("span", {}, "Request"));
  root.replaceChildren(h("section", { class: "panel", id: "request-view", dataset: { requestId: r.request_id } },
    h("div", { class: "panel-head" },
      h("h2", {}, "Request ", h("code", {}, r.request_id)),
      h("div", { class: "panel-tools" },
        h("span", { class: "chip" }, r.variant || "no variant"),
        r.trace_id ? h("button", { type: "button", class: "trace-button", onclick: () => openTrace(r.trace_id) }, "Trace") : null)),
    r.sampled || r.run_id ? null : h("p", { class: "muted" }, "Not sampled: its inputs and answer were not kept, and no judge scored it."),
    detail(r)));
  return null;
}

// The top bar's "find a request" box.
export function findBox() {
  const input = h("input", { type: "search", id: "find-request", placeholder: "Request id", "aria-label": "Find a request by id",
    spellcheck: "false", autocomplete: "off" });
  return h("form", { class: "find", role: "search", onsubmit: (event) => {
    event.preventDefault();
    const id = input.value.trim();
    if (id) location.hash = `#/r/${encodeURIComponent(id)}`;
  } }, input);
}
