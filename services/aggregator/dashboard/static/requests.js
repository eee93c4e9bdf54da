// The sampled requests table: inputs, answer, judge scores with their reasons, and a Trace
// button. It is read when the view loads and when the user asks (Refresh, Load more, a variant);
// the stream only says how many requests arrived since.

import { api, paths } from "./api.js";
import { dash, dateTime, fill, h, int, ms, pct } from "./format.js";
import { openTrace } from "./trace.js";

const PAGE = 10;

export class RequestsTable {
  constructor(section, view) {
    this.section = section;
    this.view = view;
    this.rows = [];
    this.cursor = null;
    this.variant = null;
    this.notice = h("div", { class: "notice-line", id: "requests-new" });
    this.body = h("div", {});
    this.error = null;
  }

  async load(bounds) {
    this.bounds = bounds || this.bounds;
    this.rows = [];
    this.cursor = null;
    this.baseline = this.view.model ? this.view.model.arrived : 0;
    await this.fetchPage();
  }

  async fetchPage() {
    try {
      const page = await api(paths.requests(this.view.name, {
        sampled: "true", limit: PAGE, from: this.bounds.from, to: this.bounds.to || null,
        variant: this.variant, cursor: this.cursor,
      }));
      this.rows.push(...page.requests);
      this.cursor = page.next_cursor;
      this.error = null;
    } catch (error) {
      if (error.status === 401) throw error;
      this.error = error.message;
    }
    this.render();
  }

  renderNotice() {
    const arrived = this.view.model ? this.view.model.arrived - this.baseline : 0;
    this.notice.replaceChildren(...(arrived > 0 ? [
      `${int(arrived)} new request${arrived === 1 ? "" : "s"} since this list was loaded (the judged ones appear here) · `,
      h("button", { type: "button", class: "link", onclick: () => this.reload() }, "Refresh")] : []));
  }

  reload() {
    return this.load().catch((error) => this.view.shell.fail(error));
  }

  render() {
    const variants = this.view.variantNames ? this.view.variantNames() : [];
    const select = h("select", { "aria-label": "Variant", onchange: (event) => { this.variant = event.target.value || null; this.reload(); } },
      h("option", { value: "" }, "All variants"), variants.map((v) => h("option", { value: v, selected: v === this.variant }, v)));
    const rate = this.view.deployment && this.view.deployment.sampling_rate;
    let content;
    if (this.error) {
      content = h("div", { class: "empty" }, h("p", {}, `Could not read the requests: ${this.error}`));
    } else if (!this.rows.length) {
      content = h("div", { class: "empty" }, h("h3", {}, "No sampled requests in this range"),
        h("p", {}, `Judged requests keep their inputs and answers${rate != null ? ` (${pct(rate, 0)} of requests for this deployment)` : ""}. Send a few through the gateway, wait a few seconds for the judges, then press Refresh.`));
    } else {
      content = h("div", { class: "table-scroll" }, h("table", { class: "table requests", id: "requests-table" },
        h("thead", {}, h("tr", {}, ["Time", "Variant", "Inputs", "Answer", "Scores and reasons", "Latency", "Tokens", ""].map((x, i) => h("th", { class: i === 5 || i === 6 ? "num" : "" }, x)))),
        h("tbody", {}, this.rows.flatMap((r) => this.row(r)))));
    }
    fill(this.section, 
      h("div", { class: "panel-head" }, h("h2", {}, "Sampled requests"),
        h("div", { class: "panel-tools" }, select, h("button", { type: "button", onclick: () => this.reload() }, "Refresh"))),
      this.notice, content,
      this.cursor ? h("div", { class: "actions center" }, h("button", { type: "button", onclick: () => this.fetchPage() }, "Load more")) : null);
    this.renderNotice();
  }

