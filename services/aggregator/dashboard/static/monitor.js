// The monitoring view of one deployment: cards, token usage by model, generation quality per
// metric (threshold lines and violation markers from the monitors), operations, variants side by
// side, and the sampled requests with their traces.
//
// Network: one load (figures, monitors, violations, requests) when the view opens or the range
// changes, then ONE EventSource. Live updates come only from the stream; nothing is fetched on a
// timer. The stream's `metrics` events replace minutes (figures.js keeps the totals exact); when
// an event shows a new minute of traffic, monitor windows may have closed, so the violation
// markers and monitor states (not the figures) are read again, at most once per such minute.

import { api, paths } from "./api.js";
import { chart, sparkline } from "./charts.js";
import { MINUTE, RangeModel, bucketFor, view } from "./figures.js";
import { clock, compact, dash, dateTime, duration, fill, h, int, ms, pct, score, svgBox } from "./format.js";
import { RequestsTable } from "./requests.js";

export const PRESETS = [
  { key: "15m", minutes: 15, live: true },
  { key: "1h", minutes: 60, live: true },
  { key: "6h", minutes: 360, live: true },
  { key: "24h", minutes: 1440, live: true },
  { key: "7d", minutes: 10080, live: false },
];
const PALETTE = ["#2563eb", "#d97706", "#059669", "#7c3aed", "#db2777", "#0891b2", "#65a30d", "#9333ea"];
const ALL_COLOR = "#64748b";
const ERROR_COLOR = "#dc2626";

const ceilMinute = (t) => Math.ceil(t / MINUTE) * MINUTE;

function parseRange(params) {
  const from = Date.parse(params.get("from") || "");
  const to = Date.parse(params.get("to") || "");
  if (Number.isFinite(from) && Number.isFinite(to) && from < to) {
    const minutes = Math.ceil((to - from) / MINUTE);
    return { key: "custom", from: Math.floor(from / MINUTE) * MINUTE, to: ceilMinute(to), minutes, live: false };
  }
  return { ...(PRESETS.find((p) => p.key === params.get("range")) || PRESETS[1]) };
}

function stepFor(range) {
  if (range.live || range.minutes <= 1440) return MINUTE; // one point per minute: what the stream sends
  return Math.ceil(range.minutes / 720) * MINUTE;
}

export class MonitorView {
  constructor(root, name, params, shell) {
    this.root = root;
    this.name = name;
    this.shell = shell;
    this.range = parseRange(params);
    this.variantFilter = params.get("variant") || null;
    this.stream = null;
    this.boxes = new Map();
    this.qualityModes = new Map();
    this.renderPending = false;
    this.closed = false;
    this.monitorsMinute = null;
    this.streamEvents = 0;
  }

  // -- loading ---------------------------------------------------------------------------------

  async open() {
    this.shell.setCrumbs(h("a", { href: "#/" }, "Deployments"), h("span", {}, this.name));
    this.buildFrame();
    await this.load();
    this.clock = setInterval(() => this.slideWithClock(), 15_000); // local only: no request
  }

  close() {
    this.closed = true;
    this.closeStream();
    clearInterval(this.clock);
  }

  async load() {
    this.closeStream();
    this.setStatus("loading");
    const range = this.range;
    const to = range.key === "custom" ? range.to : ceilMinute(Date.now());
    const from = range.key === "custom" ? range.from : to - range.minutes * MINUTE;
    const bounds = { from: new Date(from).toISOString(), to: new Date(to).toISOString() };
    const d = this.name;
    // The figures first, the stream after: its snapshot is then read after them (see figures.js).
    const [deployments, metrics, monitors, violations] = await Promise.all([
      api(paths.deployments()),
      api(paths.metrics(d, { ...bounds, step: `${stepFor(range) / MINUTE}m` })),
      api(paths.monitors(d)),
      api(paths.violations(d, bounds)),
    ]);
    if (this.closed) return;
    // Each other variant against the first, with the difference's interval (compare route):
    // read with the range, not kept live (an interval cannot be updated minute by minute).
    const names = Object.keys(metrics.by_variant || {}).sort();
    const compared = await Promise.all(names.slice(1).map((candidate) =>
      api(paths.compare(d, { ...bounds, baseline: names[0], candidate })).catch(() => null)));
    if (this.closed) return;
    this.comparisons = new Map(compared.filter(Boolean).map((c) => [c.candidate, c]));
    this.deployment = deployments.deployments.find((x) => x.name === d) || { name: d, variants: [], metrics: [] };
    this.model = new RangeModel(metrics, { live: range.live });
    // Per metric: the evaluator version its figures count, its scale and pass rule (API).
    this.qualityInfo = (metrics.overview && metrics.overview.quality) || {};
    this.monitors = monitors.monitors;
    this.violations = violations;
    this.loadedAt = Date.now();
    this.renderAll();
    await this.requests.load({ from: bounds.from, to: range.live ? null : bounds.to });
    if (range.live && !this.closed) this.openStream();
    else this.setStatus("static");
  }

