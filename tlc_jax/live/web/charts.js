// A stacked bar chart of class counts per time bucket (SVG), with a legend and the same
// numbers as a table for screen readers.

import { PENDING, classColour, fmtClock, fmtTime, h, s } from "./dom.js";

const NICE_BUCKETS = [1, 5, 10, 30, 60, 300, 900, 1800, 3600, 3 * 3600, 6 * 3600,
  12 * 3600, 86400, 7 * 86400, 30 * 86400];

/** The smallest nice bucket size giving at most `maxBars` bars over `span` seconds. */
export function bucketFor(span, maxBars = 30) {
  return NICE_BUCKETS.find((b) => span / b <= maxBars) ?? NICE_BUCKETS.at(-1);
}

export function bucketLabel(seconds) {
  if (seconds % 86400 === 0) return `${seconds / 86400} d`;
  if (seconds % 3600 === 0) return `${seconds / 3600} h`;
  if (seconds % 60 === 0) return `${seconds / 60} min`;
  return `${seconds} s`;
}

/**
 * entries: [{t: unix seconds, cls: class name}]; range: [from, to] unix seconds;
 * bucket: seconds (buckets aligned on the Unix epoch, like the API's class counts);
 * order: class names in colour order.
 */
export function classHistogram(entries, { range, bucket, order = [], width = 1000, height = 260 }) {
  const first = Math.floor(range[0] / bucket), last = Math.floor(range[1] / bucket);
  const n = Math.max(1, last - first + 1);
  const counts = Array.from({ length: n }, () => new Map());
  const totals = new Map();
  let counted = 0;
  for (const { t, cls } of entries) {
    const i = Math.floor(t / bucket) - first;
    if (i < 0 || i >= n) continue;
    counted += 1;
    counts[i].set(cls, (counts[i].get(cls) || 0) + 1);
    totals.set(cls, (totals.get(cls) || 0) + 1);
  }
  const classes = [...totals.keys()].sort((a, b) => {
    if (a === PENDING) return 1;
    if (b === PENDING) return -1;
    const ia = order.indexOf(a), ib = order.indexOf(b);
    return (ia < 0 ? 1e9 : ia) - (ib < 0 ? 1e9 : ib) || a.localeCompare(b);
  });
  const peak = Math.max(1, ...counts.map((m) => [...m.values()].reduce((x, y) => x + y, 0)));
  const left = 40, right = 10, top = 10, bottom = 26;
  const plotW = width - left - right, plotH = height - top - bottom;
  const barW = plotW / n;
  const yOf = (v) => top + plotH - (v / peak) * plotH;
  const timeLabel = (t) => (range[1] - range[0] > 86400 ? fmtTime(t).slice(5, 16) : fmtClock(t).slice(0, 5));

  const bars = counts.map((m, i) => {
    const start = (first + i) * bucket;
    let acc = 0;
    const segments = classes.filter((c) => m.get(c)).map((c) => {
      const v = m.get(c);
      const y0 = yOf(acc), y1 = yOf(acc + v);
      acc += v;
      return s("rect", { x: left + i * barW + 1, y: y1, width: Math.max(1, barW - 2),
        height: Math.max(0.5, y0 - y1), fill: classColour(c, order), class: "segment",
        dataset: { cls: c, count: v } },
      s("title", {}, `${fmtTime(start)} + ${bucketLabel(bucket)}: ${c} ${v}`));
    });
    return s("g", { class: "bar" }, segments);
  });
  const ticks = [];
  const every = Math.max(1, Math.ceil(n / 6));
  for (let i = 0; i < n; i += every) {
    ticks.push(s("text", { x: left + i * barW, y: height - 8, class: "axis-label" },
      timeLabel((first + i) * bucket)));
  }
  const svg = s("svg", { viewBox: `0 0 ${width} ${height}`, class: "histogram", role: "img",
    "aria-label": `Top classes per ${bucketLabel(bucket)}: ` +
      (classes.length ? classes.map((c) => `${c} ${totals.get(c)}`).join(", ") : "no frames") },
  s("line", { x1: left, x2: width - right, y1: top + plotH, y2: top + plotH, class: "axis" }),
  s("line", { x1: left, x2: left, y1: top, y2: top + plotH, class: "axis" }),
  s("text", { x: left - 6, y: top + 10, class: "axis-label", "text-anchor": "end" }, String(peak)),
  s("text", { x: left - 6, y: top + plotH, class: "axis-label", "text-anchor": "end" }, "0"),
  bars, ticks);

  const legend = h("ul", { class: "legend", "aria-label": "Classes" }, classes.map((c) =>
    h("li", { dataset: { cls: c } },
      s("svg", { width: 12, height: 12, viewBox: "0 0 12 12", "aria-hidden": "true" },
        s("rect", { width: 12, height: 12, rx: 2, fill: classColour(c, order) })),
      h("span", { class: "class-name" }, c), " ", h("span", { class: "muted" }, String(totals.get(c))))));

  const table = h("details", { class: "data-table" }, h("summary", {}, "Numbers"),
    h("table", {}, h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "From"),
      classes.map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, counts.map((m, i) => (m.size ? h("tr", {},
      h("th", { scope: "row" }, fmtTime((first + i) * bucket)),
      classes.map((c) => h("td", { class: "num" }, String(m.get(c) || 0)))) : null)))));
  return { svg, legend, table, classes, total: counted };
}