  row(r) {
    const details = h("tr", { class: "details", hidden: true }, h("td", { colspan: 8 }, detail(r)));
    const toggle = () => { details.hidden = !details.hidden; main.classList.toggle("open", !details.hidden); };
    const inputs = Object.entries(r.inputs || {});
    const question = inputs.find(([k]) => k === "question") || inputs[0];
    const answer = firstText(r.outputs);
    const response = r.response;
    const main = h("tr", { class: "request", dataset: { requestId: r.request_id }, tabindex: "0", title: "Show the details",
      onclick: (event) => { if (!event.target.closest("button")) toggle(); },
      onkeydown: (event) => { if (event.key === "Enter" && event.target === main) toggle(); } },
      h("td", { class: "nowrap", title: r.start_time }, dateTime(Date.parse(r.start_time))),
      h("td", {}, h("span", { class: "chip" }, r.variant || dash)),
      h("td", { class: "clip" }, question ? h("div", { class: "clamp" }, h("span", { class: "muted small" }, `${question[0]}: `), text(question[1])) : dash,
        inputs.length > 1 ? h("div", { class: "small muted" }, `+ ${inputs.length - 1} more input${inputs.length > 2 ? "s" : ""}`) : null),
      h("td", { class: "clip answer" }, response && response.status !== "ok" ? h("span", { class: "bad" }, `${response.status}: ${response.error_type || ""}`) : answer == null ? dash : h("div", { class: "clamp", title: answer }, answer)),
      h("td", { class: "scores" }, (r.evaluations || []).length ? r.evaluations.map(evaluation) : h("span", { class: "muted small" }, "not judged yet")),
      h("td", { class: "num nowrap" }, response ? ms(response.latency_ms) : dash),
      h("td", { class: "num" }, response && response.tokens ? int(response.tokens.total) : dash),
      h("td", {}, r.trace_id ? h("button", { type: "button", class: "trace-button", dataset: { traceId: r.trace_id }, onclick: () => openTrace(r.trace_id) }, "Trace") : null));
    return [main, details];
  }
}

function text(value) {
  return typeof value === "string" ? value : JSON.stringify(value);
}

function firstText(outputs) {
  if (!outputs) return null;
  const values = Object.values(outputs);
  return values.length ? text(values[0]) : null;
}

// A score as its evaluator gave it: the label, or the value on its scale (the 1-5 `score` of
// older rows otherwise); the colour follows the 1-5 score every outcome carries.
export function shownScore(e) {
  if (e.label) return e.label;
  const value = e.value != null ? e.value : e.score;
  return Number.isInteger(value) ? String(value) : String(Math.round(value * 1000) / 1000);
}

function scoreClass(e) {
  if (e.outcome !== "scored") return "score-na";
  return e.score >= 4 ? "score-good" : e.score === 3 ? "score-mid" : "score-bad";
}

function evaluation(e) {
  const value = e.outcome === "scored" ? shownScore(e) : e.outcome === "error" ? "err" : "n/a";
  return h("div", { class: "score-line", dataset: { metric: e.metric }, title: e.reason || e.error_type || "" },
    h("span", { class: `score ${scoreClass(e)}` }, value), h("span", { class: "score-metric" }, e.metric),
    h("span", { class: "score-reason muted" }, e.reason || e.error_type || ""));
}

export function detail(r) {
  const response = r.response || {};
  const pairs = [
    ["Request id", r.request_id], ["Trace id", r.trace_id || dash], ["Started", r.start_time],
    ["Status", response.status || "no response stored"], ["Streamed", r.streaming ? "yes" : "no"],
    ["Latency", ms(response.latency_ms)], ["Time to first token", ms(response.time_to_first_token_ms)],
    ["Tokens", response.tokens ? `${int(response.tokens.prompt)} prompt + ${int(response.tokens.completion)} completion = ${int(response.tokens.total)}` : dash],
  ];
  if (response.error_type) pairs.push(["Error", `${response.error_type}: ${response.error_message || ""}`]);
  return h("div", { class: "detail" },
    h("div", { class: "detail-col" },
      h("h4", {}, "Inputs"), Object.entries(r.inputs || {}).map(([k, v]) => h("div", { class: "kv" }, h("div", { class: "k" }, k), h("pre", {}, text(v)))),
      h("h4", {}, "Outputs"), Object.entries(r.outputs || {}).map(([k, v]) => h("div", { class: "kv" }, h("div", { class: "k" }, k), h("pre", {}, text(v))))),
    h("div", { class: "detail-col" },
      h("h4", {}, "Judges"),
      (r.evaluations || []).length ? h("table", { class: "table compact" }, h("tbody", {}, r.evaluations.map((e) => h("tr", {},
        h("td", {}, h("span", { class: `score ${scoreClass(e)}` }, e.outcome === "scored" ? shownScore(e) : e.outcome)),
        h("td", { class: "strong" }, e.metric),
        h("td", {}, e.reason || e.error_type || "", h("div", { class: "small muted" }, `${e.judge_model || ""} · ${e.judge_prompt_version || ""}`)))))) : h("p", { class: "muted" }, "Not judged yet."),
      (r.feedback || []).length ? [h("h4", {}, "Feedback"), r.feedback.map((f) => h("div", {}, `${f.rating ?? dash} ${f.comment || ""}`))] : null,
      h("h4", {}, "Response"), h("dl", { class: "pairs" }, pairs.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]))));
}
