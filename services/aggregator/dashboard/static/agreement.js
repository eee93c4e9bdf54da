// Judges against people (#/agreement/NAME?min_labels=N&days=D): per metric and evaluator version,
// how far the judge agrees with the human labels sent with feedback (the feedback route's labels,
// promptpulse annotate), as GET /v1/deployments/{d}/agreement gives it (docs/evaluation.md,
// "Judges against people"). A version with fewer labelled requests than the minimum shows how
// many it has instead of figures that would mean little.

import { api, query } from "./api.js";
import { dash, dateTime, h } from "./format.js";

const DAY = 86_400_000;

function number(value, digits = 3) {
  return value == null ? dash : Number(value).toFixed(digits);
}

function signed(value) {
  return value == null ? dash : (value > 0 ? "+" : "") + Number(value).toFixed(3);
}

// One row per (metric, version): the figures, or the "not enough labels" state across them.
function row(a, minLabels) {
  const cells = [
    h("td", { class: "strong" }, a.metric),
    h("td", { dataset: { figure: "version" } }, h("code", {}, a.evaluator_version || "(none recorded)")),
    h("td", { class: "num", dataset: { figure: "labelled" } }, String(a.labelled)),
  ];
  if (!a.enough) {
    cells.push(h("td", { colspan: 4, class: "muted", dataset: { figure: "not-enough" } },
      `not enough labels (${a.labelled} of ${minLabels})`));
  } else {
    const diff = a.mean_difference || {};
    cells.push(
      h("td", { class: "num", dataset: { figure: "weighted-kappa" } }, number(a.weighted_kappa)),
      h("td", { class: "num", dataset: { figure: "exact-match" } }, number(a.exact_match_rate)),
      h("td", { class: "num", dataset: { figure: "mean-difference" } }, signed(diff.value)),
      h("td", { class: "num", dataset: { figure: "interval" } }, `${number(diff.low)} … ${number(diff.high)}`));
  }
  return h("tr", { dataset: { metric: a.metric, version: a.evaluator_version, enough: String(a.enough) } }, ...cells);
}

export async function agreementView(root, deployment, params, shell) {
  shell.setCrumbs(h("a", { href: "#/" }, "Deployments"),
    h("a", { href: `#/d/${encodeURIComponent(deployment)}` }, deployment), h("span", {}, "Judges against people"));
  root.replaceChildren(h("div", { class: "loading" }, "Loading the judges' agreement with people…"));
  const days = Number(params.get("days")) || 7;
  const to = new Date();
  const doc = await api(`/v1/deployments/${encodeURIComponent(deployment)}/agreement` + query({
    from: new Date(to.getTime() - days * DAY).toISOString(), to: to.toISOString(),
    min_labels: params.get("min_labels"), metric: params.get("metric"),
  }));
  const rows = doc.agreement.map((a) => row(a, doc.min_labels));
  // The range and the minimum are the hash's parameters: changing one reloads the view.
  const minimum = h("input", { type: "number", id: "agreement-min", min: 2, max: 100000, value: doc.min_labels, style: "width: 7em" });
  // The address's own range is one of the choices: else the select would show (and a change of
  // the minimum would reload with) its first choice instead.
  const choices = [...new Set([1, 7, 30, 90, days])].sort((a, b) => a - b);
  const range = h("select", { id: "agreement-days" },
    ...choices.map((d) => h("option", { value: d, selected: d === days }, `last ${d} d`)));
  const reload = () => {
    const next = new URLSearchParams(params);
    next.set("days", range.value);
    if (Number(minimum.value) >= 2) next.set("min_labels", minimum.value);
    location.hash = `#/agreement/${encodeURIComponent(deployment)}?${next}`;
  };
  minimum.addEventListener("change", reload);
  range.addEventListener("change", reload);
  const heads = ["metric", "evaluator version", "labelled requests", "weighted kappa", "exact match",
    "judge − person (mean)", `${Math.round(doc.level * 100)}% interval`];
  root.replaceChildren(h("section", { class: "panel", id: "agreement", dataset: { minLabels: String(doc.min_labels) } },
    h("div", { class: "panel-head" }, h("h2", {}, `${deployment}: judges against people`),
      h("div", { class: "muted small" }, `${dateTime(doc.from)} – ${dateTime(doc.to)} · figures from ${doc.min_labels} labelled requests per version`),
      h("div", { class: "panel-tools" }, range, h("label", { for: "agreement-min", class: "small muted" }, "minimum labelled"), minimum)),
    h("p", { class: "small muted" },
      "Requests with both a judge's score and a person's label (feedback labels, promptpulse annotate). " +
      "Weighted kappa: quadratic, over the version's own scale (1 = full agreement, 0 = chance). " +
      "A positive difference: the judge scores higher than people."),
    rows.length
      ? h("table", { class: "table compact" }, h("thead", {}, h("tr", {},
          ...heads.map((t, i) => h("th", { class: i > 1 ? "num" : "" }, t)))), h("tbody", {}, ...rows))
      : h("p", { class: "muted", id: "agreement-empty" },
          "No labelled requests in this range. Send labels with feedback or promptpulse annotate REQUEST_ID metric=score.")));
  return null;
}
