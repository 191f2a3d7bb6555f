// The single-page app: hash routes, the API key box, and unexpected errors shown on the
// page.
//   #/search?...        device search (list + map)       search.js
//   #/device/{name}     one device, its frames, classes  device.js
//   #/ops               the service's health             ops.js

import { getKey, setKey } from "./api.js";
import { h, replace } from "./dom.js";
import * as device from "./device.js";
import * as ops from "./ops.js";
import * as search from "./search.js";

const main = document.getElementById("main");
const globalErrors = document.getElementById("global-errors");
let cleanup = null;

function showGlobalError(message) {
  replace(globalErrors, h("p", { class: "error" }, h("strong", {}, "Error in this page: "), message,
    " ", h("button", { type: "button", onclick: () => replace(globalErrors) }, "Dismiss")));
}

window.addEventListener("error", (e) => showGlobalError(e.message || String(e.error)));
window.addEventListener("unhandledrejection", (e) => {
  if (e.reason?.name === "AbortError") return;
  showGlobalError(e.reason?.message || String(e.reason));
});

function route() {
  // In-page anchors (the skip link) are not routes: the page stays.
  if (route.started && location.hash && !location.hash.startsWith("#/")) return;
  const hash = location.hash.startsWith("#/") ? location.hash : "#/search";
  const [path, query = ""] = hash.slice(1).split(/\?(.*)/s);
  const params = new URLSearchParams(query);
  if (cleanup) {
    try {
      cleanup();
    } catch (e) {
      showGlobalError(e.message);
    }
    cleanup = null;
  }
  let page = "search";
  const deviceMatch = path.match(/^\/device\/(.+)$/);
  if (deviceMatch) {
    page = "device";
    let name;
    try {
      name = decodeURIComponent(deviceMatch[1]);
    } catch {
      name = deviceMatch[1];
    }
    cleanup = device.render(main, params, name);
  } else if (path === "/ops") {
    page = "ops";
    cleanup = ops.render(main, params);
  } else {
    document.title = "Search — tlc_jax live";
    cleanup = search.render(main, params);
  }
  for (const link of document.querySelectorAll("[data-nav]")) {
    if (link.dataset.nav === page) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  document.body.dataset.page = page;
  const heading = main.querySelector("h1");
  if (heading && route.started) heading.focus();
  route.started = true;
}

function keyBox() {
  const form = document.getElementById("key-form");
  const input = document.getElementById("key-input");
  const state = document.getElementById("key-state");
  const show = () => {
    const key = getKey();
    state.textContent = key ? "set" : "none";
    state.classList.toggle("set", Boolean(key));
    input.value = "";
    input.placeholder = key ? "A key is saved (hidden)" : "tlc_…";
  };
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const key = input.value.trim();
    if (key) setKey(key);
    show();
    document.getElementById("key-box").open = false;
  });
  document.getElementById("key-forget").addEventListener("click", () => {
    setKey("");
    show();
  });
  show();
}

document.querySelector(".skip").addEventListener("click", (event) => {
  event.preventDefault();
  (main.querySelector("h1") || main).focus();
});
keyBox();
window.addEventListener("hashchange", route);
route();
