// One job: state, timings, error, outputs, deliveries (progress, Retry), the
// webhook history and the log, tailed live. Cancel while the job is running.

import { api, logsFrom } from "./api.js";
import {
  ACTIVE,
  badge,
  formatBytes,
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
import { debounced, serial, subscribe } from "./live.js";
import {
  cancelDialog,
  deliveriesTable,
  filesList,
  historyTable,
  outputsList,
} from "./job_parts.js";

const PROGRESS_POLL_MS = 2000; // progress is recorded as it runs, without an event

function timings(job) {
  const rows = [
    ["Created", formatTime(job.created_at)],
    ["Started", formatTime(job.started_at)],
    ["Completed", formatTime(job.completed_at)],
    ["Duration", formatDuration(jobDuration(job))],
    [
      "Predict time",
      job.predict_time_s == null ? "—" : formatDuration(job.predict_time_s),
    ],
    ["First seen", formatTime(job.first_seen_at)],
    ["Last update", formatTime(job.updated_at)],
  ];
  return h(
    "dl",
    { class: "facts" },
    rows.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]),
  );
}

function section(title, id, ...content) {
  return h("section", { "aria-labelledby": id }, h("h2", { id }, title), ...content);
}

export async function showJob(view, jobId, signal) {
  const state = { job: null, logOffset: 0, logVersion: null };
  state.decoder = new TextDecoder();
  const head = h("div", { class: "job-head" });
  const notice = h("div", { role: "status", "aria-live": "polite" });
  const body = h("div", {});
  const log = h("pre", {
    id: "job-logs",
    class: "logs",
    tabindex: "0",
    "aria-label": "Job log",
  });
  const follow = h("input", { type: "checkbox", id: "follow-logs", checked: true });
  replace(
    view,
    h("p", { class: "crumbs" }, h("a", { href: "#/jobs" }, "← Jobs")),
    h("h1", {}, "Job ", h("code", {}, jobId)),
    head,
    notice,
    body,
    section(
      "Logs",
      "logs-title",
      h("label", { class: "inline" }, follow, " follow the end of the log"),
      log,
    ),
  );

  const confirmCancel = cancelDialog(() => {
    const button = head.querySelector("#cancel-job");
    if (button) cancel(button); // gone: the job ended while the dialog was open
  });
  view.append(confirmCancel.element);

  async function cancel(button) {
    button.disabled = true;
    replace(notice, message("info", "Cancelling…"));
    try {
      state.job = await api(`/api/jobs/${encodeURIComponent(jobId)}/cancel`, {
        method: "POST",
      });
      replace(notice, message("ok", `Cancel sent: the job is ${state.job.status}.`));
      render();
    } catch (error) {
      replace(notice, message("error", `Cancel failed: ${error.message}`));
      button.disabled = false;
    }
  }

  async function retry(task, button) {
    button.disabled = true;
    try {
      const updated = await api(`/api/deliveries/${task.id}/retry`, { method: "POST" });
      replace(
        notice,
        message(
          "ok",
          `Delivery ${task.id} (${task.destination}) was queued again; now ${updated.state}.`,
        ),
      );
      refresh();
    } catch (error) {
      replace(
        notice,
        message("error", `Retry of delivery ${task.id} failed: ${error.message}`),
      );
      button.disabled = false;
    }
  }

  function render() {
    if (signal.aborted) return; // a late answer for a page no longer shown
    const job = state.job;
    const shown = JSON.stringify(job);
    if (shown === state.shown) return; // nothing new: keep the page as it is
    state.shown = shown;
    keepFocus(view, () => draw(job));
  }

  function draw(job) {
    const actions = [];
    if (ACTIVE.includes(job.status)) {
      const button = h(
        "button",
        { type: "button", id: "cancel-job", class: "danger" },
        "Cancel job",
      );
      button.addEventListener("click", () => confirmCancel.ask());
      actions.push(button);
    }
    replace(
      head,
      h(
        "p",
        { class: "status-line" },
        badge(job.status),
        " ",
        h(
          "span",
          {},
          `${job.model || "unknown model"} · ${hardwareOf(job)} · ${formatMoney(job.cost)}`,
        ),
      ),
      actions.length ? h("div", { class: "actions" }, actions) : null,
    );
    const error = job.error
      ? section("Error", "error-title", h("pre", { class: "error-text" }, job.error))
      : null;
    replace(
      body,
      section("Timings", "timings-title", timings(job)),
      error,
      section(
        "Outputs",
        "outputs-title",
        outputsList(job.output),
        filesList(job.files, formatBytes),
      ),
      section("Deliveries", "deliveries-title", deliveriesTable(job.deliveries, retry)),
      section("Event history", "history-title", historyTable(job.history)),
    );
  }

  const loadJob = serial(async () => {
    try {
      state.job = await api(`/api/jobs/${encodeURIComponent(jobId)}`);
      render();
    } catch (error) {
      if (error.status === 404)
        replace(
          body,
          message(
            "info",
            "No such job (yet): it appears here when its first webhook arrives.",
          ),
        );
      else replace(body, message("error", `Could not read the job: ${error.message}`));
    }
  });

  // Starts over when the daemon replaced the log with a longer one that does not
  // extend it: the bytes after our offset would belong to another text.
  async function readLogs() {
    const found = await logsFrom(jobId, state.logOffset);
    const replaced =
      state.logVersion !== null &&
      (found.version !== state.logVersion || found.total < state.logOffset);
    if (!replaced) return found;
    state.logOffset = 0;
    state.decoder = new TextDecoder();
    log.replaceChildren();
    return await logsFrom(jobId, 0);
  }

  const loadLogs = serial(async () => {
    try {
      const { bytes, next, version } = await readLogs();
      state.logVersion = version;
      if (next < state.logOffset) return;
      state.logOffset = next;
      if (!bytes.length) return;
      log.append(state.decoder.decode(bytes, { stream: true }));
      if (follow.checked) log.scrollTop = log.scrollHeight;
    } catch (error) {
      if (error.status !== 404)
        replace(notice, message("error", `Could not read the log: ${error.message}`));
    }
  });

  const refresh = debounced(
    async () => {
      await Promise.all([loadJob(), loadLogs()]);
    },
    50,
    signal,
  );
  await Promise.all([loadJob(), loadLogs()]);
  if (signal.aborted) return;
  subscribe(`?job=${encodeURIComponent(jobId)}`, () => refresh(), signal);
  const poll = setInterval(() => {
    const running = state.job?.deliveries?.some((task) =>
      ["queued", "running"].includes(task.state),
    );
    if (running && document.visibilityState !== "hidden") refresh();
  }, PROGRESS_POLL_MS);
  signal.addEventListener("abort", () => clearInterval(poll), { once: true });
}
