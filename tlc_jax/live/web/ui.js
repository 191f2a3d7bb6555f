// Page helpers: an error region that shows API errors (never swallowed), and periodic
// refreshes that never overlap and back off after errors.

import { backoff } from "./api.js";
import { h, replace } from "./dom.js";

/** A live region listing the current errors, one line per source ("frames", ...). */
export class ErrorBox {
  constructor() {
    this.element = h("div", { class: "errors", role: "alert", "aria-live": "assertive" });
    this.messages = new Map();
  }

  show(source, error) {
    if (error?.name === "AbortError") return;
    this.messages.set(source, error?.message || String(error));
    this.render();
  }

  clear(source) {
    if (this.messages.delete(source)) this.render();
  }

  render() {
    replace(this.element, [...this.messages].map(([source, message]) =>
      h("p", { class: "error", dataset: { source } }, h("strong", {}, `${source}: `), message)));
  }
}

/** Runs task now and then every `seconds` after it finished (longer after errors, as
 * the API's Retry-After says); paused while the page is hidden. */
export function every(seconds, task, { onError, onSuccess } = {}) {
  let timer = null, stopped = false, running = false, again = false;
  async function run() {
    clearTimeout(timer);
    timer = null;
    if (stopped) return;
    if (running) {
      again = true;
      return;
    }
    if (document.hidden) {
      timer = setTimeout(run, seconds * 1000);
      return;
    }
    running = true;
    let wait = seconds;
    try {
      await task();
      onSuccess?.();
    } catch (e) {
      if (e?.name !== "AbortError") {
        onError?.(e);
        wait = backoff(e, seconds);
      }
    } finally {
      running = false;
    }
    if (stopped) return;
    if (again) {
      again = false;
      wait = 0;
    }
    timer = setTimeout(run, wait * 1000);
  }
  const onVisible = () => { if (!document.hidden) run(); };
  document.addEventListener("visibilitychange", onVisible);
  run();
  return {
    now: run,
    stop() {
      stopped = true;
      clearTimeout(timer);
      document.removeEventListener("visibilitychange", onVisible);
    },
  };
}

/** A "label: value" description list from [label, value-or-node] pairs. */
export function facts(pairs, attrs = {}) {
  return h("dl", { class: "facts", ...attrs },
    pairs.filter(Boolean).map(([label, value]) => [h("dt", {}, label), h("dd", {}, value)]));
}

/** A small status line ("Updated 12:00:01 · refresh every 3 s"). */
export function statusLine(text) {
  return h("p", { class: "status muted" }, text);
}
