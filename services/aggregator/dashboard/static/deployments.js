// The deployments list: every deployment configured (files) or seen (data), with its last
// hour at a glance. Read once when the list opens; the monitoring view is the live one.

import { api, paths } from "./api.js";
import { ago, dash, h, int, pct, score } from "./format.js";

export async function deploymentsView(root, shell) {
  shell.setCrumbs(h("span", {}, "Deployments"));
  const [{ deployments }, alerts] = await Promise.all([api(paths.deployments()), api("/v1/alerts?limit=1")]);
  const hour = await Promise.all(deployments.map((d) => api(paths.metrics(d.name, { step: "60m" })).catch(() => null)));
  const firing = new Map();
  for (const f of alerts.firing || []) firing.set(f.deployment, [...(firing.get(f.deployment) || []), f.monitor_id]);
  const body = deployments.length
    ? h("table", { class: "table deployments", id: "deployments" },
      h("thead", {}, h("tr", {}, ["Deployment", "Variants", "Requests, last hour", "Error rate", "Average score", "Monitors", "Last traffic"]
        .map((t, i) => h("th", { class: i >= 2 && i <= 4 ? "num" : "" }, t)))),
      h("tbody", {}, deployments.map((d, i) => row(d, hour[i], firing.get(d.name) || []))))
    : h("div", { class: "empty" },
      h("h3", {}, "No deployments yet"),
      h("p", {}, "Add a deployment file to the deployments folder (PROMPTPULSE_DEPLOYMENTS_DIR, see docs/deployments.md) and restart the aggregator, or send a request through the gateway: a deployment appears here once it has traffic."));
  root.replaceChildren(h("section", { class: "panel" },
    h("div", { class: "panel-head" }, h("h2", {}, "Deployments"),
      h("span", { class: "muted" }, `${deployments.length} deployment${deployments.length === 1 ? "" : "s"}`)),
    body));
  return { close() {} };
}

function row(d, metrics, firing) {
  const link = `#/d/${encodeURIComponent(d.name)}`;
  const last = d.last_seen ? Date.parse(d.last_seen) : null;
  const weights = d.variants.reduce((sum, v) => sum + (v.weight || 0), 0);
  const o = metrics ? metrics.overview : null;
  const scored = o ? Object.values(o.quality).filter((q) => q.samples) : [];
  const average = scored.length ? scored.reduce((s, q) => s + q.average * q.samples, 0) / scored.reduce((s, q) => s + q.samples, 0) : null;
  return h("tr", { dataset: { deployment: d.name } },
    h("td", {}, h("a", { href: link, class: "strong" }, d.name),
      d.description ? h("div", { class: "muted small" }, d.description) : null,
      d.configured ? null : h("div", { class: "small warn" }, "seen in data, no deployment file")),
    h("td", {}, d.variants.length ? d.variants.map((v) => h("span", { class: "chip" }, v.id,
      v.weight != null && weights ? h("span", { class: "muted" }, ` ${Math.round((100 * v.weight) / weights)}%`) : null)) : h("span", { class: "muted" }, dash),
      h("div", { class: "small muted" }, d.metrics.length ? `judged: ${d.metrics.join(", ")}${d.sampling_rate != null ? ` at ${pct(d.sampling_rate, 0)}` : ""}` : "not judged")),
    h("td", { class: "num" }, o ? int(o.requests) : dash),
    h("td", { class: "num" }, o ? pct(o.error_rate) : dash),
    h("td", { class: "num", title: "mean of every judged metric's scores" }, score(average)),
    h("td", {}, `${d.monitors}`, firing.length ? h("span", { class: "chip firing", title: firing.join(", ") }, `${firing.length} firing`) : null),
    h("td", {}, last ? h("span", { title: new Date(last).toString() }, ago(last)) : h("span", { class: "muted" }, "no traffic yet")));
}