  openStream() {
    const stream = new EventSource(paths.stream(this.name));
    this.stream = stream;
    this.setStatus("connecting");
    stream.addEventListener("snapshot", (event) => this.onMinutes(JSON.parse(event.data), true));
    stream.addEventListener("metrics", (event) => this.onMinutes(JSON.parse(event.data), false));
    stream.addEventListener("error", () => {
      if (this.stream !== stream) return;
      if (stream.readyState === EventSource.CLOSED) this.streamLost();
      else this.setStatus("reconnecting"); // the browser retries by itself; a new snapshot follows
    });
  }

  closeStream() {
    if (this.stream) this.stream.close();
    this.stream = null;
  }

  async streamLost() {
    this.closeStream();
    this.setStatus("closed");
    try {
      await api(paths.deployments()); // why: a 401 means the session ended
    } catch (error) {
      if (error.status === 401) this.shell.fail(error);
    }
  }

  onMinutes(event, snapshot) {
    if (this.closed || !this.model) return;
    let newMinute = false;
    for (const minute of event.minutes || []) if (this.model.applyMinute(minute) === "new-minute") newMinute = true;
    this.streamEvents += 1;
    this.root.dataset.streamEvents = String(this.streamEvents);
    if (snapshot) this.setStatus("live");
    if (newMinute && !snapshot) this.refreshMonitors();
    this.scheduleRender();
  }

  // Monitor windows close on minute boundaries: after the stream shows a new minute, read the
  // violations and monitor states again (the figures themselves come from the stream).
  async refreshMonitors() {
    const minute = this.model.newestMinute;
    if (this.monitorsMinute === minute || this.monitorsBusy) return;
    this.monitorsMinute = minute;
    this.monitorsBusy = true;
    try {
      const bounds = { from: new Date(this.model.from).toISOString(), to: new Date(this.model.to).toISOString() };
      const [monitors, violations] = await Promise.all([api(paths.monitors(this.name)), api(paths.violations(this.name, bounds))]);
      if (this.closed) return;
      this.monitors = monitors.monitors;
      this.violations = violations;
      this.scheduleRender();
    } catch (error) {
      // keep the markers shown; the next new minute tries again
    } finally {
      this.monitorsBusy = false;
    }
  }

  slideWithClock() {
    if (!this.model || !this.model.live) return;
    const to = ceilMinute(Date.now());
    if (to > this.model.to) {
      this.model.slideTo(to);
      this.scheduleRender();
    }
  }

  // At most about two renders a second, however fast events come: each redraws every chart.
  scheduleRender() {
    if (this.renderPending) return;
    this.renderPending = true;
    const wait = Math.max(0, (this.lastRender || 0) + 500 - Date.now());
    setTimeout(() => requestAnimationFrame(() => {
      this.renderPending = false;
      if (!this.closed && this.model) this.renderAll();
    }), wait);
  }

  // -- frame -----------------------------------------------------------------------------------

  buildFrame() {
    this.title = h("div", { class: "title" });
    this.status = h("div", { class: "status", id: "status" });
    this.sections = {
      cards: h("section", { class: "cards", id: "cards" }),
      tokens: h("section", { class: "panel", id: "tokens" }),
      quality: h("section", { class: "panel", id: "quality" }),
      operations: h("section", { class: "panel", id: "operations" }),
      variants: h("section", { class: "panel", id: "variants" }),
      requests: h("section", { class: "panel", id: "requests" }),
    };
    this.requests = new RequestsTable(this.sections.requests, this);
    fill(this.root, 
      h("div", { class: "view-head" }, this.title, h("div", { class: "view-controls" }, this.rangePicker(), this.status)),
      ...Object.values(this.sections));
  }

