// One workflow: live status, graph, timeline and task table (server-rendered fragments from
// /events/workflows/ID), logs as they are written with filters, cancel and resubmit.
"use strict";
(function () {
  const id = document.getElementById("summary").dataset.id;
  const logs = document.getElementById("logs");
  const search = document.getElementById("log-search");
  const taskFilter = document.getElementById("log-task");
  const attemptFilter = document.getElementById("log-attempt");
  const sourceFilter = document.getElementById("log-source");
  const follow = document.getElementById("log-follow");
  const count = document.getElementById("log-count");
  const cancelButton = document.getElementById("cancel");
  const attempts = new Set();
  const MAX_LINES = 20000;

  function visible(line) {
    if (taskFilter.value && line.dataset.task !== taskFilter.value) return false;
    if (attemptFilter.value && line.dataset.attempt !== attemptFilter.value) return false;
    if (sourceFilter.value && line.dataset.source !== sourceFilter.value) return false;
    const text = search.value.trim().toLowerCase();
    return !text || line.dataset.text.includes(text);
  }

  function countLines() {
    const all = logs.children.length;
    const hidden = logs.querySelectorAll(".line.hidden").length;
    count.textContent = (all - hidden) + " of " + all + " lines";
  }

  function filterAll() {
    for (const line of logs.children) line.classList.toggle("hidden", !visible(line));
    countLines();
  }

  function addAttempt(n) {
    const value = String(n);
    if (attempts.has(value)) return;
    attempts.add(value);
    const option = document.createElement("option");
    option.value = value;
    option.textContent = "attempt " + value;
    attemptFilter.appendChild(option);
  }

  function addLines(lines) {
    const several = taskFilter.options.length > 2;
    const fragment = document.createDocumentFragment();
    for (const [task, attempt, source, text] of lines) {
      const line = document.createElement("div");
      line.className = "line " + source;
      line.dataset.task = task;
      line.dataset.attempt = String(attempt);
      line.dataset.source = source;
      line.dataset.text = text.toLowerCase();
      if (several) {
        const who = document.createElement("span");
        who.className = "who";
        who.textContent = task + (attempt > 1 ? " #" + attempt : "");
        line.appendChild(who);
      }
      line.appendChild(document.createTextNode(text));
      if (!visible(line)) line.classList.add("hidden");
      addAttempt(attempt);
      fragment.appendChild(line);
    }
    logs.appendChild(fragment);
    while (logs.children.length > MAX_LINES) logs.removeChild(logs.firstChild);
    if (follow.checked) logs.scrollTop = logs.scrollHeight;
    countLines();
  }

  function applyState(state) {
    osmo.setStatus(document.getElementById("workflow-status"), state.status);
    document.getElementById("summary-box").innerHTML = state.summary;
    document.getElementById("graph-box").innerHTML = state.graph;
    document.getElementById("timeline-box").innerHTML = state.timeline;
    document.getElementById("tasks-body").innerHTML = state.tasks;
    state.attempts.forEach(addAttempt);
    cancelButton.disabled = !state.active;
  }

  [search, taskFilter, attemptFilter, sourceFilter].forEach((el) => {
    el.addEventListener("input", filterAll);
    el.addEventListener("change", filterAll);
  });

  osmo.stream("/events/workflows/" + encodeURIComponent(id), {
    reset() { logs.textContent = ""; countLines(); },
    state: applyState,
    logs(data) { addLines(data.lines); },
    problem(data) { osmo.flash(data.error, true); },
  });

  cancelButton.addEventListener("click", async () => {
    if (!window.confirm("Cancel workflow " + id + "? Every task is stopped.")) return;
    cancelButton.disabled = true;
    osmo.flash("cancelling " + id + " ...");
    try {
      const result = await osmo.post("/api/workflows/" + encodeURIComponent(id) + "/cancel", {});
      osmo.flash(id + " " + result.status);
    } catch (error) {
      osmo.flash("cancel failed: " + error.message, true);
      cancelButton.disabled = false;
    }
  });

  document.getElementById("resubmit").addEventListener("click", async () => {
    const values = document.getElementById("resubmit-set").value.split(/\s+/).filter(Boolean);
    osmo.flash("submitting ...");
    try {
      const result = await osmo.post("/api/workflows/" + encodeURIComponent(id) + "/resubmit", {set: values});
      osmo.flash("submitted " + result.id);
      window.location.assign(result.url);
    } catch (error) {
      osmo.flash("resubmit failed: " + error.message, true);
    }
  });
})();
