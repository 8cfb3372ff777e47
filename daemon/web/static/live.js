// Live updates from GET /api/events, read with fetch() so that the admin token
// travels in a header (EventSource cannot send one) and never in a URL.
//
// `onEvent(kind, data)` gets every event; "ready" comes first on each (re)connect
// and means "read everything again", as "resync" does. A dropped stream is opened
// again after the daemon's `retry` delay.
//
// A browser keeps about six connections per host for all its tabs, and each
// stream holds one for as long as it is open. So a hidden tab closes its stream
// and opens it again when it is shown; the "ready" that follows makes the page
// read what it missed. The stream ends for good when the page's `signal` aborts.

import { authorizedFetch } from "./api.js";

const DEFAULT_RETRY_MS = 2000;

export function setState(text, live) {
  const badge = document.getElementById("live-state");
  if (!badge) return;
  badge.textContent = text;
  badge.dataset.live = live ? "yes" : "no";
}

// Split an SSE body into events; returns the unparsed rest of the buffer.
function parseEvents(buffer, emit, setRetry) {
  const blocks = buffer.split("\n\n");
  const rest = blocks.pop();
  for (const block of blocks) {
    let kind = "message";
    const data = [];
    for (const line of block.split("\n")) {
      if (line.startsWith(":")) continue; // keep-alive comment
      const colon = line.indexOf(":");
      const name = colon < 0 ? line : line.slice(0, colon);
      const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
      if (name === "event") kind = value;
      else if (name === "data") data.push(value);
      else if (name === "retry" && /^\d+$/.test(value)) setRetry(Number(value));
    }
    if (data.length) {
      let parsed = null;
      try {
        parsed = JSON.parse(data.join("\n"));
      } catch {
        continue;
      }
      emit(kind, parsed);
    }
  }
  return rest;
}

function wait(ms, signal) {
  return new Promise((done) => {
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", () => (clearTimeout(timer), done()), {
      once: true,
    });
  });
}

export function subscribe(query, onEvent, signal) {
  let connection = null; // the open stream's controller; null while hidden
  let retryMs = DEFAULT_RETRY_MS;

  async function readOnce(aborted) {
    const response = await authorizedFetch(`/api/events${query}`, {
      signal: aborted,
      headers: { Accept: "text/event-stream" },
    });
    if (!response.ok || !response.body) throw new Error(`events: ${response.status}`);
    setState("live", true);
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += decoder.decode(value, { stream: true }).replace(/\r\n?/g, "\n");
      buffer = parseEvents(buffer, onEvent, (ms) => (retryMs = ms));
    }
  }

  async function run(aborted) {
    while (!aborted.aborted) {
      try {
        await readOnce(aborted);
      } catch {
        if (aborted.aborted) return;
      }
      if (aborted.aborted) return;
      setState("reconnecting…", false);
      await wait(retryMs, aborted);
    }
  }

  const open = () => {
    if (connection || signal.aborted) return;
    connection = new AbortController();
    setState("connecting…", false);
    run(connection.signal);
  };
  const pause = () => {
    connection?.abort();
    connection = null;
  };
  const onVisibility = () => {
    if (document.visibilityState !== "hidden") return open();
    pause();
    setState("paused while hidden", false);
  };
  const close = () => {
    pause();
    document.removeEventListener("visibilitychange", onVisibility);
    setState("not live", false);
  };

  if (signal.aborted) return;
  document.addEventListener("visibilitychange", onVisibility);
  signal.addEventListener("abort", close, { once: true });
  onVisibility();
}

// Coalesce bursts of events into one call of `task`, at most every `delayMs`;
// nothing runs any more once `signal` (the page's) has aborted.
export function debounced(task, delayMs, signal) {
  let timer = null;
  let running = false;
  let again = false;
  const run = async () => {
    timer = null;
    if (signal.aborted) return;
    if (running) {
      again = true;
      return;
    }
    running = true;
    try {
      await task();
    } finally {
      running = false;
      if (again) {
        again = false;
        schedule();
      }
    }
  };
  const schedule = () => {
    if (timer === null) timer = setTimeout(run, delayMs);
  };
  return schedule;
}

// Run calls of `task` one after another, never two at once (each sees the state
// the previous one left, such as the log offset).
export function serial(task) {
  let chain = Promise.resolve();
  return () => (chain = chain.then(task, task));
}