  rangePicker() {
    const go = (params) => { location.hash = `#/d/${encodeURIComponent(this.name)}?${new URLSearchParams(params)}`; };
    const buttons = PRESETS.map((p) => h("button", {
      type: "button", class: `seg${this.range.key === p.key ? " active" : ""}`, dataset: { range: p.key },
      title: p.live ? `The last ${duration(p.minutes)}, live` : `The last ${duration(p.minutes)} (not live)`,
      onclick: () => go({ range: p.key }),
    }, p.key));
    const local = (t) => new Date(t - new Date(t).getTimezoneOffset() * MINUTE).toISOString().slice(0, 16);
    const now = ceilMinute(Date.now());
    const fromInput = h("input", { type: "datetime-local", value: local(this.range.key === "custom" ? this.range.from : now - 3600_000) });
    const toInput = h("input", { type: "datetime-local", value: local(this.range.key === "custom" ? this.range.to : now) });
    const error = h("div", { class: "form-error" });
    const popover = h("div", { class: "popover", hidden: true },
      h("label", {}, "From", fromInput), h("label", {}, "To", toInput), error,
      h("div", { class: "actions" }, h("button", { type: "button", class: "primary", onclick: () => {
        const from = new Date(fromInput.value).getTime();
        const to = new Date(toInput.value).getTime();
        if (!(from < to)) {
          error.textContent = "From must be before To.";
          return;
        }
        go({ from: new Date(from).toISOString(), to: new Date(to).toISOString() });
      } }, "Apply"), h("button", { type: "button", onclick: () => { popover.hidden = true; } }, "Cancel")));
    const custom = h("button", { type: "button", class: `seg${this.range.key === "custom" ? " active" : ""}`, dataset: { range: "custom" },
      onclick: () => { popover.hidden = !popover.hidden; } }, "Custom");
    return h("div", { class: "range", id: "range" }, h("div", { class: "segmented" }, buttons, custom), popover);
  }

  setStatus(state) {
    this.status.dataset.state = state;
    const reload = h("button", { type: "button", class: "link", onclick: () => this.load().catch((e) => this.shell.fail(e)) }, "Reload");
    const labels = {
      loading: ["Loading…"],
      connecting: ["Connecting…"],
      live: [h("span", { class: "pulse" }), "Live"],
      reconnecting: ["Reconnecting…"],
      closed: ["Disconnected · ", reload],
      static: [`Not live · loaded ${clock(this.loadedAt || Date.now(), true)} · `, reload],
    };
    this.status.replaceChildren(...(labels[state] || [state]));
    this.status.title = state === "static" ? "Live updates cover the preset ranges up to 24 hours." : "";
  }

  box(key) {
    if (!this.boxes.has(key)) this.boxes.set(key, h("div", { dataset: { chart: key } }));
    return this.boxes.get(key);
  }

  // -- what the charts need ------------------------------------------------------------------

  variantNames() {
    const names = new Set([...this.deployment.variants.map((v) => v.id), ...this.model.variantNames()]);
    return [...names].sort();
  }

  color(variant) {
    const index = this.variantNames().indexOf(variant);
    return PALETTE[(index < 0 ? 0 : index) % PALETTE.length];
  }

  bucket() {
    return bucketFor(this.model.to - this.model.from, this.model.step);
  }

  span() {
    const bucket = this.bucket();
    return { from: this.model.from, to: this.model.to, step: bucket };
  }

  // -- rendering -----------------------------------------------------------------------------
  // Live data redraws the view often. Structure (sections, panels, buttons, chart boxes) is built
  // once and kept, only values and tables inside are replaced, so a click, a hover or a text
  // selection survives an update.

  slot(key, build) {
    if (!this.boxes.has(key)) this.boxes.set(key, build());
    return this.boxes.get(key);
  }

  head(key, title) {
    return this.slot(`head-${key}`, () => {
      const subtitle = h("div", { class: "muted small" });
      const element = h("div", { class: "panel-head" }, h("h2", {}, title), subtitle);
      element.subtitle = subtitle;
      return element;
    });
  }

  renderAll() {
    // The range in view (it slides while live), for whoever reads the page: a test, a screenshot.
    this.root.dataset.from = new Date(this.model.from).toISOString();
    this.root.dataset.to = new Date(this.model.to).toISOString();
    this.total = view(this.model.total);
    this.perVariant = new Map(this.variantNames().map((v) => [v, this.model.variants.has(v) ? view(this.model.variants.get(v)) : null]));
    this.buckets = this.model.buckets(this.bucket());
    this.lastRender = Date.now();
    this.renderTitle();
    this.renderCards();
    this.renderTokens();
    this.renderQuality();
    this.renderOperations();
    this.renderVariants();
    this.requests.renderNotice();
  }

  renderTitle() {
    const d = this.deployment;
    const weights = d.variants.reduce((sum, v) => sum + (v.weight || 0), 0);
    const firing = this.monitors.filter((m) => m.state === "firing");
    fill(this.title,
      h("h1", {}, d.name),
      d.description ? h("p", { class: "muted" }, d.description) : null,
      h("div", { class: "meta" },
        d.variants.map((v) => h("span", { class: "chip" }, h("span", { class: "dot-swatch", dataset: { color: this.color(v.id) } }), v.id,
          v.weight != null && weights ? h("span", { class: "muted" }, ` ${Math.round((100 * v.weight) / weights)}%`) : null)),
        d.sampling_rate != null ? h("span", { class: "chip plain" }, `judged: ${pct(d.sampling_rate, 0)} of requests`) : null,
        h("span", { class: "chip plain" }, `${this.monitors.length} monitor${this.monitors.length === 1 ? "" : "s"}`),
        firing.length ? h("span", { class: "chip firing", title: firing.map((m) => m.id).join(", ") }, `${firing.length} firing`) : null));
    paintSwatches(this.title);
  }

