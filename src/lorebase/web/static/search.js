// The search playground: ranked chunks with their source and section, and feedback.
"use strict";

(function () {
  const { api, el, httpUrl, report, notice } = window.lorebase;
  const form = document.getElementById("search-form");
  if (!form) return;
  const results = document.getElementById("results");
  const feedback = document.getElementById("feedback");
  let queryId = null;

  function result(r, rank) {
    const link = httpUrl(r.url);
    const name = r.title || r.filename || r.external_id || r.document_id;
    const heading = el("div", { className: "result-head" }, el("span", { className: "rank", text: rank + "." }));
    heading.append(
      link
        ? el("a", { href: link, rel: "noopener noreferrer", className: "result-title", text: name })
        : el("span", { className: "result-title", text: name }),
    );
    heading.append(el("span", { className: "score muted", text: "score " + Number(r.score).toFixed(4) }));
    const section = Array.isArray(r.section) ? r.section.join(" › ") : r.section || "";
    const page = r.metadata && r.metadata.page ? "page " + r.metadata.page : "";
    return el(
      "li",
      { className: "result", "data-chunk-id": r.chunk_id },
      heading,
      section ? el("div", { className: "section muted", text: section }) : null,
      page ? el("div", { className: "page muted", text: page }) : null,
      el("p", { className: "chunk-text", text: r.text }),
    );
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const kb = document.getElementById("search-kb").value;
    const body = {
      query: document.getElementById("search-query").value,
      mode: document.getElementById("search-mode").value,
      top_k: Number(document.getElementById("search-top-k").value) || 10,
    };
    try {
      const answer = await api("POST", `/api/v1/kbs/${encodeURIComponent(kb)}/search`, body);
      notice("");
      queryId = answer.query_id;
      results.replaceChildren(...answer.results.map((r, i) => result(r, i + 1)));
      document.getElementById("search-meta").textContent =
        `${answer.results.length} result(s) in ${answer.latency_ms} ms (${answer.mode})`;
      feedback.hidden = false;
      feedback.dataset.queryId = queryId;
      for (const b of feedback.querySelectorAll("button")) b.setAttribute("aria-pressed", "false");
      document.getElementById("feedback-status").textContent = "";
      const url = new URL(location.href);
      url.searchParams.set("kb", kb);
      history.replaceState(null, "", url);
    } catch (error) {
      report(error);
    }
  });

  for (const button of feedback.querySelectorAll("button[data-feedback]")) {
    button.addEventListener("click", async () => {
      if (!queryId) return;
      try {
        const answer = await api("POST", `/api/v1/queries/${encodeURIComponent(queryId)}/feedback`, {
          feedback: button.dataset.feedback,
        });
        for (const b of feedback.querySelectorAll("button")) {
          b.setAttribute("aria-pressed", String(b === button));
        }
        document.getElementById("feedback-status").textContent = "Feedback recorded: " + answer.feedback;
      } catch (error) {
        report(error);
      }
    });
  }
})();
