// osmo ui, the datasets list: the search box hides the rows whose name and labels do not match.
"use strict";
(function () {
  const box = document.getElementById("dataset-search");
  const table = document.getElementById("datasets");
  if (!box || !table) return;
  box.addEventListener("input", () => {
    const words = box.value.toLowerCase().split(/\s+/).filter(Boolean);
    for (const row of table.querySelectorAll("tbody tr[data-name]")) {
      const text = (row.dataset.search || "").toLowerCase();
      row.hidden = !words.every((w) => text.includes(w));
    }
  });
})();
