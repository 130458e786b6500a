// The workflow list: filters (search, status, pool) and live rows from /events/workflows.
"use strict";
(function () {
  const body = document.querySelector("#workflows tbody");
  const search = document.getElementById("search");
  const statusFilter = document.getElementById("status-filter");
  const poolFilter = document.getElementById("pool-filter");
  const count = document.getElementById("shown-count");
  const ACTIVE = new Set(["PENDING", "WAITING", "SCHEDULING", "INITIALIZING", "RUNNING"]);

  function keep(row) {
    const status = row.dataset.status || "";
    const wanted = statusFilter.value;
    if (wanted === "active" && !ACTIVE.has(status)) return false;
    if (wanted === "failed" && !status.startsWith("FAILED")) return false;
    if (wanted === "COMPLETED" && status !== "COMPLETED") return false;
    if (poolFilter.value && row.dataset.pool !== poolFilter.value) return false;
    const text = search.value.trim().toLowerCase();
    return !text || row.textContent.toLowerCase().includes(text);
  }

  function apply() {
    let shown = 0;
    const rows = body.querySelectorAll("tr");
    rows.forEach((row) => { const ok = keep(row); row.hidden = !ok; shown += ok ? 1 : 0; });
    count.textContent = shown + " of " + rows.length + " shown";
  }

  [search, statusFilter, poolFilter].forEach((el) => {
    el.addEventListener("input", apply);
    el.addEventListener("change", apply);
  });
  apply();
  osmo.stream("/events/workflows", {
    rows(data) {
      body.innerHTML = data.html;
      const empty = document.getElementById("no-workflows");
      if (empty && data.count) empty.hidden = true;
      apply();
    },
  });
})();
