// Re-judges (#/rejudges/NAME, #/rejudge/ID): a deployment's re-judges with their progress, and one
// re-judge's old version against new on the same requests, as GET /v1/rejudges/{id} gives them
// (docs/evaluation.md, "Re-judge"). Read-only: a re-judge is started with the admin key
// (promptpulse eval rejudge), which the page never holds.

import { api } from "./api.js";
import { dateTime, h } from "./format.js";

const path = {
  list: (d) => `/v1/deployments/${encodeURIComponent(d)}/rejudges`,
  one: (id) => `/v1/rejudges/${encodeURIComponent(id)}`,
};

function number(value, digits = 3) {
  return value == null ? "–" : Number(value).toFixed(digits);
}

function progressText(r) {
  const p = r.progress || {};
  const total = p.total == null ? "?" : p.total;
  return `${p.judged || 0} of ${total} judged · ${p.published || 0} published` + (p.stored == null ? "" : ` · ${p.stored} stored`);
}

export async function rejudgeListView(root, deployment, shell) {
  shell.setCrumbs(h("a", { href: "#/" }, "Deployments"),
    h("a", { href: `#/d/${encodeURIComponent(deployment)}` }, deployment), h("span", {}, "Re-judges"));
  root.replaceChildren(h("div", { class: "loading" }, "Loading re-judges…"));
  const doc = await api(path.list(deployment));
  const rows = doc.rejudges.map((r) => h("tr", { dataset: { rejudge: r.id } },
    h("td", {}, h("a", { href: `#/rejudge/${encodeURIComponent(r.id)}` }, h("code", {}, r.id))),
    h("td", {}, `${r.evaluator}@${r.version}`),
    h("td", {}, `${dateTime(r.from)} – ${dateTime(r.to)}`),
    h("td", { class: "rejudge-status" }, r.status),
    h("td", {}, progressText(r))));
  root.replaceChildren(h("section", { class: "panel", id: "rejudges" },
    h("div", { class: "panel-head" }, h("h2", {}, `${deployment}: re-judges`)),
    rows.length
      ? h("table", { class: "table" }, h("thead", {}, h("tr", {},
          ...["id", "evaluator", "window", "status", "progress"].map((t) => h("th", {}, t)))), h("tbody", {}, ...rows))
      : h("p", { class: "muted" }, "No re-judges yet. Start one with promptpulse eval rejudge (admin key).")));
  return null;
}

export async function rejudgeView(root, id, shell) {
  shell.setCrumbs(h("a", { href: "#/" }, "Deployments"), h("span", {}, "Re-judge"));
  root.replaceChildren(h("div", { class: "loading" }, "Loading the re-judge…"));
  const r = await api(path.one(id));
  shell.setCrumbs(h("a", { href: "#/" }, "Deployments"),
    h("a", { href: `#/d/${encodeURIComponent(r.deployment)}` }, r.deployment),
    h("a", { href: `#/rejudges/${encodeURIComponent(r.deployment)}` }, "Re-judges"), h("span", {}, r.id));
  const metrics = (r.comparison && r.comparison.metrics) || [];
  const panels = metrics.map((m) => {
    const diff = m.mean_difference || {};
    const [low, high] = diff.confidence_interval || [null, null];
    const rates = m.pass_rate || {};
    const figures = [
      ["pairs", "pairs", String(m.pairs)],
      ["mean-difference", "mean difference (new − old)", number(diff.mean)],
      ["interval", "95% interval", `${number(low)} … ${number(high)}`],
      ["pass-old", "pass rate, old", number(rates.old)],
      ["pass-new", "pass rate, new", number(rates.new)],
      ["exact-match", "exact-match rate", number(m.exact_match_rate)],
      ["cohen-kappa", "Cohen's kappa (pass/fail)", number(m.cohen_kappa)],
      ["weighted-kappa", "weighted kappa (scale)", number(m.weighted_kappa)],
    ];
    const moved = (m.most_moved || []).map((x) => h("tr", {},
      h("td", {}, h("a", { href: `#/r/${encodeURIComponent(x.request_id)}` }, h("code", {}, x.request_id))),
      h("td", { class: "num" }, String(x.old)), h("td", { class: "num" }, String(x.new)),
      h("td", { class: "num" }, (x.difference > 0 ? "+" : "") + x.difference)));
    return h("section", { class: "panel rejudge-metric", dataset: { metric: m.metric } },
      h("div", { class: "panel-head" }, h("h3", {}, `${m.metric}: ${m.old_version || "no old version"} → ${m.new_version}`)),
      h("dl", { class: "pairs" }, ...figures.flatMap(([key, label, value]) =>
        [h("dt", {}, label), h("dd", { dataset: { figure: key } }, value)])),
      moved.length ? h("table", { class: "table moved" },
        h("thead", {}, h("tr", {}, ...["request", "old", "new", "change"].map((t) => h("th", {}, t)))),
        h("tbody", {}, ...moved)) : null);
  });
  root.replaceChildren(h("section", { class: "panel", id: "rejudge-view", dataset: { rejudge: r.id, status: r.status } },
    h("div", { class: "panel-head" }, h("h2", {}, "Re-judge ", h("code", {}, r.id))),
    h("p", {}, `${r.evaluator}@${r.version} over ${dateTime(r.from)} – ${dateTime(r.to)}` + (r.sample ? `, sample ${r.sample}` : "")),
    h("p", { id: "rejudge-progress" }, `${r.status}: ${progressText(r)}`),
    r.message ? h("p", { class: "form-error" }, r.message) : null),
    ...(panels.length ? panels : [h("p", { class: "muted" }, "No re-judged outcomes stored yet.")]));
  return null;
}
