// The dashboard's entry point: a hash router over three pages.
//   #/jobs[?status=S]   the jobs list
//   #/jobs/<id>         one job
//   #/settings          Replicate cloud settings
// Each page renders into <main> and returns a function that stops its live updates.

import { showJobs } from "./jobs.js";
import { showJob } from "./job.js";
import { showSettings } from "./settings.js";

const view = document.getElementById("view");
let leave = null;

function route() {
  const hash = location.hash.replace(/^#/, "") || "/jobs";
  const [path, query = ""] = hash.split("?");
  const params = new URLSearchParams(query);
  const parts = path.split("/").filter(Boolean);
  if (parts[0] === "settings")
    return { name: "settings", show: () => showSettings(view) };
  if (parts[0] === "jobs" && parts[1]) {
    const id = decodeURIComponent(parts.slice(1).join("/"));
    return { name: "jobs", show: () => showJob(view, id) };
  }
  return { name: "jobs", show: () => showJobs(view, params) };
}

async function navigate() {
  if (leave) leave();
  leave = null;
  const page = route();
  for (const link of document.querySelectorAll("[data-nav]")) {
    const current = link.dataset.nav === page.name;
    if (current) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  view.replaceChildren();
  leave = await page.show();
  const heading = view.querySelector("h1");
  if (heading) {
    heading.tabIndex = -1;
    heading.focus({ preventScroll: true });
  }
}

window.addEventListener("hashchange", navigate);
navigate();