  card(key, label) {
    return this.slot(`card-${key}`, () => {
      const parts = { value: h("div", { class: "card-value" }), sub: h("div", { class: "card-sub muted" }), spark: h("div", { class: "card-spark" }) };
      const element = h("div", { class: "card", dataset: { card: key } }, h("div", { class: "card-label" }, label), parts.value, parts.sub, parts.spark);
      return Object.assign(element, { parts });
    });
  }

  renderCards() {
    const t = this.total;
    const series = (pick) => this.buckets.map(([start, f]) => [start, f ? pick(f) : 0]);
    const update = (key, label, value, sub, points, color) => {
      const card = this.card(key, label);
      card.parts.value.textContent = int(value);
      card.parts.sub.textContent = sub;
      card.parts.spark.innerHTML = sparkline(points, color, 160, 30); // built here from numbers only
      return card;
    };
    const share = (part) => (t.tokens.total ? `${pct(part / t.tokens.total, 0)} of tokens` : "no tokens yet");
    const perRequest = t.requests ? `${compact(t.tokens.total / t.requests)} per request` : "no requests yet";
    const cost = t.tokens.cost != null ? ` · cost ${t.tokens.cost.toFixed(2)}` : "";
    const minutes = Math.round((this.model.to - this.model.from) / MINUTE);
    keep(this.sections.cards,
      update("requests", "Total requests", t.requests, t.responses ? `${int(t.errors)} errors · ${pct(t.error_rate)} error rate` : `none in the last ${duration(minutes)}`, series((f) => f.requests), "#2563eb"),
      update("tokens", "Total tokens", t.tokens.total, perRequest + cost, series((f) => f.tokens.total), "#7c3aed"),
      update("prompt_tokens", "Prompt tokens", t.tokens.prompt, share(t.tokens.prompt), series((f) => f.tokens.prompt), "#0891b2"),
      update("completion_tokens", "Completion tokens", t.tokens.completion, share(t.tokens.completion), series((f) => f.tokens.completion), "#059669"));
  }

  renderTokens() {
    const models = Object.keys(this.total.models).sort();
    const span = this.span();
    const series = models.map((model, i) => ({
      name: model, color: PALETTE[i % PALETTE.length],
      points: this.buckets.map(([t, f]) => [t, f && f.models[model] ? f.models[model].total : f ? 0 : null]),
    }));
    chart(this.box("tokens"), { ...span, kind: "line", series, label: "Token usage by model", yMin: 0,
      empty: "No tokens in this range. Send a request through the gateway and it shows here within a second." });
    const head = this.head("tokens", "Token usage over time, by model");
    head.subtitle.textContent = `total tokens per ${duration(span.step / MINUTE)}`;
    const table = this.slot("tokens-table", () => h("div", {}));
    fill(table, models.length ? h("table", { class: "table compact" },
      h("thead", {}, h("tr", {}, ["Model", "Calls", "Prompt", "Completion", "Total"].map((x, i) => h("th", { class: i ? "num" : "" }, x)))),
      h("tbody", {}, models.map((model, i) => {
        const m = this.total.models[model];
        return h("tr", { dataset: { model } }, h("td", {}, h("span", { class: "dot-swatch", dataset: { color: PALETTE[i % PALETTE.length] } }), model),
          h("td", { class: "num" }, int(m.calls)), h("td", { class: "num" }, int(m.prompt)), h("td", { class: "num" }, int(m.completion)), h("td", { class: "num" }, int(m.total)));
      }))) : null);
    paintSwatches(table);
    keep(this.sections.tokens, head, this.slot("tokens-split", () => h("div", { class: "split" }, this.box("tokens"), table)));
  }

  metrics() {
    const names = new Set([...(this.deployment.metrics || []), ...Object.keys(this.total.quality)]);
    for (const m of this.monitors) if (m.metric && (m.statistic === "average" || m.statistic === "pass_rate")) names.add(m.metric);
    return [...names];
  }

  // The metric's scale, as the metrics route or the deployment list gives it (null: 1-5).
  scaleOf(metric) {
    return ((this.qualityInfo || {})[metric] || {}).scale || ((this.deployment || {}).scales || {})[metric] || null;
  }

