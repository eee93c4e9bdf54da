// Time-series charts drawn as inline SVG: lines (with gaps), stacked bars, threshold lines
// and markers, a hover read-out. Each chart redraws at its container's width when it changes.

import { clock, compact, esc, h } from "./format.js";

const MARGIN = { left: 46, right: 14, top: 12, bottom: 24 };
const TICKS = [1, 2, 5, 10, 15, 30, 60, 120, 180, 360, 720, 1440].map((m) => m * 60_000);

const observer = new ResizeObserver((entries) => {
  for (const entry of entries) {
    const box = entry.target;
    if (box._spec && Math.abs(box.clientWidth - (box._drawnWidth || 0)) > 2) draw(box);
  }
});

// Draws `spec` into `box` (an element); call again with a new spec to update it.
//   spec = {from, to, step, kind: "line" | "bars", height, series: [{name, color, points: [[t, v]],
//           dashed}], yMin, yMax, format, thresholds: [{value, label, color}], markers: [{t, v, label}],
//           empty: "text shown when no series has a value"}
export function chart(box, spec) {
  box._spec = spec;
  box.classList.add("chart");
  if (!box._observed) {
    observer.observe(box);
    box._observed = true;
  }
  draw(box);
  return box;
}

function niceStep(range, count) {
  const raw = range / count;
  const power = 10 ** Math.floor(Math.log10(raw));
  const unit = [1, 2, 2.5, 5, 10].find((m) => m * power >= raw) || 10;
  return unit * power;
}

function yDomain(spec, values) {
  let low = spec.yMin != null ? spec.yMin : Math.min(0, ...values);
  let high = spec.yMax != null ? spec.yMax : Math.max(...values, ...(spec.thresholds || []).map((t) => t.value));
  if (spec.yFloor != null) high = Math.max(high, spec.yFloor);
  if (!Number.isFinite(high) || high <= low) high = low + 1;
  if (spec.yMax == null) {
    const step = niceStep(high - low, 4);
    high = Math.ceil((high * 1.05) / step) * step;
  }
  return [low, high];
}

function xTicks(from, to, width) {
  const wanted = Math.max(2, Math.floor(width / 90));
  const every = TICKS.find((t) => (to - from) / t <= wanted) || TICKS[TICKS.length - 1];
  const offset = new Date(from).getTimezoneOffset() * 60_000;
  const ticks = [];
  for (let t = Math.ceil((from - offset) / every) * every + offset; t <= to; t += every) ticks.push(t);
  return { ticks, days: every >= 1440 * 60_000 || to - from > 2 * 86_400_000 };
}

