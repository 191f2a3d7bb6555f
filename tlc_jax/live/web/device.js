// A device's page: #/device/{name}. Its metadata (GET /api/v1/devices/{name}: the API
// never returns credentials, only has_credentials), its latest frames with their
// predictions (GET .../frames?limit=, every few seconds; images fetched from
// /api/v1/frames/{id}/image) and a histogram of its frames' top classes over time
// (from the newest frames, at most MAX_FRAMES, re-read every minute).

import { api, apiBlob, seg } from "./api.js";
import { PENDING, fmtPercent, fmtTime, h, replace } from "./dom.js";
import { bucketFor, bucketLabel, classHistogram } from "./charts.js";
import { newestPrediction } from "./search.js";
import { ErrorBox, every, facts, statusLine } from "./ui.js";

const FAST_S = 3; // New frames and predictions.
const SLOW_S = 60; // The device's metadata and the histogram's frames, all re-read.
const SHOWN = 6; // Frames shown as images.
const RECENT = 24; // Frames re-read each fast refresh (predictions may come later).
const MAX_FRAMES = 1000; // The API's page size limit.
const WINDOWS = [
  ["loaded", `Newest ${MAX_FRAMES} frames`],
  ["3600", "Last hour"],
  ["86400", "Last 24 hours"],
  ["604800", "Last 7 days"],
];

function signature(frame) {
  return `${frame.id}:${frame.predictions.map((p) => `${p.model_version_id}/${p.created_at}`).join(",")}`;
}