  scaleBounds(metric) {
    const scale = this.scaleOf(metric);
    if (scale && scale.type === "labels") {
      const numbers = Object.values(scale.labels || {});
      return [Math.min(...numbers), Math.max(...numbers)];
    }
    if (scale && scale.min != null && scale.max != null) return [scale.min, scale.max];
    return [1, 5];
  }

  // "0–10 · pass ≥ 7 · version 3f2a…": what a metric's figures are on.
  scaleNote(metric) {
    const info = (this.qualityInfo || {})[metric] || {};
    const scale = this.scaleOf(metric);
    const parts = [];
    if (scale && scale.type === "labels") parts.push(Object.keys(scale.labels || {}).join(" / "));
    else if (scale && scale.min != null) parts.push(`${scale.min}–${scale.max}`);
    const rule = info.pass_rule || (scale && scale.pass_rule);
    if (rule && rule.labels) parts.push(`pass: ${rule.labels.join(", ")}`);
    else if (rule && rule.at_least != null) parts.push(`pass ≥ ${rule.at_least}`);
    if (info.version) parts.push(`version ${info.version}${(info.versions || []).length > 1 ? ` (of ${info.versions.length})` : ""}`);
    return parts.join(" · ");
  }

  qualityMode(metric) {
    if (this.qualityModes.has(metric)) return this.qualityModes.get(metric);
    const watching = this.monitors.filter((m) => m.metric === metric);
    return watching.length && watching.every((m) => m.statistic === "pass_rate") ? "pass_rate" : "average";
  }

  renderQuality() {
    const metrics = this.metrics();
    const byMetric = this.violations.by_metric || {};
    const head = this.head("quality", "Generation quality");
    head.subtitle.textContent = `scores on each metric's scale (built-in: 1–5), latest evaluator version, per ${duration(this.bucket() / MINUTE)} · dashed red: monitor threshold · ▼ violated window`;
    if (!metrics.length) {
      keep(this.sections.quality, head, this.slot("quality-empty", () => h("div", { class: "empty" }, h("p", {},
        "This deployment has no judged metrics. Add an evaluation section to its deployment file (docs/deployments.md) to have answers scored."))));
      return;
    }
    const summary = this.slot("quality-summary", () => h("div", {}));
    fill(summary, h("table", { class: "table compact", id: "quality-summary" },
      h("thead", {}, h("tr", {}, ["Metric", "Average score", "Pass rate", "Samples", "Violations", "Violation rate", "Monitors"].map((x, i) => h("th", { class: i && i < 6 ? "num" : "" }, x)))),
      h("tbody", {}, metrics.map((metric) => {
        const q = this.total.quality[metric] || { samples: 0, average: null, pass_rate: null };
        const v = byMetric[metric];
        const watching = this.monitors.filter((m) => m.metric === metric);
        return h("tr", { dataset: { metric } },
          h("td", { class: "strong" }, metric, h("div", { class: "small muted", dataset: { field: "scale" } }, this.scaleNote(metric))),
          h("td", { class: "num", dataset: { field: "average" } }, score(q.average)),
          h("td", { class: "num", dataset: { field: "pass_rate" } }, pct(q.pass_rate)),
          h("td", { class: "num", dataset: { field: "samples" } }, int(q.samples)),
          h("td", { class: "num", dataset: { field: "violations" } }, v ? int(v.violations) : dash),
          h("td", { class: "num", dataset: { field: "violation_rate" } }, v ? `${pct(v.violation_rate)} of ${int(v.windows)} windows` : dash),
          h("td", {}, watching.length ? watching.map((m) => stateChip(m)) : h("span", { class: "muted small" }, "none")));
      }))));
    const grid = this.slot("quality-grid", () => h("div", { class: "grid-2" }));
    keep(grid, ...metrics.map((metric) => this.qualityPanel(metric)));
    const name = encodeURIComponent(this.name);
    const links = this.slot("quality-links", () => h("p", { class: "small" },
      h("a", { href: `#/agreement/${name}`, id: "agreement-link" }, "Judges against people"), " · ",
      h("a", { href: `#/rejudges/${name}` }, "Re-judges")));
    keep(this.sections.quality, head, summary, links, grid);
  }

