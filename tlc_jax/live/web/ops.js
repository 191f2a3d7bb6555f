// The operations page: #/ops. GET /api/v1/health every few seconds: the database, the
// live processes' run-time and analyzer figures (combined over every process that
// reports to the database), each process, counters, drops, queues, latencies and the
// failing devices with their last error.

import { api } from "./api.js";
import { deviceHref, fmtDuration, fmtNumber, fmtTime, h, replace } from "./dom.js";
import { ErrorBox, every, facts, statusLine } from "./ui.js";

const EVERY_S = 5;
const KNOWN = new Set(["time", "uptime_s", "devices_polled", "failing", "queues", "counters",
  "frames_per_s", "predictions_per_s", "latency_s", "model_version_id", "workers",
  "devices", "role", "devices_leased"]);

function workerTable(workers) {
  const cols = ["Process", "Role", "Host", "Heartbeat", "Up for", "Frames / s",
    "Predictions / s", "Failing", "Latency p95"];
  return h("table", { class: "workers", id: "workers" },
    h("caption", { class: "visually-hidden" }, "Live processes"),
    h("thead", {}, h("tr", {}, cols.map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, workers.map((w) => h("tr", { dataset: { worker: w.id } },
      h("th", { scope: "row" }, w.id),
      h("td", {}, w.role),
      h("td", {}, `${w.host} (pid ${w.pid})`),
      h("td", { class: ["num", w.heartbeat_age_s > 15 ? "warn" : ""] },
        `${fmtNumber(w.heartbeat_age_s, 1)} s ago`),
      h("td", { class: "num" }, fmtDuration(w.uptime_s)),
      h("td", { class: "num" }, fmtNumber(w.frames_per_s)),
      h("td", { class: "num" }, fmtNumber(w.predictions_per_s)),
      h("td", { class: ["num", w.failing ? "warn" : ""] }, fmtNumber(w.failing)),
      h("td", { class: "num" }, w.latency_s ? `${fmtNumber(w.latency_s.p95, 3)} s` : "—")))));
}

function badge(status) {
  return h("span", { class: ["badge", `status-${status}`], id: "health-status" }, status);
}

function counterTable(id, caption, entries, empty) {
  if (!entries.length) return h("p", { class: "muted", id }, empty);
  return h("table", { class: "counters", id },
    h("caption", {}, caption),
    h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Counter"), h("th", { scope: "col" }, "Value"))),
    h("tbody", {}, entries.map(([k, v]) => h("tr", { dataset: { counter: k } },
      h("th", { scope: "row" }, k), h("td", { class: ["num", v > 0 && k.startsWith("dropped") ? "warn" : ""] }, fmtNumber(v))))));
}

function renderService(service) {
  if (service === null || service === undefined) {
    return [h("p", { class: "note", id: "no-service" },
      "No live process has reported to this database in the last minute: start one with " +
      "python -m tlc_jax.live run.")];
  }
  if (service.error) {
    return [h("p", { class: "error", id: "service-error" }, h("strong", {}, "The service's health failed: "), service.error)];
  }
  const counters = Object.entries(service.counters || {});
  const drops = counters.filter(([k]) => k.startsWith("dropped"));
  const others = counters.filter(([k]) => !k.startsWith("dropped"));
  const failing = Object.entries(service.failing || {}).sort(([a], [b]) => a.localeCompare(b));
  const queues = service.queues || {};
  const latency = service.latency_s;
  const extra = Object.entries(service).filter(([k]) => !KNOWN.has(k));
  return [
    h("div", { class: "cards" },
      h("section", { class: "card", "aria-labelledby": "rt-h" }, h("h2", { id: "rt-h" }, "Run-time"),
        facts([
          ["Up for", fmtDuration(service.uptime_s)],
          ["Devices polled", fmtNumber(service.devices_polled)],
          ...(service.devices ? [["Devices active / leased",
            `${fmtNumber(service.devices.active)} / ${fmtNumber(service.devices.leased)}`]] : []),
          ["Failing", h("span", { class: failing.length ? "warn" : "" }, String(failing.length))],
          ["Frames stored / s", fmtNumber(service.frames_per_s)],
          ["Ingest queue", fmtNumber(queues.ingest)],
          ["Reported at", fmtTime(service.time)],
        ], { id: "runtime-facts" })),
      h("section", { class: "card", "aria-labelledby": "an-h" }, h("h2", { id: "an-h" }, "Analyzer"),
        facts([
          ["Model version", service.model_version_id != null ? `#${service.model_version_id}` : "none (not classifying)"],
          ["Predictions / s", fmtNumber(service.predictions_per_s)],
          ["Analyzer queue", fmtNumber(queues.analyzer)],
          ["Latency p50", latency ? `${fmtNumber(latency.p50, 3)} s` : "—"],
          ["Latency p95", latency ? `${fmtNumber(latency.p95, 3)} s` : "—"],
          ["Latency max", latency ? `${fmtNumber(latency.max, 3)} s (${fmtNumber(latency.n)} frames)` : "—"],
        ], { id: "analyzer-facts" }))),
    service.workers ? h("section", { "aria-labelledby": "workers-h" },
      h("h2", { id: "workers-h" }, `Processes (${service.workers.length})`),
      workerTable(service.workers)) : null,
    h("section", { "aria-labelledby": "fail-h" }, h("h2", { id: "fail-h" }, `Failing devices (${failing.length})`),
      failing.length ? h("table", { class: "failing", id: "failing" },
        h("caption", { class: "visually-hidden" }, "Failing devices and their last error"),
        h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Device"), h("th", { scope: "col" }, "Last error"))),
        h("tbody", {}, failing.map(([name, reason]) => h("tr", { dataset: { name } },
          h("th", { scope: "row" }, h("a", { href: deviceHref(name) }, name)),
          h("td", { class: "reason" }, reason == null ? "—" : String(reason))))))
        : h("p", { class: "muted", id: "failing" }, "No device is failing.")),
    h("div", { class: "cards" },
      h("section", { class: "card", "aria-labelledby": "drop-h" }, h("h2", { id: "drop-h" }, "Drops"),
        counterTable("drops", "Frames dropped by full queues", drops, "No drop counters reported.")),
      h("section", { class: "card", "aria-labelledby": "cnt-h" }, h("h2", { id: "cnt-h" }, "Counters"),
        counterTable("counters", "All other counters", others, "No counters reported."))),
    extra.length ? h("section", { "aria-labelledby": "extra-h" }, h("h2", { id: "extra-h" }, "Other"),
      h("pre", { class: "json" }, JSON.stringify(Object.fromEntries(extra), null, 2))) : null,
  ];
}

export function render(main) {
  const controller = new AbortController();
  const errors = new ErrorBox();
  const status = statusLine("");
  const body = h("div", { id: "health" }, h("p", { class: "muted" }, "Loading…"));
  replace(main, h("h1", { tabindex: "-1" }, "Operations"), errors.element, status, body);

  function draw(health) {
    const db = health.database || {};
    replace(body,
      h("p", { class: "overall" }, "Status: ", badge(health.status)),
      h("section", { "aria-labelledby": "db-h" }, h("h2", { id: "db-h" }, "Database"),
        facts([
          ["Reachable", db.ok ? "yes" : h("span", { class: "warn" }, "no")],
          ["Backend", db.backend || "—"],
          db.ok ? ["Schema revision", db.revision || "—"] : ["Error", db.error || "—"],
        ], { id: "db-facts" })),
      renderService(health.service));
  }

  const poller = every(EVERY_S, async () => {
    let health;
    try {
      health = await api("health", {}, { signal: controller.signal });
    } catch (e) {
      // 503 (database down) still carries the whole report: show it, and the error.
      if (e.status === 503 && e.body?.database) draw(e.body);
      throw e;
    }
    draw(health);
    replace(status, `Auto-refresh every ${EVERY_S} s · updated ${fmtTime(Date.now() / 1000).slice(11)}`);
  }, {
    onError: (e) => {
      errors.show("health", e);
      replace(status, `Refresh failed at ${fmtTime(Date.now() / 1000).slice(11)}; retrying.`);
    },
    onSuccess: () => errors.clear("health"),
  });
  document.title = "Operations — tlc_jax live";
  return () => {
    controller.abort();
    poller.stop();
  };
}