function draw(box) {
  const spec = box._spec;
  const width = Math.max(240, box.clientWidth || 600);
  box._drawnWidth = width;
  const height = spec.height || 180;
  const inner = { w: width - MARGIN.left - MARGIN.right, h: height - MARGIN.top - MARGIN.bottom };
  const step = spec.step || 60_000;
  const bars = spec.kind === "bars";
  const values = [];
  if (bars) {
    const stacks = new Map();
    for (const s of spec.series) for (const [t, v] of s.points) if (v != null) stacks.set(t, (stacks.get(t) || 0) + v);
    values.push(...stacks.values());
  } else {
    for (const s of spec.series) for (const [, v] of s.points) if (v != null) values.push(v);
  }
  for (const m of spec.markers || []) if (m.v != null) values.push(m.v);
  const [low, high] = yDomain(spec, values.length ? values : [0]);
  const x = (t) => MARGIN.left + ((t - spec.from) / (spec.to - spec.from)) * inner.w;
  const y = (v) => MARGIN.top + inner.h - ((v - low) / (high - low)) * inner.h;
  const format = spec.format || compact;
  const parts = [];

  // Grid and axes.
  const yStep = niceStep(high - low, 4);
  for (let v = Math.ceil(low / yStep) * yStep; v <= high + 1e-9; v += yStep) {
    parts.push(`<line class="grid" x1="${MARGIN.left}" x2="${width - MARGIN.right}" y1="${y(v)}" y2="${y(v)}"/>`);
    parts.push(`<text class="axis" x="${MARGIN.left - 6}" y="${y(v) + 4}" text-anchor="end">${esc(format(v))}</text>`);
  }
  const { ticks, days } = xTicks(spec.from, spec.to, inner.w);
  for (const t of ticks) {
    const label = days ? new Date(t).toLocaleDateString("en-GB", { day: "numeric", month: "short" }) + (new Date(t).getHours() || new Date(t).getMinutes() ? " " + clock(t) : "") : clock(t);
    parts.push(`<text class="axis" x="${x(t)}" y="${height - 6}" text-anchor="middle">${esc(label)}</text>`);
    parts.push(`<line class="tick" x1="${x(t)}" x2="${x(t)}" y1="${MARGIN.top + inner.h}" y2="${MARGIN.top + inner.h + 4}"/>`);
  }
  parts.push(`<line class="baseline" x1="${MARGIN.left}" x2="${width - MARGIN.right}" y1="${y(low)}" y2="${y(low)}"/>`);

  // Data.
  const center = (t) => x(t + step / 2);
  if (bars) {
    const barWidth = Math.max(1, (inner.w * step) / (spec.to - spec.from) - 1.5);
    const heights = new Map();
    for (const s of spec.series) {
      for (const [t, v] of s.points) {
        if (!v) continue;
        const base = heights.get(t) || 0;
        heights.set(t, base + v);
        parts.push(`<rect class="bar" fill="${s.color}" x="${center(t) - barWidth / 2}" width="${barWidth}" y="${y(base + v)}" height="${Math.max(0.5, y(base) - y(base + v))}"/>`);
      }
    }
  } else {
    const maxGap = (spec.maxGapSteps || 5) * step;
    for (const s of spec.series) {
      let path = "";
      let last = null;
      const lonely = [];
      const defined = s.points.filter(([, v]) => v != null);
      defined.forEach(([t, v], i) => {
        const joined = last != null && t - last <= maxGap;
        path += `${joined ? "L" : "M"}${center(t).toFixed(1)},${y(v).toFixed(1)}`;
        const next = defined[i + 1];
        if (!joined && !(next && next[0] - t <= maxGap)) lonely.push([t, v]);
        last = t;
      });
      if (path) parts.push(`<path class="line${s.dashed ? " dashed" : ""}" stroke="${s.color}" d="${path}"/>`);
      for (const [t, v] of defined.length <= 40 ? defined : lonely) {
        parts.push(`<circle class="dot" fill="${s.color}" cx="${center(t)}" cy="${y(v)}" r="2.6"/>`);
      }
    }
  }
  for (const threshold of spec.thresholds || []) {
    const ty = y(threshold.value);
    parts.push(`<line class="threshold" x1="${MARGIN.left}" x2="${width - MARGIN.right}" y1="${ty}" y2="${ty}"/>`);
    parts.push(`<text class="threshold-label" x="${MARGIN.left + 6}" y="${ty - 4}" text-anchor="start">${esc(threshold.label)}</text>`);
  }
  for (const marker of spec.markers || []) {
    if (marker.v == null || marker.t < spec.from || marker.t > spec.to) continue;
    const mx = x(marker.t);
    const my = y(marker.v);
    parts.push(`<path class="marker" d="M${mx - 5},${my - 9}L${mx + 5},${my - 9}L${mx},${my - 1}Z"><title>${esc(marker.label)}</title></path>`);
  }

  const hasData = values.length > 0 && (spec.series.some((s) => s.points.some(([, v]) => v != null)));
  box.replaceChildren();
  const svg = h("div", { class: "chart-svg" });
  svg.innerHTML = `<svg width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" role="img" aria-label="${esc(spec.label || "chart")}" data-series="${spec.series.length}" data-markers="${(spec.markers || []).length}" data-thresholds="${(spec.thresholds || []).length}">${parts.join("")}<line class="cursor" x1="0" x2="0" y1="${MARGIN.top}" y2="${MARGIN.top + inner.h}" visibility="hidden"/><rect class="hover" x="${MARGIN.left}" y="${MARGIN.top}" width="${inner.w}" height="${inner.h}"/></svg>`;
  if (spec.series.length > 1 || (spec.markers || []).length) {
    const legend = h("div", { class: "legend" }, spec.series.map((s) => h("span", { class: "legend-item" },
      h("span", { class: `key${s.dashed ? " dashed" : ""}`, dataset: { color: s.color } }), s.name)),
    (spec.markers || []).length ? h("span", { class: "legend-item warn" }, `▼ ${spec.markers.length} violated window${spec.markers.length === 1 ? "" : "s"}`) : null);
    for (const key of legend.querySelectorAll(".key")) key.style.setProperty("--c", key.dataset.color);
    box.append(legend);
  }
  box.append(svg);
  if (!hasData && spec.empty) box.append(h("div", { class: "chart-empty" }, spec.empty));
  const tip = h("div", { class: "tip", hidden: true });
  box.append(tip);
  hover(box, svg.querySelector("svg"), { spec, x, center, step, format, tip });
}