  qualityPanel(metric) {
    const panel = this.slot(`quality-panel-${metric}`, () => {
      const buttons = [["average", "Average"], ["pass_rate", "Pass rate"]].map(([key, label]) =>
        h("button", { type: "button", class: "seg", dataset: { mode: key }, onclick: () => { this.qualityModes.set(metric, key); this.renderQuality(); } }, label));
      const note = h("p", { class: "small muted", hidden: true }, "No monitor watches this metric; add one to the deployment's monitors to get a threshold and alerts.");
      const element = h("div", { class: "subpanel", dataset: { qualityMetric: metric } },
        h("div", { class: "subpanel-head" }, h("h3", {}, metric), h("div", { class: "segmented small" }, buttons)),
        this.box(`quality-${metric}`), note);
      return Object.assign(element, { buttons, note });
    });
    const mode = this.qualityMode(metric);
    for (const button of panel.buttons) button.classList.toggle("active", button.dataset.mode === mode);
    panel.note.hidden = this.monitors.some((m) => m.metric === metric);
    const variants = this.variantNames();
    const value = (q) => (q ? (mode === "average" ? q.average : q.pass_rate) : null);
    const series = variants.map((v) => ({
      name: v, color: this.color(v),
      points: this.model.buckets(this.bucket(), (p) => (p.by_variant || {})[v]).map(([t, f]) => [t, f ? value(f.quality[metric]) : null]),
    }));
    if (variants.length > 1) {
      series.push({ name: "all variants", color: ALL_COLOR, dashed: true, points: this.buckets.map(([t, f]) => [t, f ? value(f.quality[metric]) : null]) });
    }
    const watching = this.monitors.filter((m) => m.metric === metric && m.statistic === mode);
    const levels = new Map();
    for (const m of watching) levels.set(m.threshold, [...(levels.get(m.threshold) || []), m.variant || "all variants"]);
    const [low, high] = this.scaleBounds(metric);
    const format = mode === "average" ? (v) => v.toFixed(high - low <= 1 ? 2 : 1) : (v) => pct(v, 0);
    const thresholds = [...levels].map(([level, who]) => ({ value: level, label: `threshold ${mode === "average" ? level : pct(level, 0)} · ${who.join(", ")}` }));
    const markers = (this.violations.violations || []).filter((w) => w.metric === metric && w.statistic === mode).map((w) => ({
      t: Date.parse(w.window_end), v: w.value,
      label: `${w.monitor_id}: ${mode === "average" ? score(w.value) : pct(w.value)} below ${mode === "average" ? w.threshold : pct(w.threshold, 0)} over ${clock(Date.parse(w.window_start))}–${clock(Date.parse(w.window_end))} (${int(w.sample_count)} samples)`,
    }));
    const q = this.total.quality[metric] || { samples: 0 };
    chart(this.box(`quality-${metric}`), { ...this.span(), kind: "line", series, thresholds, markers, format, label: `${metric} over time`,
      yMin: mode === "average" ? low : 0, yMax: mode === "average" ? high : 1,
      empty: q.samples ? "No scores for this metric in view." : `No ${metric} scores in this range yet: judged requests are scored seconds after they complete.` });
    return panel;
  }

  tile(key, label) {
    return this.slot(`tile-${key}`, () => {
      const parts = { value: h("div", { class: "tile-value" }), note: h("div", { class: "tile-note muted" }) };
      return Object.assign(h("div", { class: "tile", dataset: { tile: key } }, h("div", { class: "tile-label" }, label), parts.value, parts.note), { parts });
    });
  }

