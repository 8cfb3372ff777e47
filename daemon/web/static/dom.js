// Small DOM and formatting helpers. Text always goes in as text, never as HTML.

export function h(tag, attrs = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else if (name === "class") element.className = value;
    else if (value === true) element.setAttribute(name, "");
    else element.setAttribute(name, String(value));
  }
  append(element, children);
  return element;
}

function append(element, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : String(child));
  }
}

export function replace(element, ...children) {
  element.replaceChildren();
  append(element, children);
}

export const ACTIVE = ["starting", "processing"];
export const FAILED_DELIVERY = ["failed", "blocked_host", "source_expired"];

export function badge(status) {
  return h("span", { class: `badge badge-${status || "unknown"}` }, status || "?");
}

export function parseTime(value) {
  if (!value) return null;
  const ms = Date.parse(value);
  return Number.isNaN(ms) ? null : ms;
}

export function formatTime(value) {
  const ms = parseTime(value);
  if (ms === null) return "—";
  return new Date(ms).toLocaleString(undefined, {
    year: "numeric",
    month: "short",
    day: "numeric",
    hour: "2-digit",
    minute: "2-digit",
    second: "2-digit",
  });
}

export function formatDuration(seconds) {
  if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return "—";
  const total = Math.max(0, Math.round(seconds));
  const hours = Math.floor(total / 3600);
  const minutes = Math.floor((total % 3600) / 60);
  const rest = total % 60;
  if (hours) return `${hours} h ${minutes} min`;
  if (minutes) return `${minutes} min ${rest} s`;
  return `${rest} s`;
}

// Seconds from start to completion (or until now while the job is running).
export function jobDuration(job) {
  const started = parseTime(job.started_at);
  if (started === null) return null;
  const ended = parseTime(job.completed_at);
  if (ended !== null) return (ended - started) / 1000;
  return ACTIVE.includes(job.status) ? (Date.now() - started) / 1000 : null;
}

export function formatMoney(amount) {
  if (amount === null || amount === undefined) return "—";
  const value = Number(amount);
  return `$${value.toFixed(value > 0 && value < 1 ? 4 : 2)}`;
}

export function formatBytes(count) {
  if (count === null || count === undefined) return "?";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = Number(count);
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value.toFixed(unit ? 1 : 0)} ${units[unit]}`;
}

export function hardwareOf(job) {
  const value = job.input?.hardware;
  return typeof value === "string" && value ? value : "default";
}

export function message(kind, text) {
  return h(
    "p",
    { class: `notice notice-${kind}`, role: kind === "error" ? "alert" : "status" },
    text,
  );
}

// A selector that finds "the same" element again after a re-render.
function focusKey(element) {
  if (element.id) return `#${CSS.escape(element.id)}`;
  for (const name of ["data-task", "data-job"]) {
    const value = element.getAttribute(name);
    if (value !== null) return `${element.tagName}[${name}="${CSS.escape(value)}"]`;
  }
  const href = element.getAttribute("href");
  return href === null ? null : `a[href="${CSS.escape(href)}"]`;
}

// Re-render `container` without taking the keyboard focus away from the user.
export function keepFocus(container, render) {
  const active = document.activeElement;
  const key = active && container.contains(active) ? focusKey(active) : null;
  render();
  if (key) container.querySelector(key)?.focus({ preventScroll: true });
}
