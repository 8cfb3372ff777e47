// The jobs list: status, model, hardware, start, duration and cost, filtered by
// status, read again whenever the event stream says a job or delivery changed.

import { api } from "./api.js";
import {
  badge,
  formatDuration,
  formatMoney,
  formatTime,
  h,
  hardwareOf,
  jobDuration,
  keepFocus,
  message,
  replace,
} from "./dom.js";
import { debounced, subscribe } from "./live.js";

const STATUSES = ["starting", "processing", "succeeded", "failed", "canceled"];

function filterForm(current) {
  const select = h(
    "select",
    { id: "status-filter", name: "status" },
    h("option", { value: "" }, "All statuses"),
    STATUSES.map((s) => h("option", { value: s, selected: s === current }, s)),
  );
  select.addEventListener("change", () => {
    location.hash = select.value ? `#/jobs?status=${select.value}` : "#/jobs";
  });
  return h(
    "div",
    { class: "toolbar" },
    h("label", { for: "status-filter" }, "Status"),
    select,
  );
}

function jobRow(job) {
  const link = h("a", { href: `#/jobs/${encodeURIComponent(job.id)}` }, job.id);
  const cell = (label, ...content) => h("td", { "data-label": label }, ...content);
  return h(
    "tr",
    { "data-job": job.id },
    cell("Job", link),
    cell("Status", badge(job.status)),
    cell("Model", job.model || "—"),
    cell("Hardware", hardwareOf(job)),
    cell("Started", formatTime(job.started_at)),
    cell("Duration", formatDuration(jobDuration(job))),
    cell("Cost", formatMoney(job.cost)),
  );
}

function jobsTable(jobs) {
  const head = ["Job", "Status", "Model", "Hardware", "Started", "Duration", "Cost"];
  return h(
    "table",
    { class: "jobs" },
    h(
      "thead",
      {},
      h(
        "tr",
        {},
        head.map((name) => h("th", { scope: "col" }, name)),
      ),
    ),
    h("tbody", {}, jobs.map(jobRow)),
  );
}

const PAGE = 50; // rows added by "Show more"
const API_MAX = 500; // GET /api/jobs serves at most this many per call

// The newest `count` jobs (with `status`), read page by page; the answer is the
// last page's, holding all the jobs read, so `next_offset` is null at the end.
async function readJobs(status, count) {
  const jobs = [];
  const seen = new Set(); // a job that arrived meanwhile shifts the pages by one
  let offset = 0;
  for (;;) {
    const limit = Math.min(count - jobs.length, API_MAX);
    const query = new URLSearchParams({ limit: String(limit), offset: String(offset) });
    if (status) query.set("status", status);
    const page = await api(`/api/jobs?${query}`);
    for (const job of page.jobs) {
      if (!seen.has(job.id)) jobs.push(job);
      seen.add(job.id);
    }
    if (page.next_offset === null || jobs.length >= count || !page.jobs.length)
      return { ...page, jobs };
    offset = page.next_offset;
  }
}

export async function showJobs(view, params, signal) {
  const asked = params.get("status") || "";
  const status = STATUSES.includes(asked) ? asked : ""; // unknown: all of them
  const summary = h("p", { class: "summary", role: "status" });
  const list = h("div", { id: "jobs-list" }, message("info", "Loading…"));
  const more = h(
    "button",
    { type: "button", id: "more-jobs", hidden: true },
    "Show more",
  );
  replace(
    view,
    h("h1", {}, "Jobs"),
    filterForm(status),
    asked && !status
      ? message("info", `There is no status "${asked}": showing all jobs.`)
      : null,
    summary,
    list,
    h("div", { class: "actions" }, more),
  );
  let count = PAGE;
  more.addEventListener("click", () => {
    count += PAGE;
    refresh();
  });

  async function load() {
    try {
      const page = await readJobs(status, count);
      more.hidden = page.next_offset === null;
      replace(
        summary,
        `${page.total} job${page.total === 1 ? "" : "s"}`,
        ` · spend this period ${formatMoney(page.period_spend)}`,
      );
      keepFocus(list, () =>
        replace(
          list,
          page.jobs.length ? jobsTable(page.jobs) : message("info", "No jobs yet."),
        ),
      );
    } catch (error) {
      replace(list, message("error", `Could not read jobs: ${error.message}`));
    }
  }

  const refresh = debounced(load, 50, signal);
  await load();
  subscribe("", () => refresh(), signal);
}