  renderOperations() {
    const t = this.total;
    const p = this.model.percentiles;
    const stale = this.model.live && this.model.percentilesStale;
    const latency = p.latency || {};
    const ttft = p.ttft || {};
    const steps = this.model.steps();
    const minuteSpan = { from: this.model.from, to: this.model.to, step: this.model.step };
    chart(this.box("ops-requests"), { ...this.span(), kind: "bars", label: "Requests and errors", series: [
      { name: "answered", color: "#93c5fd", points: this.buckets.map(([s, f]) => [s, f ? f.requests - f.errors : null]) },
      { name: "errors", color: ERROR_COLOR, points: this.buckets.map(([s, f]) => [s, f ? f.errors : null]) },
    ], empty: "No requests in this range." });
    const pick = (field, q) => steps.map(([s, point]) => [s, point && point[field] ? point[field][q] : null]);
    chart(this.box("ops-latency"), { ...minuteSpan, kind: "line", label: "Latency", format: ms, yMin: 0, series: [
      { name: "p50", color: "#2563eb", points: pick("latency_ms", "p50") },
      { name: "p95", color: "#d97706", points: pick("latency_ms", "p95") },
      { name: "p99", color: ERROR_COLOR, points: pick("latency_ms", "p99") },
    ], empty: "No responses in this range." });
    chart(this.box("ops-ttft"), { ...minuteSpan, kind: "line", label: "Time to first token", format: ms, yMin: 0, series: [
      { name: "p50", color: "#2563eb", points: pick("time_to_first_token_ms", "p50") },
      { name: "p95", color: "#d97706", points: pick("time_to_first_token_ms", "p95") },
    ], empty: "No streamed responses in this range: time to first token is measured on streamed requests (?stream=true)." });
    chart(this.box("ops-errors"), { ...this.span(), kind: "line", label: "Error rate", format: (v) => pct(v, 0), yMin: 0, yFloor: 0.05,
      series: [{ name: "error rate", color: ERROR_COLOR, points: this.buckets.map(([s, f]) => [s, f ? f.error_rate : null]) }],
      empty: "No responses in this range." });
    const head = this.head("operations", "Operations");
    fill(head.subtitle, stale
      ? [`Percentiles over the range as of ${clock(this.model.loadedAt, true)} (a percentile cannot be updated from per-minute figures; the charts are live) · `,
        h("button", { type: "button", class: "link", onclick: () => this.load().catch((e) => this.shell.fail(e)) }, "Recalculate")]
      : `latency and time to first token per ${duration(this.model.step / MINUTE)}, from merged histograms`);
    const note = stale ? `range, as of ${clock(this.model.loadedAt)}` : "over the range";
    const set = (key, label, value, text) => {
      const tile = this.tile(key, label);
      tile.parts.value.textContent = value;
      tile.parts.note.textContent = text;
      return tile;
    };
    const tiles = this.slot("ops-tiles", () => h("div", { class: "tiles" }));
    keep(tiles,
      set("requests", "Requests", int(t.requests), `${int(t.responses)} answered`),
      set("error_rate", "Error rate", pct(t.error_rate), `${int(t.errors)} errors`),
      set("latency_p50", "Latency p50", ms(latency.p50), note),
      set("latency_p95", "Latency p95", ms(latency.p95), note),
      set("latency_p99", "Latency p99", ms(latency.p99), note),
      set("ttft_p50", "Time to first token p50", ms(ttft.p50), note),
      set("ttft_p95", "Time to first token p95", ms(ttft.p95), note));
    const charts = this.slot("ops-charts", () => h("div", { class: "grid-2" },
      h("div", { class: "subpanel" }, h("h3", {}, "Request count"), this.box("ops-requests")),
      h("div", { class: "subpanel" }, h("h3", {}, "Latency p50 / p95 / p99"), this.box("ops-latency")),
      h("div", { class: "subpanel" }, h("h3", {}, "Time to first token p50 / p95"), this.box("ops-ttft")),
      h("div", { class: "subpanel" }, h("h3", {}, "Error rate"), this.box("ops-errors"))));
    keep(this.sections.operations, head, tiles, charts);
  }

