// The map view of search results: an inline SVG, equirectangular projection (longitudes
// scaled by the cosine of the middle latitude, so distances are true near the centre)
// fitted to the results and the search circle, with graticule, scale bar, the search
// circle and one link per device (keyboard focusable; Enter opens the device).

import { deviceHref, fmtKm, s } from "./dom.js";

const EARTH_RADIUS_KM = 6371.0088;
const KM_PER_DEGREE = (Math.PI * EARTH_RADIUS_KM) / 180;
const rad = (d) => (d * Math.PI) / 180;
const deg = (r) => (r * 180) / Math.PI;

/** The point `km` away from (lat, lon) along `bearing` degrees (great circle). */
export function destination(lat, lon, km, bearing) {
  const d = km / EARTH_RADIUS_KM, p1 = rad(lat), l1 = rad(lon), b = rad(bearing);
  const p2 = Math.asin(Math.sin(p1) * Math.cos(d) + Math.cos(p1) * Math.sin(d) * Math.cos(b));
  const l2 = l1 + Math.atan2(Math.sin(b) * Math.sin(d) * Math.cos(p1),
    Math.cos(d) - Math.sin(p1) * Math.sin(p2));
  return [deg(p2), ((deg(l2) + 540) % 360) - 180];
}

function niceStep(x) {
  const p = 10 ** Math.floor(Math.log10(x));
  for (const m of [1, 2, 5, 10]) if (m * p >= x) return m * p;
  return 10 * p;
}

/** A projection of [lat, lon] into a width x height box fitted to `points`. */
export function fit(points, width, height, pad = 28) {
  let lats = points.map((p) => p[0]), lons = points.map((p) => p[1]);
  if (!points.length) {
    lats = [-60, 75];
    lons = [-180, 180];
  }
  let [s0, n0] = [Math.min(...lats), Math.max(...lats)];
  let [w0, e0] = [Math.min(...lons), Math.max(...lons)];
  const minSpan = 0.01; // About a kilometre: one device alone is not zoomed in forever.
  if (n0 - s0 < minSpan) [s0, n0] = [(s0 + n0) / 2 - minSpan / 2, (s0 + n0) / 2 + minSpan / 2];
  if (e0 - w0 < minSpan) [w0, e0] = [(w0 + e0) / 2 - minSpan / 2, (w0 + e0) / 2 + minSpan / 2];
  const k = Math.max(0.1, Math.cos(rad((s0 + n0) / 2)));
  const scale = Math.min((width - 2 * pad) / ((e0 - w0) * k), (height - 2 * pad) / (n0 - s0));
  const cx = (w0 + e0) / 2, cy = (s0 + n0) / 2;
  const project = ([lat, lon]) => [width / 2 + (lon - cx) * k * scale,
    height / 2 - (lat - cy) * scale];
  const invert = ([x, y]) => [cy - (y - height / 2) / scale,
    cx + (x - width / 2) / (k * scale)];
  return { project, invert, scale, kmPerPixel: KM_PER_DEGREE / scale, width, height };
}

function graticule(proj) {
  const [north, west] = proj.invert([0, 0]);
  const [south, east] = proj.invert([proj.width, proj.height]);
  const step = niceStep(Math.max(north - south, east - west) / 5);
  const decimals = Math.max(0, -Math.floor(Math.log10(step)));
  const label = (v, pos, neg) => `${Math.abs(v).toFixed(decimals)}°${v >= 0 ? pos : neg}`;
  const lines = [];
  for (let lat = Math.ceil(south / step) * step; lat <= north; lat += step) {
    if (lat < -90 || lat > 90) continue;
    const [, y] = proj.project([lat, west]);
    lines.push(s("line", { x1: 0, x2: proj.width, y1: y, y2: y, class: "grid" }),
      s("text", { x: 4, y: y - 3, class: "grid-label" }, label(lat, "N", "S")));
  }
  for (let lon = Math.ceil(west / step) * step; lon <= east; lon += step) {
    const [x] = proj.project([north, lon]);
    lines.push(s("line", { x1: x, x2: x, y1: 0, y2: proj.height, class: "grid" }),
      s("text", { x: x + 3, y: proj.height - 4, class: "grid-label" },
        label(((lon + 540) % 360) - 180, "E", "W")));
  }
  return s("g", { class: "graticule", "aria-hidden": "true" }, lines);
}

