// osmo ui: what every page shares. No framework, no external script.
"use strict";
const osmo = {
  csrf() {
    const meta = document.querySelector('meta[name="osmo-csrf"]');
    return meta ? meta.content : "";
  },
  // A state-changing request: JSON with the page's cross-site token. Resolves to the JSON answer,
  // rejects with the server's one-line error.
  async post(url, data) {
    const response = await fetch(url, {
      method: "POST", credentials: "same-origin",
      headers: {"Content-Type": "application/json", "X-Osmo-CSRF": osmo.csrf()},
      body: JSON.stringify(data || {}),
    });
    let body = null;
    try { body = await response.json(); } catch (e) { body = null; }
    if (!response.ok) {
      throw new Error((body && body.error) || ("HTTP " + response.status));
    }
    return body;
  },
  // Server-sent events: handlers maps an event name to a function of its parsed JSON data.
  // The browser reconnects by itself; "end" closes the stream for good.
  stream(url, handlers) {
    const source = new EventSource(url);
    for (const [name, handler] of Object.entries(handlers)) {
      source.addEventListener(name, (event) => handler(JSON.parse(event.data)));
    }
    source.addEventListener("end", () => source.close());
    return source;
  },
  statusClass(status) {
    if (!status) return "muted";
    if (status.startsWith("FAILED")) return "failed";
    return {COMPLETED: "ok", RUNNING: "running", INITIALIZING: "running", SCHEDULING: "waiting",
            WAITING: "waiting", PENDING: "waiting", RESCHEDULED: "retried"}[status] || "muted";
  },
  setStatus(element, status) {
    if (!element) return;
    element.textContent = status;
    element.className = "status " + osmo.statusClass(status);
    element.dataset.status = status;
  },
  flash(message, bad) {
    const box = document.getElementById("flash");
    if (!box) return;
    box.textContent = message;
    box.className = "flash" + (bad ? " bad" : "");
    box.hidden = false;
  },
};
