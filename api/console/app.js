// The router: hash routes to pages. Each page renders into <main> and may return a
// cleanup function (timers, open streams) that runs when the user leaves it.
import { api, clearKey, key, setKey } from "./api.js";
import { errorBox, h } from "./dom.js";
import { comparePage } from "./compare.js";
import { filesPage } from "./files.js";
import { jobPage } from "./job.js";
import { jobsPage } from "./jobs.js";
import { newJobPage } from "./new_job.js";
import { playgroundPage } from "./playground.js";

const view = document.getElementById("view");
const signOut = document.getElementById("sign-out");
let cleanup = null;

function signInPage(main) {
  const input = h("input", { id: "api-key", type: "password", required: true, autocomplete: "off" });
  const status = h("div");
  const form = h("form", { className: "card narrow", onsubmit: async (e) => {
    e.preventDefault();
    setKey(input.value.trim());
    status.replaceChildren();
    try {
      await api("/v1/methods");  // any authenticated read: is the key good?
      location.hash = "#/jobs";
    } catch (error) {
      clearKey();
      status.replaceChildren(errorBox(error));
    }
  } },
  h("h1", {}, "Sign in"),
  h("p", {}, "Paste an API key (", h("code", {}, "tunesmith keys create"),
    "). It stays in this tab only and is sent only to this server."),
  h("label", { htmlFor: "api-key" }, "API key"), input,
  h("button", { type: "submit" }, "Sign in"), status);
  main.append(form);
  input.focus();
}

const ROUTES = [
  [/^#\/files$/, filesPage],
  [/^#\/new$/, newJobPage],
  [/^#\/jobs$/, jobsPage],
  [/^#\/jobs\/([\w-]+)$/, jobPage],
  [/^#\/compare(?:\?ids=([\w,-]*))?$/, comparePage],
  [/^#\/playground$/, playgroundPage],
];

function route() {
  if (cleanup) { cleanup(); cleanup = null; }
  view.replaceChildren();
  signOut.hidden = !key();
  if (!key() || location.hash === "#/signin") { signInPage(view); return; }
  for (const a of document.querySelectorAll("nav a")) {
    if (location.hash.startsWith(a.getAttribute("href"))) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  for (const [pattern, page] of ROUTES) {
    const match = location.hash.match(pattern);
    if (match) { cleanup = page(view, ...match.slice(1)) || null; return; }
  }
  location.hash = "#/jobs";
}

signOut.addEventListener("click", () => { clearKey(); location.hash = "#/signin"; route(); });
window.addEventListener("hashchange", route);
route();