function scaleBar(proj) {
  const km = niceStep((proj.width / 8) * proj.kmPerPixel);
  const length = km / proj.kmPerPixel;
  const x = proj.width - length - 16, y = 26;
  return s("g", { class: "scale-bar", role: "img", "aria-label": `Scale: ${fmtKm(km)}` },
    s("rect", { x: x - 8, y: y - 20, width: length + 16, height: 28, class: "scale-bg" }),
    s("path", { d: `M${x},${y - 4}v4h${length}v-4`, class: "scale-line" }),
    s("text", { x: x + length / 2, y: y - 5, class: "scale-label", "text-anchor": "middle" },
      fmtKm(km)));
}

function truncate(text, n) {
  return text.length > n ? `${text.slice(0, n - 1)}…` : text;
}

/**
 * devices: API items (name, latitude, longitude, city, active, distance_km);
 * near: [lat, lon] or null with km; picked: [lat, lon] or null;
 * onPick(lat, lon): a click on the map outside the devices.
 * Returns {element, withCoordinates}.
 */
export function deviceMap({ devices, near = null, km = null, picked = null, onPick = null,
  width = 640, height = 400 }) {
  const placed = devices.filter((d) => Number.isFinite(d.latitude) && Number.isFinite(d.longitude));
  const circle = near && km ? Array.from({ length: 73 }, (_, i) => destination(near[0], near[1], km, i * 5)) : [];
  const points = [...placed.map((d) => [d.latitude, d.longitude]), ...circle];
  if (picked) points.push(picked);
  const proj = fit(points, width, height);
  const layers = [s("rect", { x: 0, y: 0, width, height, class: "map-bg" }), graticule(proj)];

  if (circle.length) {
    const ring = circle.map((p) => proj.project(p).map((v) => v.toFixed(1)).join(",")).join(" ");
    const [cx, cy] = proj.project(near);
    layers.push(s("g", { class: "search-area" },
      s("title", {}, `Search circle: ${fmtKm(km)} around ${near[0]}, ${near[1]}`),
      s("polygon", { points: ring, class: "search-circle" }),
      s("path", { d: `M${cx - 6},${cy}h12M${cx},${cy - 6}v12`, class: "search-centre" })));
  }
  if (picked) {
    const [px, py] = proj.project(picked);
    layers.push(s("g", { class: "picked", "aria-hidden": "true" },
      s("circle", { cx: px, cy: py, r: 5 }),
      s("path", { d: `M${px - 10},${py}h20M${px},${py - 10}v20` })));
  }

  const labels = placed.length <= 40;
  const dots = placed.map((d) => {
    const [x, y] = proj.project([d.latitude, d.longitude]);
    const where = [d.city, d.country].filter(Boolean).join(", ");
    const text = [d.name, where, d.distance_km != null ? fmtKm(d.distance_km) : "",
      d.active ? "" : "inactive"].filter(Boolean).join(" — ");
    return s("a", { href: deviceHref(d.name), class: ["point", d.active ? "" : "inactive"],
      "aria-label": text, dataset: { name: d.name } },
    s("title", {}, text),
    s("circle", { cx: x, cy: y, r: 7, class: "hit" }),
    s("circle", { cx: x, cy: y, r: 5, class: "dot" }),
    labels ? s("text", { x: x > width * 0.7 ? x - 9 : x + 9, y: y + 4, class: "point-label",
      "text-anchor": x > width * 0.7 ? "end" : "start" }, truncate(d.name, 28)) : null);
  });
  layers.push(s("g", { class: "points" }, dots), scaleBar(proj));

  const svg = s("svg", {
    viewBox: `0 0 ${width} ${height}`, class: "map", role: "group",
    "aria-label": `Map of ${placed.length} device${placed.length === 1 ? "" : "s"}` +
      (onPick ? ". Click an empty place to use it as the search point." : ""),
  }, layers);
  if (onPick) {
    svg.addEventListener("click", (event) => {
      if (event.target.closest("a")) return;
      const ctm = svg.getScreenCTM();
      if (!ctm) return;
      const p = new DOMPoint(event.clientX, event.clientY).matrixTransform(ctm.inverse());
      const [lat, lon] = proj.invert([p.x, p.y]);
      onPick(Math.max(-90, Math.min(90, lat)), ((lon + 540) % 360) - 180);
    });
  }
  return { element: svg, withCoordinates: placed.length };
}
