// The trace view: a waterfall of a request's spans (the gateway's HTTP, flow and LLM spans, the
// processor's judge calls) on one time axis; a span's attributes, events and status on click.

import { api, paths } from "./api.js";
import { dateTime, h, ms } from "./format.js";

const SERVICE_COLORS = { gateway: "#2563eb", processor: "#7c3aed", aggregator: "#059669", llmsim: "#d97706" };

let open = null;

export async function openTrace(traceId) {
  if (open) open.close();
  const body = h("div", { class: "modal-body" }, h("div", { class: "loading" }, "Loading the trace…"));
  const close = () => {
    dialog.remove();
    document.removeEventListener("keydown", onKey);
    if (open && open.dialog === dialog) open = null;
  };
  const onKey = (event) => { if (event.key === "Escape") close(); };
  const dialog = h("div", { class: "modal-backdrop", onclick: (event) => { if (event.target === dialog) close(); } },
    h("div", { class: "modal", role: "dialog", "aria-modal": "true", "aria-label": "Trace", id: "trace" },
      h("div", { class: "modal-head" }, h("h2", {}, "Trace ", h("code", {}, traceId)),
        h("button", { type: "button", class: "close", "aria-label": "Close", onclick: close }, "×")),
      body));
  document.body.append(dialog);
  document.addEventListener("keydown", onKey);
  window.addEventListener("hashchange", close, { once: true });
  open = { dialog, close };
  try {
    const trace = await api(paths.trace(traceId));
    body.replaceChildren(waterfall(trace));
  } catch (error) {
    body.replaceChildren(h("div", { class: "empty" }, h("p", {}, error.status === 404
      ? "No span of this trace is stored yet. Spans reach the aggregator a few seconds after the request (judge spans after the judges answer); try again shortly. A request the gateway's trace sampler left out (OTEL_TRACES_SAMPLER, docs/proxy.md) has none."
      : `Could not read the trace: ${error.message}`)));
  }
}

function flatten(spans, depth = 0, out = []) {
  for (const span of spans) {
    out.push([span, depth]);
    flatten(span.children || [], depth + 1, out);
  }
  return out;
}

function waterfall(trace) {
  const rows = flatten(trace.roots);
  const t0 = Date.parse(trace.start_time);
  const total = Math.max(trace.duration_ms, 0.001);
  const detail = h("div", { class: "span-detail", id: "span-detail" }, h("p", { class: "muted" }, "Select a span to see its attributes."));
  const ticks = [0, 0.25, 0.5, 0.75, 1].map((f) => h("span", { class: "wf-tick", dataset: { left: String(f * 100) } }, ms(f * total)));
  let selected = null;
  const lines = rows.map(([span, depth]) => {
    const start = Math.max(0, Date.parse(span.start_time) - t0 + microseconds(span.start_time) - microseconds(trace.start_time));
    const left = (100 * start) / total;
    const width = Math.max(0.4, (100 * span.duration_ms) / total);
    const color = SERVICE_COLORS[span.service] || "#64748b";
    const judge = span.service === "processor" && /^chat /.test(span.name);
    const bar = h("div", { class: `wf-bar${span.status && span.status.code === "error" ? " error" : ""}`, dataset: { left: String(Math.min(left, 99.6)), width: String(Math.min(width, 100 - Math.min(left, 99.6))), color } });
    const label = h("span", { class: "wf-duration", dataset: { left: String(Math.min(left + width, 100)) } }, ms(span.duration_ms));
    const line = h("div", { class: "wf-row", dataset: { spanId: span.span_id, service: span.service || "", judge: judge ? "true" : "false" }, tabindex: "0" },
      h("div", { class: "wf-name", dataset: { depth: String(depth) } },
        h("span", { class: "svc", dataset: { color } }, span.service || "?"),
        h("span", { class: "wf-span-name", title: span.name }, span.name),
        judge ? h("span", { class: "chip tiny" }, "judge") : null,
        verdicts(span),
        span.orphan ? h("span", { class: "chip tiny warn", title: "its parent span is not stored (yet)" }, "orphan") : null),
      h("div", { class: "wf-track" }, bar, label));
    const choose = () => {
      if (selected) selected.classList.remove("selected");
      selected = line;
      line.classList.add("selected");
      detail.replaceChildren(spanDetail(span));
    };
    line.addEventListener("click", choose);
    line.addEventListener("keydown", (event) => { if (event.key === "Enter") choose(); });
    return line;
  });
  const root = h("div", { class: "trace" },
    h("div", { class: "trace-meta muted" },
      `${trace.span_count} span${trace.span_count === 1 ? "" : "s"} · ${ms(trace.duration_ms)} · services: ${trace.services.join(", ")} · started ${dateTime(t0)}`,
      trace.truncated ? h("span", { class: "warn" }, " · truncated") : null),
    h("div", { class: "waterfall", id: "waterfall" },
      h("div", { class: "wf-row wf-axis" }, h("div", { class: "wf-name muted small" }, "Span"), h("div", { class: "wf-track" }, ticks)),
      lines),
    detail);
  // Positions and colours through the CSSOM (the page's policy refuses inline style attributes).
  for (const el of root.querySelectorAll("[data-left]")) el.style.left = `${el.dataset.left}%`;
  for (const el of root.querySelectorAll("[data-width]")) el.style.width = `${el.dataset.width}%`;
  for (const el of root.querySelectorAll("[data-color]")) el.style.setProperty("--c", el.dataset.color);
  for (const el of root.querySelectorAll("[data-depth]")) el.style.paddingLeft = `${8 + 16 * Number(el.dataset.depth)}px`;
  if (lines.length) lines[0].click();
  return root;
}

