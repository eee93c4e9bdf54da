// Number, time and text formatting, and a tiny safe DOM builder. Pure; no state.

const integer = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });

export const dash = "–";

export function int(value) {
  return value == null ? dash : integer.format(Math.round(value));
}

// 1234 -> 1.2k, 2500000 -> 2.5M: for axes and small print, never for the cards.
export function compact(value) {
  if (value == null) return dash;
  const abs = Math.abs(value);
  if (abs >= 1e9) return `${trim(value / 1e9)}G`;
  if (abs >= 1e6) return `${trim(value / 1e6)}M`;
  if (abs >= 1e3) return `${trim(value / 1e3)}k`;
  if (abs >= 100 || Number.isInteger(value)) return integer.format(Math.round(value));
  return trim(value);
}

function trim(value) {
  return (Math.abs(value) >= 100 ? value.toFixed(0) : Math.abs(value) >= 10 ? value.toFixed(1) : value.toFixed(2))
    .replace(/\.0+$/, "").replace(/(\.\d*?)0+$/, "$1");
}

export function pct(value, digits = 1) {
  return value == null ? dash : `${(value * 100).toFixed(digits)}%`;
}

export function ms(value) {
  if (value == null) return dash;
  if (value === 0) return "0 ms";
  if (value < 10) return `${value.toFixed(1)} ms`;
  if (value < 1000) return `${value.toFixed(0)} ms`;
  return `${(value / 1000).toFixed(2)} s`;
}

export function score(value) {
  return value == null ? dash : value.toFixed(2);
}

export function clock(t, seconds = false) {
  const options = { hour: "2-digit", minute: "2-digit", hour12: false };
  if (seconds) options.second = "2-digit";
  return new Date(t).toLocaleTimeString("en-GB", options);
}

export function dateTime(t) {
  const d = new Date(t);
  return `${d.toLocaleDateString("en-CA")} ${clock(t, true)}`;
}

export function ago(t, now = Date.now()) {
  if (t == null) return "never";
  const seconds = Math.max(0, Math.round((now - t) / 1000));
  if (seconds < 60) return "just now";
  if (seconds < 3600) return `${Math.round(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.round(seconds / 3600)} h ago`;
  return `${Math.round(seconds / 86400)} d ago`;
}

export function duration(minutes) {
  if (minutes % 1440 === 0) return `${minutes / 1440} d`;
  if (minutes % 60 === 0) return `${minutes / 60} h`;
  return `${minutes} min`;
}

export function esc(text) {
  return String(text).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

// h("div", {class: "card", onclick: fn, dataset: {card: "x"}}, "text", child, [more children])
// Strings become text nodes, so data from the API is never parsed as HTML.
export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes || {})) {
    if (value == null || value === false) continue;
    if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else if (name === "dataset") Object.assign(element.dataset, value);
    else if (name === "class") element.className = value;
    else element.setAttribute(name, value === true ? "" : value);
  }
  append(element, children);
  return element;
}

function append(element, children) {
  for (const child of children) {
    if (child == null || child === false) continue;
    if (Array.isArray(child)) append(element, child);
    else element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

// Replaces an element's children; like h(), skips null and false and flattens arrays.
export function fill(element, ...children) {
  element.replaceChildren();
  append(element, children);
  return element;
}

// An element holding an SVG string that this code built (numbers and esc()'d labels only).
export function svgBox(className, svg) {
  const box = h("div", { class: className });
  box.innerHTML = svg;
  return box;
}
