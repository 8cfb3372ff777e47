// Cloud settings for Replicate: token check, status, webhook address and
// allowlists, cost limit with spend so far, and where trained models are published.
// Saving sends the changed keys to PUT /api/cloud/providers/replicate; a refused
// value is shown next to its field.

import { api } from "./api.js";
import { formatMoney, h, message, replace } from "./dom.js";
import { debounced, subscribe } from "./live.js";
import { spendChart } from "./chart.js";
import { fieldId, readForm, settingsForm, writeForm } from "./settings_form.js";

const SETTINGS_PATH = "/api/cloud/providers/replicate";

function statusIndicator(found) {
  const indicator = found?.indicator || "unknown";
  return h(
    "span",
    { class: `status-dot status-${indicator}`, id: "replicate-status" },
    `Replicate status: ${found?.description || indicator}`,
  );
}

async function validate(button, output) {
  button.disabled = true;
  replace(output, "Checking the token…");
  try {
    const account = await api("/api/cloud/replicate/validate");
    const who =
      account.name && account.name !== account.username ? ` (${account.name})` : "";
    replace(
      output,
      message("ok", `Token valid: account ${account.username}${who}, ${account.type}.`),
    );
  } catch (error) {
    replace(
      output,
      message("error", `Token check failed (${error.code}): ${error.message}`),
    );
  } finally {
    button.disabled = false;
  }
}

function spendLine(report) {
  const period = report.period;
  const days = report.by_day || [];
  const first = days.length ? days[0].date : period.start.slice(0, 10);
  const last = days.length ? days[days.length - 1].date : period.end.slice(0, 10);
  const dates = `${first} to ${last}, ${period.time_zone}`; // the end is exclusive
  const limit = report.limit
    ? ` of ${formatMoney(report.limit.amount)} (${report.limit.action}); ${formatMoney(report.remaining)} left`
    : " (no limit)";
  const over = report.over_limit ? " — over the limit" : "";
  return `${formatMoney(report.spend)} spent this ${period.name} period (${dates})${limit}${over}`;
}

// Changed top-level keys only; nested objects go whole when any part changed.
function changes(before, after) {
  const sent = {};
  for (const key of Object.keys(after)) {
    if (JSON.stringify(before?.[key]) !== JSON.stringify(after[key]))
      sent[key] = after[key];
  }
  return sent;
}

function clearErrors(form) {
  for (const element of form.querySelectorAll(".field-error")) element.textContent = "";
  for (const element of form.querySelectorAll("[aria-invalid]"))
    element.removeAttribute("aria-invalid");
}

function showFieldError(form, error, fallback) {
  const input = error.field ? form.querySelector(`#${fieldId(error.field)}`) : null;
  const slot = error.field
    ? form.querySelector(`#${fieldId(error.field)}-error`)
    : null;
  if (input && slot) {
    // The field is named by its place already: "webhook_allowed_ips: bad CIDR"
    // reads "bad CIDR" under the allowlist.
    const prefix = `${error.field}: `;
    const text = error.message.startsWith(prefix)
      ? error.message.slice(prefix.length)
      : error.message;
    slot.textContent = text;
    input.setAttribute("aria-invalid", "true");
    input.focus();
  } else {
    replace(fallback, message("error", `Not saved (${error.code}): ${error.message}`));
  }
}

export async function showSettings(view, signal) {
  const validateButton = h(
    "button",
    { type: "button", id: "validate" },
    "Validate token",
  );
  const validateResult = h("div", {
    id: "validate-result",
    role: "status",
    "aria-live": "polite",
  });
  validateButton.addEventListener("click", () =>
    validate(validateButton, validateResult),
  );
  const status = h("p", {}, statusIndicator(null));
  const spend = h("p", { id: "spend", role: "status" });
  const chart = h("div", { class: "chart-box" });
  const form = settingsForm(spend, chart);
  const formNotice = h("div", {
    id: "save-result",
    role: "status",
    "aria-live": "polite",
  });
  replace(
    view,
    h("h1", {}, "Cloud settings"),
    h(
      "section",
      { "aria-labelledby": "account-title" },
      h("h2", { id: "account-title" }, "Replicate account"),
      h("div", { class: "actions" }, validateButton),
      validateResult,
      status,
    ),
    formNotice,
    form,
  );
  let loaded = null;

  async function loadBilling() {
    try {
      const report = await api("/api/cloud/replicate/billing");
      replace(spend, spendLine(report));
      const today = new Date().toLocaleDateString("en-CA", {
        timeZone: report.period.time_zone,
      });
      replace(chart, spendChart(report.by_day, today));
    } catch (error) {
      replace(spend, message("error", `Could not read spend: ${error.message}`));
    }
  }

  async function loadSettings() {
    try {
      loaded = await api(SETTINGS_PATH);
      writeForm(form, loaded);
      form.querySelector("#save-settings").disabled = false;
    } catch (error) {
      const missing = error.status === 404 || error.status === 405;
      replace(
        formNotice,
        message(
          "error",
          missing
            ? `This daemon does not offer provider settings (${SETTINGS_PATH}: ${error.status}).`
            : `Could not read the settings: ${error.message}`,
        ),
      );
    }
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors(form);
    const body = changes(loaded?.settings, readForm(form));
    if (!Object.keys(body).length) {
      replace(formNotice, message("info", "Nothing changed."));
      return;
    }
    const button = form.querySelector("#save-settings");
    button.disabled = true;
    try {
      loaded = await api(SETTINGS_PATH, { method: "PUT", body });
      writeForm(form, loaded);
      replace(formNotice, message("ok", `Saved: ${Object.keys(body).join(", ")}.`));
      loadBilling();
    } catch (error) {
      replace(formNotice, "");
      showFieldError(form, error, formNotice);
    } finally {
      button.disabled = false;
    }
  });

  api("/api/cloud/replicate/status").then(
    (found) => replace(status, statusIndicator(found)),
    () => replace(status, statusIndicator(null)),
  );
  const refresh = debounced(loadBilling, 500, signal);
  await Promise.all([loadSettings(), loadBilling()]);
  subscribe("", (kind) => kind !== "delivery" && refresh(), signal);
}