// A judge span's scores, from its gen_ai.evaluation.result events: "relevance 5".
function verdicts(span) {
  return (span.events || []).filter((e) => e.name === "gen_ai.evaluation.result").map((e) => {
    const a = e.attributes || {};
    const value = a["gen_ai.evaluation.score.value"];
    return h("span", { class: "chip tiny verdict", title: a["gen_ai.evaluation.explanation"] || "" },
      `${a["gen_ai.evaluation.name"] || "score"} ${value == null ? "" : Number(value)}`);
  });
}

// Date.parse keeps milliseconds only; spans of a few microseconds still need their place.
function microseconds(iso) {
  const match = /\.(\d+)/.exec(iso);
  return match ? (Number((match[1] + "000000").slice(0, 6)) % 1000) / 1000 : 0;
}

function value(v) {
  return typeof v === "string" ? v : JSON.stringify(v);
}

function attributeTable(attributes) {
  const entries = Object.entries(attributes || {}).sort(([a], [b]) => a.localeCompare(b));
  if (!entries.length) return h("p", { class: "muted" }, "none");
  return h("table", { class: "table compact attributes" }, h("tbody", {}, entries.map(([k, v]) =>
    h("tr", {}, h("td", { class: "attr-key" }, k), h("td", {}, h("code", {}, value(v)))))));
}

function spanDetail(span) {
  const status = span.status || {};
  const events = span.events || [];
  return h("div", {},
    h("h3", {}, span.name),
    h("dl", { class: "pairs" },
      h("dt", {}, "Service"), h("dd", {}, span.service || "–"),
      h("dt", {}, "Kind"), h("dd", {}, span.kind || "–"),
      h("dt", {}, "Start"), h("dd", {}, span.start_time),
      h("dt", {}, "Duration"), h("dd", {}, ms(span.duration_ms)),
      h("dt", {}, "Status"), h("dd", { class: status.code === "error" ? "bad" : "" }, `${status.code || "unset"}${status.message ? `: ${status.message}` : ""}`),
      h("dt", {}, "Span id"), h("dd", {}, h("code", {}, span.span_id)),
      span.parent_span_id ? [h("dt", {}, "Parent"), h("dd", {}, h("code", {}, span.parent_span_id))] : null),
    h("h4", {}, `Attributes (${Object.keys(span.attributes || {}).length})`),
    attributeTable(span.attributes),
    events.length ? h("h4", {}, `Events (${events.length})`) : null,
    events.map((e) => h("div", { class: "event" },
      h("div", { class: "strong" }, e.name || "event", h("span", { class: "muted small" }, e.time ? ` ${e.time}` : "")),
      attributeTable(e.attributes))));
}