export function render(main, params, name) {
  const controller = new AbortController();
  const signal = controller.signal;
  const errors = new ErrorBox();
  const frames = new Map(); // id -> frame, the newest MAX_FRAMES at most
  const cards = new Map(); // id -> {sig, element}
  const images = new Map(); // id -> object URL (or a pending promise)
  const models = new Map(); // model version id -> model version
  let newestModel = null;
  let truncated = false; // The last full read hit MAX_FRAMES.
  let paused = false;

  const title = h("h1", { tabindex: "-1", class: "device-name" }, name);
  const meta = h("div", { class: "meta", id: "device-meta" }, h("p", { class: "muted" }, "Loading…"));
  const grid = h("div", { class: "frames", id: "frames", "aria-live": "polite", "aria-relevant": "additions" });
  const status = statusLine("");
  const pause = h("input", { type: "checkbox", id: "pause" });
  const windowSelect = h("select", { id: "hist-window" },
    WINDOWS.map(([v, label]) => h("option", { value: v }, label)));
  const chart = h("div", { class: "chart", id: "histogram" });

  replace(main,
    h("p", { class: "crumbs" }, h("a", { href: "#/search" }, "← Search")),
    title,
    errors.element,
    h("section", { "aria-labelledby": "meta-h" }, h("h2", { id: "meta-h" }, "Device"), meta),
    h("section", { "aria-labelledby": "frames-h" },
      h("h2", { id: "frames-h" }, "Latest frames"),
      h("div", { class: "toolbar" }, status,
        h("label", { for: "pause", class: "inline" }, pause, " Pause auto-refresh")),
      grid),
    h("section", { "aria-labelledby": "hist-h" },
      h("h2", { id: "hist-h" }, "Top classes over time"),
      h("div", { class: "toolbar" }, h("label", { for: "hist-window" }, "Window "), windowSelect),
      chart));
  document.title = `${name} — tlc_jax live`;

  function renderMeta(d) {
    const where = [d.city, d.region, d.country].filter(Boolean).join(", ");
    const hasPoint = Number.isFinite(d.latitude) && Number.isFinite(d.longitude);
    const nearHref = hasPoint ? `#/search?${new URLSearchParams({ near: `${d.latitude},${d.longitude}`, km: "5" })}` : null;
    const paramNames = Object.keys(d.params || {}).sort();
    replace(meta, facts([
      ["Kind", d.kind],
      ["Active", d.active ? "yes" : "no (not polled)"],
      ["Place", where || "—"],
      ["Sector", d.sector || "—"],
      ["Coordinates", hasPoint ? [`${d.latitude.toFixed(5)}, ${d.longitude.toFixed(5)} `,
        h("a", { href: nearHref }, "devices near here")] : "—"],
      ["Poll interval", `${d.poll_interval_s} s`],
      // Parameter values are left out: URLs may embed tokens.
      ["Parameters", paramNames.length ? paramNames.join(", ") : "—"],
      ["Credentials", d.has_credentials ? "stored (never shown)" : "none"],
      ["Created", fmtTime(d.created_at)],
      ["Updated", fmtTime(d.updated_at)],
    ], { id: "device-facts" }));
  }

  async function loadModels() {
    const page = await api("model-versions", { limit: 100 }, { signal });
    for (const m of page.items) models.set(m.id, m);
    newestModel = page.items[0] || null;
  }

  function modelLabel(id) {
    const m = models.get(id);
    return m ? `${m.name} (step ${m.step}, #${id})` : `model #${id}`;
  }

  function loadImage(frame, img, box) {
    let url = images.get(frame.id);
    if (typeof url === "string") {
      img.src = url;
      return;
    }
    if (!url) {
      url = apiBlob(`frames/${frame.id}/image`, { signal }).then((blob) => {
        const objectUrl = URL.createObjectURL(blob);
        images.set(frame.id, objectUrl);
        return objectUrl;
      });
      images.set(frame.id, url);
    }
    url.then((u) => { img.src = u; }).catch((e) => {
      images.delete(frame.id);
      if (e.name === "AbortError") return;
      replace(box, h("p", { class: "error-text" }, `Image unavailable: ${e.message}`));
      if (e.status !== 404) errors.show("images", e);
    });
  }

  function card(frame, newest) {
    const box = h("div", { class: "image-box" });
    const img = h("img", { alt: `Frame ${frame.id} of ${name}, captured ${fmtTime(frame.captured_at)}`,
      width: frame.width || null, height: frame.height || null, decoding: "async" });
    box.append(img);
    loadImage(frame, img, box);
    const predictions = [...frame.predictions].sort((a, b) => b.model_version_id - a.model_version_id);
    return h("figure", { class: ["frame", newest ? "newest" : ""], dataset: { frameId: frame.id } },
      box,
      h("figcaption", {},
        h("p", { class: "frame-time" }, h("time", {}, fmtTime(frame.captured_at)),
          newest ? h("span", { class: "badge" }, "latest") : null,
          h("span", { class: "muted" }, ` · ${frame.width}×${frame.height} · #${frame.id}`)),
        predictions.length ? predictions.map((p) => h("div", { class: "prediction", dataset: { model: p.model_version_id } },
          h("p", { class: "model muted" }, modelLabel(p.model_version_id)),
          h("ol", { class: "topk", "aria-label": `Top classes, ${modelLabel(p.model_version_id)}` },
            p.topk.map((c, i) => h("li", { class: i === 0 ? "top" : "" },
              h("span", { class: "class-name" }, c.class_name),
              h("meter", { min: 0, max: 1, value: c.probability, "aria-label": `${c.class_name} probability` }),
              h("span", { class: "prob num" }, fmtPercent(c.probability)))))))
          : h("p", { class: "muted pending" }, "Not classified yet")));
  }

  function renderFrames() {
    const newest = [...frames.values()].sort((a, b) => b.captured_at - a.captured_at || b.id - a.id).slice(0, SHOWN);
    if (!newest.length) {
      replace(grid, h("p", { class: "muted" }, "No frames yet: they appear here as the device is polled."));
    } else {
      const elements = newest.map((f, i) => {
        const sig = `${signature(f)}:${i === 0}`;
        let entry = cards.get(f.id);
        if (!entry || entry.sig !== sig) {
          entry = { sig, element: card(f, i === 0) };
          cards.set(f.id, entry);
        }
        return entry.element;
      });
      const current = [...grid.children];
      if (current.length !== elements.length || current.some((el, i) => el !== elements[i])) {
        replace(grid, elements);
      }
    }
    const shown = new Set(newest.map((f) => f.id));
    for (const id of [...cards.keys()]) if (!shown.has(id)) cards.delete(id);
    for (const [id, url] of [...images]) {
      if (!shown.has(id) && typeof url === "string") {
        URL.revokeObjectURL(url);
        images.delete(id);
      }
    }
  }

  function renderHistogram() {
    const choice = windowSelect.value;
    const list = [...frames.values()];
    const entries = list.map((f) => ({ t: f.captured_at, cls: newestPrediction(f)?.top_class ?? PENDING }));
    let range, note = "";
    if (choice === "loaded") {
      if (!entries.length) {
        replace(chart, h("p", { class: "muted" }, "No frames yet."));
        return;
      }
      const times = entries.map((e) => e.t);
      range = [Math.min(...times), Math.max(...times)];
    } else {
      const now = Date.now() / 1000;
      range = [now - Number(choice), now];
    }
    const bucket = bucketFor(Math.max(1, range[1] - range[0]));
    if (truncated) {
      note = `Only the newest ${MAX_FRAMES} frames are counted (from ${fmtTime(Math.min(...entries.map((e) => e.t)))}).`;
    }
    const order = newestModel?.class_names || [];
    const { svg, legend, table, total } = classHistogram(entries, { range, bucket, order });
    replace(chart,
      h("p", { class: "muted" }, `${total} frame${total === 1 ? "" : "s"}, ${bucketLabel(bucket)} per bar; ` +
        "each frame counted under its newest model's top class. ", note),
      svg, legend, table);
  }

  function merge(items) {
    for (const f of items) frames.set(f.id, f);
    if (frames.size > MAX_FRAMES) {
      const keep = [...frames.values()].sort((a, b) => b.captured_at - a.captured_at).slice(0, MAX_FRAMES);
      frames.clear();
      for (const f of keep) frames.set(f.id, f);
    }
  }

  const askedFor = new Set(); // Model version ids looked up already (found or not).
  function unknownModels() {
    let unknown = false;
    for (const f of frames.values()) {
      for (const p of f.predictions) {
        if (!models.has(p.model_version_id) && !askedFor.has(p.model_version_id)) {
          askedFor.add(p.model_version_id);
          unknown = true;
        }
      }
    }
    return unknown;
  }

  async function full() {
    const device = await api(`devices/${seg(name)}`, {}, { signal });
    renderMeta(device);
    errors.clear("device");
    const choice = windowSelect.value;
    const since = choice === "loaded" ? null : Date.now() / 1000 - Number(choice);
    const page = await api(`devices/${seg(name)}/frames`, { limit: MAX_FRAMES, since }, { signal });
    truncated = page.next_offset !== null;
    frames.clear();
    merge(page.items);
    if (unknownModels() || !newestModel) await loadModels();
    renderFrames();
    renderHistogram();
  }

  async function recent() {
    const page = await api(`devices/${seg(name)}/frames`, { limit: RECENT }, { signal });
    merge(page.items);
    if (unknownModels()) await loadModels();
    renderFrames();
    renderHistogram();
    replace(status, `Auto-refresh every ${FAST_S} s · updated ${fmtTime(Date.now() / 1000).slice(11)}`);
  }

  let slow = null, fast = null;
  const onError = (source) => (e) => {
    errors.show(source, e);
    replace(status, `Refresh failed at ${fmtTime(Date.now() / 1000).slice(11)}; retrying.`);
  };
  slow = every(SLOW_S, async () => {
    if (paused) return;
    await full();
  }, { onError: onError("device"), onSuccess: () => errors.clear("device") });
  // The fast refresh starts after the first full read (it only adds to it).
  const startFast = setTimeout(() => {
    fast = every(FAST_S, async () => {
      if (paused) return;
      await recent();
    }, { onError: onError("frames"), onSuccess: () => errors.clear("frames") });
  }, FAST_S * 1000);

  pause.addEventListener("change", () => {
    paused = pause.checked;
    replace(status, paused ? "Auto-refresh paused." : "Auto-refresh resumed.");
    if (!paused) fast?.now();
  });
  windowSelect.addEventListener("change", () => full().catch(onError("device")));
  const onKey = () => {
    cards.clear();
    slow.now();
  };
  window.addEventListener("apikeychange", onKey);

  return () => {
    controller.abort();
    slow?.stop();
    fast?.stop();
    clearTimeout(startFast);
    window.removeEventListener("apikeychange", onKey);
    for (const url of images.values()) if (typeof url === "string") URL.revokeObjectURL(url);
  };
}
