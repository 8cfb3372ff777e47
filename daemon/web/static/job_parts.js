// The job page's parts: the tables of outputs, files, deliveries and webhook
// history, and the question asked before a cancel.

import { FAILED_DELIVERY, badge, formatTime, h, replace } from "./dom.js";

// A job's output is whatever the model returned: a URL, a list, an object...
export function outputsList(output) {
  if (output === null || output === undefined)
    return h("p", { class: "muted" }, "No output yet.");
  const items = [];
  const walk = (value, label) => {
    if (Array.isArray(value))
      value.forEach((item, i) => walk(item, label ? `${label}[${i}]` : `#${i + 1}`));
    else if (value && typeof value === "object") {
      for (const [key, item] of Object.entries(value))
        walk(item, label ? `${label}.${key}` : key);
    } else
      items.push(
        h(
          "li",
          {},
          label ? h("span", { class: "muted" }, `${label}: `) : null,
          h("code", { class: "wrap" }, String(value)),
        ),
      );
  };
  walk(output, "");
  return h("ul", { class: "outputs" }, items);
}

export function filesList(files, formatBytes) {
  if (!files || !files.length) return null;
  return h(
    "table",
    { class: "files" },
    h(
      "thead",
      {},
      h(
        "tr",
        {},
        ["File", "Size", "SHA-256", "Copied"].map((n) => h("th", { scope: "col" }, n)),
      ),
    ),
    h(
      "tbody",
      {},
      files.map((file) =>
        h(
          "tr",
          {},
          h("td", { "data-label": "File" }, file.name),
          h("td", { "data-label": "Size" }, formatBytes(file.size)),
          h(
            "td",
            { "data-label": "SHA-256" },
            h(
              "code",
              { class: "wrap" },
              file.sha256 ? file.sha256.slice(0, 16) + "…" : "—",
            ),
          ),
          h("td", { "data-label": "Copied" }, formatTime(file.completed_at)),
        ),
      ),
    ),
  );
}

function progress(task) {
  const done = Number(task.bytes_done || 0);
  const total = task.bytes_total == null ? null : Number(task.bytes_total);
  const label = `${task.destination} delivery progress`;
  if (total) {
    return h(
      "span",
      { class: "progress" },
      h("progress", { max: total, value: Math.min(done, total), "aria-label": label }),
      ` ${Math.floor((100 * Math.min(done, total)) / total)} %`,
    );
  }
  if (task.state === "succeeded") return h("span", {}, "done");
  return h("span", {}, done ? `${done} bytes` : "—");
}

export function deliveriesTable(tasks, onRetry) {
  if (!tasks || !tasks.length)
    return h(
      "p",
      { class: "muted" },
      "No deliveries: outputs are delivered once a job succeeds.",
    );
  const rows = tasks.map((task) => {
    let action = null;
    if (FAILED_DELIVERY.includes(task.state)) {
      action = h(
        "button",
        {
          type: "button",
          class: "retry",
          "data-task": task.id,
          "aria-label": `Retry ${task.destination} delivery ${task.id}`,
        },
        "Retry",
      );
      action.addEventListener("click", () => onRetry(task, action));
    }
    const why = [task.reason, task.message].filter(Boolean).join(": ");
    return h(
      "tr",
      { "data-task": task.id },
      h("td", { "data-label": "Destination" }, task.destination),
      h("td", { "data-label": "State" }, badge(task.state)),
      h("td", { "data-label": "Attempts" }, `${task.attempts} of ${task.max_attempts}`),
      h("td", { "data-label": "Progress" }, progress(task)),
      h("td", { "data-label": "Last error", class: "wrap" }, why || "—"),
      h("td", { "data-label": "" }, action),
    );
  });
  const head = ["Destination", "State", "Attempts", "Progress", "Last error", ""];
  return h(
    "table",
    { class: "deliveries" },
    h(
      "thead",
      {},
      h(
        "tr",
        {},
        head.map((n) => h("th", { scope: "col" }, n)),
      ),
    ),
    h("tbody", {}, rows),
  );
}

export function historyTable(history) {
  if (!history || !history.length)
    return h("p", { class: "muted" }, "No webhooks recorded.");
  const head = ["Received", "Kind", "Status", "Outcome", "Webhook id"];
  return h(
    "table",
    { class: "history" },
    h(
      "thead",
      {},
      h(
        "tr",
        {},
        head.map((n) => h("th", { scope: "col" }, n)),
      ),
    ),
    h(
      "tbody",
      {},
      history.map((item) =>
        h(
          "tr",
          {},
          h("td", { "data-label": "Received" }, formatTime(item.received_at)),
          h("td", { "data-label": "Kind" }, item.kind),
          h("td", { "data-label": "Status" }, badge(item.status)),
          h("td", { "data-label": "Outcome" }, item.outcome),
          h(
            "td",
            { "data-label": "Webhook id" },
            h("code", { class: "wrap" }, item.webhook_id),
          ),
        ),
      ),
    ),
  );
}

// Asks before cancelling: a modal dialog whose safe choice has the focus.
// `onConfirm` runs when "Cancel job" in it is chosen.
export function cancelDialog(onConfirm) {
  const dialog = h("dialog", {
    id: "cancel-dialog",
    "aria-labelledby": "cancel-title",
  });
  const choose = (value) => () => dialog.close(value);
  const keep = h(
    "button",
    { type: "button", id: "keep-job", onclick: choose("keep") },
    "Keep it running",
  );
  replace(
    dialog,
    h("h2", { id: "cancel-title" }, "Cancel this job?"),
    h("p", {}, "Replicate stops the job; a cancelled job cannot be resumed."),
    h(
      "div",
      { class: "actions" },
      keep,
      h(
        "button",
        {
          type: "button",
          id: "confirm-cancel",
          class: "danger",
          onclick: choose("cancel"),
        },
        "Cancel job",
      ),
    ),
  );
  dialog.addEventListener("close", () => {
    if (dialog.returnValue === "cancel") onConfirm();
  });
  return {
    element: dialog,
    ask() {
      dialog.returnValue = "";
      dialog.showModal();
      keep.focus();
    },
  };
}
