// The search page: #/search?text=...&near=LAT,LON&km=...&active=...&offset=...
// GET /api/v1/devices with those parameters; then, for the devices shown, their latest
// prediction from GET /api/v1/devices/{name}/latest (a few at a time).

import { api, seg } from "./api.js";
import { deviceHref, fmtKm, h, replace } from "./dom.js";
import { deviceMap } from "./map.js";
import { ErrorBox } from "./ui.js";

const PAGE = 25;
const PLACE_FIELDS = [
  ["text", "Any text (name, city, region, country, sector)"],
  ["city", "City (exact)"],
  ["region", "Region (exact)"],
  ["country", "Country (exact)"],
  ["sector", "Sector (exact)"],
];
const LATEST_AT_ONCE = 4;

/** The newest model version's prediction of a frame (predictions come oldest model
 * first). */
export function newestPrediction(frame) {
  const list = frame?.predictions || [];
  return list.length ? list.reduce((a, b) => (b.model_version_id > a.model_version_id ? b : a)) : null;
}

function parsePoint(text) {
  const parts = String(text || "").split(",").map((p) => p.trim());
  if (parts.length !== 2 || parts.some((p) => p === "")) return null;
  const [lat, lon] = parts.map(Number);
  if (!Number.isFinite(lat) || !Number.isFinite(lon) || Math.abs(lat) > 90 || Math.abs(lon) > 180) {
    return null;
  }
  return [lat, lon];
}

function field(id, label, input, hint) {
  return h("div", { class: "field" }, h("label", { for: id }, label), input,
    hint ? h("small", { class: "muted", id: `${id}-hint` }, hint) : null);
}