// The read-out follows the pointer, and survives a redraw (live data redraws a chart often).
function hover(box, svg, { spec, center, step, format, tip }) {
  const cursor = svg.querySelector(".cursor");
  const area = svg.querySelector(".hover");
  const times = [...new Set(spec.series.flatMap((s) => s.points.map(([t]) => t)))].sort((a, b) => a - b);
  if (!times.length) return;
  const byName = spec.series.map((s) => [s, new Map(s.points)]);
  const showAt = (px) => {
    let best = times[0];
    for (const t of times) if (Math.abs(center(t) - px) < Math.abs(center(best) - px)) best = t;
    const cx = center(best);
    cursor.setAttribute("x1", cx);
    cursor.setAttribute("x2", cx);
    cursor.setAttribute("visibility", "visible");
    const rows = byName.map(([s, points]) => h("div", { class: "tip-row" },
      h("span", { class: "swatch", dataset: { color: s.color } }), `${s.name}: `,
      h("b", {}, points.get(best) == null ? "–" : format(points.get(best)))));
    const markers = (spec.markers || []).filter((m) => m.t > best && m.t <= best + step).map((m) => h("div", { class: "tip-marker" }, `▼ ${m.label}`));
    const when = step > 60_000 ? `${clock(best)}–${clock(best + step)}` : clock(best);
    tip.replaceChildren(h("div", { class: "tip-time" }, when), ...rows, ...markers);
    for (const swatch of tip.querySelectorAll(".swatch")) swatch.style.background = swatch.dataset.color;
    tip.hidden = false;
    const width = box.clientWidth;
    const left = cx + 14 + tip.offsetWidth < width ? cx + 14 : Math.max(0, cx - 14 - tip.offsetWidth);
    tip.style.left = `${left}px`;
    tip.style.top = `${svg.getBoundingClientRect().top - box.getBoundingClientRect().top + 6}px`;
  };
  area.addEventListener("mousemove", (event) => {
    box._hoverPx = event.clientX - svg.getBoundingClientRect().left;
    showAt(box._hoverPx);
  });
  area.addEventListener("mouseleave", () => {
    box._hoverPx = null;
    tip.hidden = true;
    cursor.setAttribute("visibility", "hidden");
  });
  if (box._hoverPx != null) showAt(box._hoverPx);
}

// A small line without axes, for cards and table cells.
export function sparkline(points, color = "#2563eb", width = 120, height = 28) {
  const defined = points.filter(([, v]) => v != null);
  if (defined.length < 2) return `<svg class="spark" width="${width}" height="${height}"></svg>`;
  const t0 = points[0][0];
  const t1 = points[points.length - 1][0] || t0 + 1;
  const values = defined.map(([, v]) => v);
  const low = Math.min(...values);
  const high = Math.max(...values);
  const sx = (t) => 1 + ((t - t0) / (t1 - t0 || 1)) * (width - 2);
  const sy = (v) => (high === low ? height / 2 : height - 2 - ((v - low) / (high - low)) * (height - 4));
  const d = defined.map(([t, v], i) => `${i ? "L" : "M"}${sx(t).toFixed(1)},${sy(v).toFixed(1)}`).join("");
  return `<svg class="spark" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}"><path d="${d}" stroke="${color}"/></svg>`;
}
