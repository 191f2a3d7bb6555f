// DOM building without HTML parsing: every string becomes a text node or an attribute
// value (never innerHTML), so device names, cities and API messages cannot inject markup.

const SVG_NS = "http://www.w3.org/2000/svg";

function build(element, attrs, children) {
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "style" || key === "innerHTML" || key === "outerHTML") {
      throw new Error(`dom: "${key}" is not allowed (CSP, escaping)`);
    }
    if (key.startsWith("on") && typeof value === "function") {
      element.addEventListener(key.slice(2).toLowerCase(), value);
    } else if (key === "class") {
      element.setAttribute("class", Array.isArray(value) ? value.filter(Boolean).join(" ") : value);
    } else if (key === "dataset") {
      for (const [k, v] of Object.entries(value)) element.dataset[k] = String(v);
    } else if (key === "value" && "value" in element) {
      element.value = String(value);
    } else if (key === "checked" || key === "selected") {
      element[key] = Boolean(value);
    } else {
      element.setAttribute(key, value === true ? "" : String(value));
    }
  }
  append(element, children);
  return element;
}

/** Appends children: nodes as they are, strings and numbers as text, arrays flattened. */
export function append(parent, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    parent.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return parent;
}

/** An HTML element: h("a", {href: "#/x", class: "y"}, "text", otherNode). */
export function h(tag, attrs = {}, ...children) {
  return build(document.createElement(tag), attrs, children);
}

/** An SVG element. */
export function s(tag, attrs = {}, ...children) {
  return build(document.createElementNS(SVG_NS, tag), attrs, children);
}

/** Replaces an element's children. */
export function replace(parent, ...children) {
  parent.replaceChildren();
  return append(parent, children);
}

export function fmtTime(unixSeconds) {
  if (unixSeconds === null || unixSeconds === undefined) return "—";
  const d = new Date(unixSeconds * 1000);
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

export function fmtClock(unixSeconds) {
  return fmtTime(unixSeconds).slice(11);
}

export function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return "—";
  const s = Math.floor(seconds);
  const d = Math.floor(s / 86400), hh = Math.floor((s % 86400) / 3600);
  const mm = Math.floor((s % 3600) / 60), ss = s % 60;
  if (d) return `${d} d ${hh} h`;
  if (hh) return `${hh} h ${mm} min`;
  if (mm) return `${mm} min ${ss} s`;
  return `${seconds < 10 ? seconds.toFixed(1) : ss} s`;
}

export function fmtNumber(value, digits = 2) {
  if (value === null || value === undefined) return "—";
  if (typeof value !== "number") return String(value);
  if (Number.isInteger(value)) return value.toLocaleString("en-US");
  return value.toFixed(digits);
}

export function fmtPercent(p) {
  return `${(100 * p).toFixed(1)}%`;
}

export function fmtKm(km) {
  if (km === null || km === undefined) return "—";
  return km < 1 ? `${Math.round(km * 1000)} m` : `${km.toFixed(km < 10 ? 2 : 1)} km`;
}

/** Colours for classes (Okabe–Ito, then Tableau), stable for a given name list. */
const PALETTE = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00",
  "#F0E442", "#000000", "#8c564b", "#7f7f7f", "#bcbd22", "#17becf", "#9467bd", "#ff9896"];

export function classColour(name, order) {
  if (name === PENDING) return "#c8c8c8";
  let i = order ? order.indexOf(name) : -1;
  if (i < 0) {
    i = 0;
    for (const ch of name) i = (i * 31 + ch.codePointAt(0)) >>> 0;
  }
  return PALETTE[i % PALETTE.length];
}

export const PENDING = "(not classified yet)";

/** A device's page address (the name percent-encoded, so any printable name works). */
export function deviceHref(name) {
  return `#/device/${encodeURIComponent(name)}`;
}
