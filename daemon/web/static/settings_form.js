// The settings form: its fields, and moving values between it and the API's
// `settings` object. A field's key is the API's key ("cost_limit.amount" for a
// nested one), which is also what a 422 names in `error.field`.

import { formatMoney, h, replace } from "./dom.js";

// [key, label, kind, hint]; kind: text | list | nullable | amount | choice:<a|b>
export const FIELDS = {
  webhook: [
    [
      "public_url",
      "Public URL",
      "nullable",
      "The address Replicate reaches this daemon at, e.g. https://train.example.com",
    ],
    [
      "webhook_allowed_ips",
      "Allowed IPs",
      "list",
      "Webhook senders allowed, one CIDR or address per line; empty: anyone (the signature is still checked)",
    ],
    [
      "trusted_proxies",
      "Trusted proxies",
      "list",
      "Proxies whose client header is believed, one CIDR or address per line",
    ],
    [
      "client_ip_header",
      "Client IP header",
      "text",
      "X-Forwarded-For, X-Real-IP or CF-Connecting-IP",
    ],
  ],
  training: [
    ["trainer_model", "Trainer model", "text", "owner/name of the model that trains"],
    [
      "destination",
      "Destination model",
      "nullable",
      "owner/name where Replicate puts trained versions; empty: none",
    ],
  ],
  cost: [
    ["cost_limit.amount", "Limit (USD)", "amount", "Per period; 0: no limit"],
    [
      "cost_limit.period",
      "Period",
      "choice:daily|weekly|monthly",
      "Calendar periods; a week starts on Monday",
    ],
    [
      "cost_limit.action",
      "When reached",
      "choice:warn|block",
      "warn: only tell; block: refuse new trainings",
    ],
  ],
  publish: [
    [
      "publish.hub_model_id",
      "Hugging Face Hub repository",
      "nullable",
      "e.g. you/my-lora; empty: no Hub publishing",
    ],
    ["publish.s3_bucket", "S3 bucket", "nullable", "empty: no S3 publishing"],
    ["publish.s3_prefix", "S3 prefix", "text", "prepended to every key"],
  ],
};

const ALL = Object.values(FIELDS).flat();

export function fieldId(key) {
  return `field-${key.replace(/[^a-z0-9]+/gi, "-")}`;
}

function control(key, kind, hintId) {
  const common = {
    id: fieldId(key),
    name: key,
    "aria-describedby": `${hintId} ${fieldId(key)}-error`,
  };
  if (kind === "list")
    return h("textarea", { ...common, rows: 3, spellcheck: "false" });
  if (kind.startsWith("choice:")) {
    return h(
      "select",
      common,
      kind
        .slice(7)
        .split("|")
        .map((v) => h("option", { value: v }, v)),
    );
  }
  const extra = kind === "amount" ? { inputmode: "decimal" } : {};
  return h("input", {
    ...common,
    ...extra,
    type: "text",
    spellcheck: "false",
    autocomplete: "off",
  });
}

function field([key, label, kind, hint]) {
  const hintId = `${fieldId(key)}-hint`;
  return h(
    "div",
    { class: "field" },
    h("label", { for: fieldId(key) }, label),
    control(key, kind, hintId),
    h("p", { class: "hint", id: hintId }, hint),
    h("p", { class: "field-error", id: `${fieldId(key)}-error`, role: "alert" }),
  );
}

export function settingsForm(spend, chart) {
  return h(
    "form",
    { id: "settings-form", novalidate: true },
    h(
      "fieldset",
      {},
      h("legend", {}, "Webhook"),
      FIELDS.webhook.map(field),
      h("p", {}, "Webhook URL: ", h("output", { id: "webhook-url" }, "—")),
      h("ul", { id: "settings-warnings", class: "warnings" }),
    ),
    h("fieldset", {}, h("legend", {}, "Training"), FIELDS.training.map(field)),
    h(
      "fieldset",
      {},
      h("legend", {}, "Cost limit"),
      h("div", { class: "row" }, FIELDS.cost.map(field)),
      spend,
      chart,
      h("div", { id: "prices" }),
    ),
    h(
      "fieldset",
      {},
      h("legend", {}, "Publish trained models"),
      FIELDS.publish.map(field),
    ),
    h(
      "div",
      { class: "actions" },
      h(
        "button",
        { type: "submit", id: "save-settings", disabled: true },
        "Save settings",
      ),
    ),
  );
}

function lookup(settings, key) {
  return key
    .split(".")
    .reduce((value, part) => (value == null ? undefined : value[part]), settings);
}

export function writeForm(form, answer) {
  const settings = answer.settings || {};
  for (const [key, , kind] of ALL) {
    const value = lookup(settings, key);
    const input = form.querySelector(`#${fieldId(key)}`);
    if (kind === "list") input.value = (value || []).join("\n");
    else input.value = value == null ? "" : String(value);
  }
  replace(
    form.querySelector("#webhook-url"),
    answer.webhook_url || "— (set the public URL)",
  );
  replace(
    form.querySelector("#settings-warnings"),
    (answer.warnings || []).map((text) =>
      h("li", { class: "notice notice-warn" }, text),
    ),
  );
  const prices = Object.entries(settings.prices_per_hour || {});
  replace(
    form.querySelector("#prices"),
    prices.length
      ? h(
          "p",
          { class: "muted" },
          "Prices per hour: ",
          prices.map(([name, price]) => `${name} ${formatMoney(price)}`).join(", "),
        )
      : null,
  );
}

function readValue(input, kind) {
  const raw = input.value.trim();
  if (kind === "list") return raw.split(/[\s,]+/).filter(Boolean);
  if (kind === "nullable") return raw === "" ? null : raw;
  if (kind === "amount") {
    const number = Number(raw);
    return raw !== "" && Number.isFinite(number) ? number : raw; // the daemon says why
  }
  return raw;
}

export function readForm(form) {
  const settings = {};
  for (const [key, , kind] of ALL) {
    const value = readValue(form.querySelector(`#${fieldId(key)}`), kind);
    const [outer, inner] = key.split(".");
    if (inner) (settings[outer] ||= {})[inner] = value;
    else settings[outer] = value;
  }
  return settings;
}