  renderVariants() {
    const variants = this.variantNames();
    const head = this.head("variants", "Variants side by side");
    const body = this.slot("variants-body", () => h("div", { class: "table-scroll" }));
    keep(this.sections.variants, head, body);
    if (!variants.length) {
      head.subtitle.textContent = "";
      fill(body, h("div", { class: "empty" }, h("p", {}, "No variants seen yet: they appear with the deployment's first requests.")));
      return;
    }
    head.subtitle.textContent = "the same figures per variant; the best average score per metric in green; differences from the first variant with their 95% interval";
    const stale = this.model.live && this.model.percentilesStale;
    const weights = this.deployment.variants.reduce((sum, v) => sum + (v.weight || 0), 0);
    const weightOf = (v) => { const c = this.deployment.variants.find((x) => x.id === v); return c && c.weight != null && weights ? pct(c.weight / weights, 0) : dash; };
    const bucket = this.bucket();
    const trend = (v, pick, color) => svgBox("cell-spark", sparkline(this.model.buckets(bucket, (p) => (p.by_variant || {})[v]).map(([t, f]) => [t, f ? pick(f) : null]), color, 90, 22));
    const rows = [];
    const row = (key, label, cell, hint) => rows.push(h("tr", { dataset: { row: key } }, h("th", {}, label, hint ? h("div", { class: "small muted" }, hint) : null),
      variants.map((v) => h("td", { class: "num", dataset: { variant: v } }, cell(v, this.perVariant.get(v))))));
    row("weight", "Traffic weight", (v) => weightOf(v));
    row("requests", "Requests", (v, f) => [h("span", { class: "value" }, int(f ? f.requests : 0)), trend(v, (x) => x.requests, this.color(v))]);
    row("tokens", "Total tokens", (v, f) => int(f ? f.tokens.total : 0));
    row("prompt_tokens", "Prompt tokens", (v, f) => int(f ? f.tokens.prompt : 0));
    row("completion_tokens", "Completion tokens", (v, f) => int(f ? f.tokens.completion : 0));
    row("error_rate", "Error rate", (v, f) => pct(f ? f.error_rate : null));
    const pctl = (v, field, q) => { const p = this.model.variantPercentiles.get(v); return ms(p && p[field] ? p[field][q] : null); };
    const hint = stale ? `as of ${clock(this.model.loadedAt)}` : null;
    row("latency_p50", "Latency p50", (v) => pctl(v, "latency", "p50"), hint);
    row("latency_p95", "Latency p95", (v) => pctl(v, "latency", "p95"), hint);
    row("latency_p99", "Latency p99", (v) => pctl(v, "latency", "p99"), hint);
    row("ttft_p50", "Time to first token p50", (v) => pctl(v, "ttft", "p50"), hint);
    const monitorsBy = this.violations.monitors || [];
    for (const metric of this.metrics()) {
      const averages = variants.map((v) => { const f = this.perVariant.get(v); return f && f.quality[metric] ? f.quality[metric].average : null; });
      const best = Math.max(...averages.filter((a) => a != null));
      row(`quality-${metric}`, `${metric}: average score`, (v, f) => {
        const q = f && f.quality[metric];
        const a = q ? q.average : null;
        return [h("span", { class: "small muted" }, `${pct(q ? q.pass_rate : null, 0)} pass · ${int(q ? q.samples : 0)} scored `),
          h("span", { class: `value${a != null && a === best && variants.length > 1 ? " best" : ""}` }, score(a)),
          trend(v, (x) => (x.quality[metric] ? x.quality[metric].average : null), this.color(v))];
      });
      if (this.comparisons && this.comparisons.size) {
        const baseline = [...this.comparisons.values()][0].baseline;
        row(`difference-${metric}`, `${metric}: difference from ${baseline}`, (v) => {
          if (v === baseline) return h("span", { class: "muted" }, "baseline");
          const c = this.comparisons.get(v);
          const q = c && c.quality[metric];
          if (!q || !q.average_difference) return h("span", { class: "muted" }, q ? q.verdict : dash);
          const [low, high] = q.average_difference.interval;
          const signed = (x) => `${x > 0 ? "+" : ""}${x.toFixed(2)}`;
          return [h("span", { class: `value verdict-${q.verdict.replace(/ /g, "-")}`, dataset: { verdict: q.verdict } }, signed(q.average_difference.value)),
            h("div", { class: "small muted" }, `95%: ${signed(low)} to ${signed(high)} · ${q.verdict}`)];
        }, `95% interval, as of ${clock(this.loadedAt)}`);
      }
      if (monitorsBy.some((m) => m.metric === metric && m.variant)) {
        row(`violations-${metric}`, `${metric}: violated windows`, (v) => {
          const mine = monitorsBy.filter((m) => m.metric === metric && m.variant === v);
          if (!mine.length) return h("span", { class: "muted" }, "no variant monitor");
          const windows = mine.reduce((s, m) => s + m.windows, 0);
          const violated = mine.reduce((s, m) => s + m.violations, 0);
          return `${int(violated)} of ${int(windows)} (${pct(windows ? violated / windows : null, 0)})`;
        });
      }
    }
    fill(body, h("table", { class: "table variants", id: "variants-table" },
      h("thead", {}, h("tr", {}, h("th", {}, ""), variants.map((v) => h("th", { class: "num" }, h("span", { class: "dot-swatch", dataset: { color: this.color(v) } }), v)))),
      h("tbody", {}, rows)));
    paintSwatches(body);
  }
}

// Sets an element's children only when they differ (by identity and order), so kept elements
// are not moved (a move drops focus and hover).
function keep(element, ...children) {
  const wanted = children.flat().filter((c) => c != null && c !== false);
  const current = [...element.childNodes];
  if (wanted.length === current.length && wanted.every((c, i) => c === current[i])) return element;
  return fill(element, wanted);
}

function stateChip(monitor) {
  const what = monitor.statistic === "average" ? `average ≥ ${monitor.threshold}` : `pass rate ≥ ${pct(monitor.threshold, 0)}`;
  return h("span", { class: `chip state-${monitor.state}`, title: `${monitor.id}: ${what} over ${monitor.window}${monitor.variant ? ` for ${monitor.variant}` : ""}; ${monitor.state}${monitor.last_window ? `, last window ending ${dateTime(Date.parse(monitor.last_window.end))}` : ""}` },
    `${monitor.variant || "all"} · ${monitor.state}`);
}

// Colours come from the palette (never from data); set through the CSSOM, which the page's
// content security policy allows where inline style attributes are refused.
export function paintSwatches(root) {
  for (const swatch of root.querySelectorAll("[data-color]")) {
    if (swatch.classList.contains("dashed")) swatch.style.borderColor = swatch.dataset.color;
    else swatch.style.background = swatch.dataset.color;
  }
}