export function render(main, params) {
  const controller = new AbortController();
  const errors = new ErrorBox();
  const placeField = PLACE_FIELDS.find(([k]) => params.has(k))?.[0] || "text";
  const query = {
    place: params.get(placeField) || "",
    field: placeField,
    near: params.get("near") || "",
    km: params.get("km") || "",
    active: params.get("active") || "",
    offset: Math.max(0, Number(params.get("offset")) || 0),
  };

  const place = h("input", { id: "q-place", name: "place", type: "search", value: query.place,
    autocomplete: "off", placeholder: "e.g. Lafayette" });
  const which = h("select", { id: "q-field", name: "field" },
    PLACE_FIELDS.map(([k, label]) => h("option", { value: k, selected: k === query.field }, label)));
  const near = h("input", { id: "q-near", name: "near", value: query.near, inputmode: "decimal",
    autocomplete: "off", placeholder: "40.4237, -86.9212", "aria-describedby": "q-near-hint" });
  const km = h("input", { id: "q-km", name: "km", type: "number", min: "0.001", step: "any",
    value: query.km, placeholder: "10" });
  const active = h("select", { id: "q-active", name: "active" },
    [["", "Any"], ["true", "Active only"], ["false", "Inactive only"]].map(([v, label]) =>
      h("option", { value: v, selected: v === query.active }, label)));
  const formNote = h("p", { class: "note", id: "pick-note", "aria-live": "polite" });

  const form = h("form", { class: "search-form", role: "search", "aria-label": "Device search" },
    h("fieldset", {}, h("legend", {}, "Place"),
      field("q-place", "Place or text", place),
      field("q-field", "Match", which)),
    h("fieldset", {}, h("legend", {}, "Coordinates"),
      field("q-near", "Near (latitude, longitude)", near, "Or click the map to pick a point."),
      field("q-km", "Radius (km)", km)),
    h("fieldset", {}, h("legend", {}, "Filter"), field("q-active", "Status", active)),
    h("div", { class: "actions" },
      h("button", { type: "submit", id: "q-submit" }, "Search"),
      h("button", { type: "button", id: "q-clear", onclick: () => { location.hash = "#/search"; } },
        "Clear")),
    formNote);

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    errors.clear("search");
    const next = new URLSearchParams();
    const text = place.value.trim();
    if (text) next.set(which.value, text);
    const nearText = near.value.trim();
    if (nearText) {
      const point = parsePoint(nearText);
      if (!point) {
        errors.show("search", new Error("“Near” must be LATITUDE, LONGITUDE, e.g. 40.42, -86.91."));
        near.focus();
        return;
      }
      const radius = Number(km.value || "10");
      if (!(radius > 0)) {
        errors.show("search", new Error("The radius must be a positive number of kilometres."));
        km.focus();
        return;
      }
      next.set("near", point.join(","));
      next.set("km", String(radius));
    }
    if (active.value) next.set("active", active.value);
    const target = `#/search${next.toString() ? `?${next}` : ""}`;
    if (location.hash === target) run();
    else location.hash = target;
  });

  const summary = h("p", { class: "summary", id: "result-summary", "aria-live": "polite" });
  const list = h("div", { class: "results", id: "results" });
  const mapBox = h("div", { class: "map-box", id: "map" });
  const pager = h("nav", { class: "pager", "aria-label": "Result pages" });

  replace(main,
    h("h1", { tabindex: "-1" }, "Find devices"),
    errors.element,
    form,
    summary,
    h("div", { class: "search-layout" },
      h("section", { "aria-labelledby": "list-h" }, h("h2", { id: "list-h" }, "Devices"), list, pager),
      h("section", { "aria-labelledby": "map-h" }, h("h2", { id: "map-h" }, "Map"), mapBox)));

  const point = parsePoint(query.near);
  const radius = Number(query.km) || null;
  let lastItems = [];

  function drawMap(picked = null) {
    const { element, withCoordinates } = deviceMap({
      devices: lastItems, near: point && radius ? point : null, km: radius, picked,
      onPick(lat, lon) {
        near.value = `${lat.toFixed(5)}, ${lon.toFixed(5)}`;
        if (!km.value) km.value = radius ? String(radius) : "10";
        formNote.textContent = `Search point set to ${near.value} (radius ${km.value} km): press Search.`;
        drawMap([lat, lon]);
      },
    });
    const missing = lastItems.length - withCoordinates;
    replace(mapBox, element, h("p", { class: "muted map-note" },
      `${withCoordinates} device${withCoordinates === 1 ? "" : "s"} on the map` +
      (missing ? `; ${missing} without coordinates not shown.` : ".") +
      " Click an empty place to pick a search point; Tab moves between devices."));
  }

  async function latestOf(items, cells) {
    let next = 0;
    async function worker() {
      while (next < items.length && !controller.signal.aborted) {
        const i = next++;
        const cell = cells[i];
        try {
          const frame = await api(`devices/${seg(items[i].name)}/latest`, {}, { signal: controller.signal });
          const p = newestPrediction(frame);
          replace(cell, p ? [h("span", { class: "class-name" }, p.top_class), " ",
            h("span", { class: "muted" }, `${(100 * p.top_probability).toFixed(0)}%`)]
            : h("span", { class: "muted" }, "not classified yet"));
        } catch (e) {
          if (e.name === "AbortError") return;
          if (e.status === 404) replace(cell, h("span", { class: "muted" }, "no frames yet"));
          else {
            replace(cell, h("span", { class: "error-text", title: e.message }, "error"));
            errors.show("latest predictions", e);
          }
        }
      }
    }
    await Promise.all(Array.from({ length: LATEST_AT_ONCE }, worker));
  }

  async function run() {
    const request = { limit: PAGE, offset: query.offset, active: query.active };
    if (query.place) request[query.field] = query.place;
    if (query.near || query.km) {  // As given: the API explains what is wrong with them.
      request.near = query.near;
      request.km = query.km;
    }
    replace(summary, "Searching…");
    let page;
    try {
      page = await api("devices", request, { signal: controller.signal });
      errors.clear("search");
    } catch (e) {
      if (e.name === "AbortError") return;
      replace(summary, "The search failed.");
      replace(list);
      errors.show("search", e);
      lastItems = [];
      drawMap();
      return;
    }
    lastItems = page.items;
    const criteria = [query.place && `${query.field} “${query.place}”`,
      point && radius && `within ${fmtKm(radius)} of ${point.join(", ")}`,
      query.active && (query.active === "true" ? "active" : "inactive")].filter(Boolean);
    const shown = page.items.length;
    replace(summary, shown
      ? `Devices ${query.offset + 1}–${query.offset + shown}` +
        (criteria.length ? ` matching ${criteria.join(", ")}` : " (all devices, by name)") +
        (page.next_offset !== null ? "; more on the next page." : ".")
      : `No device matches${criteria.length ? ` ${criteria.join(", ")}` : ""}.`);

    const withDistance = page.items.some((d) => d.distance_km !== null && d.distance_km !== undefined);
    const cells = [];
    const rows = page.items.map((d) => {
      const cell = h("td", { class: "latest" }, h("span", { class: "muted" }, "…"));
      cells.push(cell);
      return h("tr", { dataset: { name: d.name } },
        h("th", { scope: "row" }, h("a", { href: deviceHref(d.name), class: "device-link" }, d.name)),
        h("td", {}, d.city || "—"),
        h("td", {}, [d.region, d.country].filter(Boolean).join(", ") || "—"),
        withDistance ? h("td", { class: "num" }, fmtKm(d.distance_km)) : null,
        h("td", {}, d.active ? "yes" : h("span", { class: "inactive-text" }, "no")),
        cell);
    });
    replace(list, shown ? h("table", { class: "devices" },
      h("caption", { class: "visually-hidden" }, "Matching devices"),
      h("thead", {}, h("tr", {},
        ["Name", "City", "Region / country", withDistance ? "Distance" : null, "Active",
          "Latest top class"].filter(Boolean).map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, rows)) : null);

    const link = (offset, label) => {
      const next = new URLSearchParams(params);
      if (offset) next.set("offset", String(offset));
      else next.delete("offset");
      return h("a", { href: `#/search?${next}`, class: "button" }, label);
    };
    replace(pager,
      query.offset > 0 ? link(Math.max(0, query.offset - PAGE), "← Previous") : null,
      page.next_offset !== null ? link(page.next_offset, "Next →") : null);
    drawMap();
    await latestOf(page.items, cells);
  }

  drawMap();
  run();
  const onKey = () => run();
  window.addEventListener("apikeychange", onKey);
  return () => {
    controller.abort();
    window.removeEventListener("apikeychange", onKey);
  };
}
