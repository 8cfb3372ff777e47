// The dashboard's entry point: a hash router over three pages.
//   #/jobs[?status=S]   the jobs list
//   #/jobs/<id>         one job
//   #/settings          Replicate cloud settings
// Each page renders into <main> and gets an AbortSignal that ends its live
// updates (event stream, timers) when another page replaces it. Every
// navigation aborts the one before, even while that page is still loading.

import { showJobs } from "./jobs.js";
import { showJob } from "./job.js";
import { showSettings } from "./settings.js";
import { h, replace } from "./dom.js";
import { setState } from "./live.js";

const view = document.getElementById("view");
let current = null; // the AbortController of the page being shown

function showNotFound(hash) {
  setState("not live", false);
  replace(
    view,
    h("h1", {}, "Not found"),
    h("p", {}, "There is no page at ", h("code", { class: "wrap" }, hash), "."),
    h("p", {}, h("a", { href: "#/jobs" }, "Go to the jobs list")),
  );
}

// The page for the current hash; a hash no page owns, or one that cannot be
// decoded, gets the "not found" page.
function route() {
  const hash = location.hash.replace(/^#/, "") || "/jobs";
  const [path, query = ""] = hash.split("?");
  const params = new URLSearchParams(query);
  const parts = path.split("/").filter(Boolean);
  const notFound = { name: null, show: () => showNotFound(`#${hash}`) };
  if (parts.length === 1 && parts[0] === "settings")
    return { name: "settings", show: (signal) => showSettings(view, signal) };
  if (parts[0] === "jobs" && parts.length > 1) {
    let id;
    try {
      id = decodeURIComponent(parts.slice(1).join("/"));
    } catch {
      return notFound; // a broken %-escape: no job has that id
    }
    return { name: "jobs", show: (signal) => showJob(view, id, signal) };
  }
  if (parts.length === 0 || (parts.length === 1 && parts[0] === "jobs"))
    return { name: "jobs", show: (signal) => showJobs(view, params, signal) };
  return notFound;
}

async function navigate() {
  current?.abort();
  const navigation = new AbortController();
  current = navigation;
  const page = route();
  for (const link of document.querySelectorAll("[data-nav]")) {
    const here = link.dataset.nav === page.name;
    if (here) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  view.replaceChildren();
  await page.show(navigation.signal);
  if (navigation.signal.aborted) return; // another page took over meanwhile
  const heading = view.querySelector("h1");
  if (heading) {
    heading.tabIndex = -1;
    heading.focus({ preventScroll: true });
  }
}

window.addEventListener("hashchange", navigate);
navigate();
