// The jobs page: retry a dead letter, and keep the queue numbers fresh.
"use strict";

(function () {
  const { api, report, notice } = window.lorebase;

  for (const button of document.querySelectorAll("button[data-retry-job]")) {
    button.addEventListener("click", async () => {
      button.disabled = true;
      try {
        await api("POST", `/api/v1/jobs/${encodeURIComponent(button.dataset.retryJob)}/retry`);
        notice("Job sent back to the queue.", "ok");
        window.location.reload();
      } catch (error) {
        button.disabled = false;
        report(error);
      }
    });
  }

  async function refreshQueue() {
    try {
      const stats = await api("GET", "/api/v1/queue");
      for (const node of document.querySelectorAll("#queue [data-stat]")) {
        const value = stats[node.dataset.stat];
        node.textContent = value === null || value === undefined ? "–" : String(value);
      }
    } catch (error) {
      report(error);
    }
  }

  setInterval(refreshQueue, 3000);
})();
