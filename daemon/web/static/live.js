// Live updates from GET /api/events, read with fetch() so that the admin token
// travels in a header (EventSource cannot send one) and never in a URL.
//
// `onEvent(kind, data)` gets every event; "ready" comes first on each (re)connect
// and means "read everything again", as "resync" does. A dropped stream is opened
// again after the daemon's `retry` delay.

import { authorizedFetch } from "./api.js";

const DEFAULT_RETRY_MS = 2000;

function setState(text, live) {
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

export function subscribe(query, onEvent) {
  const controller = new AbortController();
  let retryMs = DEFAULT_RETRY_MS;

  async function readOnce() {
    const response = await authorizedFetch(`/api/events${query}`, {
      signal: controller.signal,
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

  (async () => {
    while (!controller.signal.aborted) {
      try {
        await readOnce();
      } catch (error) {
        if (controller.signal.aborted) return;
      }
      setState("reconnecting…", false);
      await new Promise((done) => setTimeout(done, retryMs));
    }
  })();

  return { close: () => controller.abort() };
}

// Coalesce bursts of events into one call of `task`, at most every `delayMs`.
export function debounced(task, delayMs = 100) {
  let timer = null;
  let running = false;
  let again = false;
  const run = async () => {
    timer = null;
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
