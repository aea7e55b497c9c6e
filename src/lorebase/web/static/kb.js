// The KB page: live progress of the latest pipeline (live.js: Server-Sent Events, or polling
// when the stream is unavailable), pipeline controls, and the documents table.
"use strict";

(function () {
  const { api, el, badge, httpUrl, report, notice, follow, FINAL } = window.lorebase;
  const kbId = document.getElementById("kb").dataset.kbId;
  const section = document.getElementById("pipeline");
  const pipelineId = section ? section.dataset.pipelineId : null;

  function setText(id, value) {
    const node = document.getElementById(id);
    if (node) node.textContent = value === null || value === undefined ? "" : String(value);
  }

  function showPipeline(p) {
    const progress = document.getElementById("progress");
    const value = Math.max(0, Math.min(100, Number(p.progress) || 0));
    progress.value = value;
    progress.textContent = value + " %";
    setText("progress-text", value + " %");
    document.getElementById("pipeline-status").replaceChildren(badge(p.status));
    setText("pipeline-phase", p.phase);
    setText("pipeline-message", p.message);
    setText("pipeline-error", p.error);
    setText("pipeline-eta", p.eta_seconds ? "about " + Math.ceil(p.eta_seconds) + " s left" : "");
    section.dataset.status = p.status;
    updateButtons(p);
  }

  function updateButtons(p) {
    const status = p.status;
    const failed = p.counts ? p.counts.documents_failed : 0;
    const enabled = {
      pause: status === "queued" || status === "running",
      resume: status === "paused",
      cancel: !FINAL.includes(status) && status !== "cancelling",
      retry: FINAL.includes(status) && (failed > 0 || status === "cancelled" || status === "failed"),
    };
    for (const button of section.querySelectorAll("button[data-action]")) {
      button.disabled = !enabled[button.dataset.action];
    }
  }

  // the title links to the original (a signed, expiring download) while one is kept; the API
  // route takes the session cookie as it does for the page's other requests
  function originalLink(d) {
    const title = d.title || d.filename || d.external_id || d.id;
    if (!d.has_original) return document.createTextNode(title);
    const href = `/api/v1/documents/${encodeURIComponent(d.id)}/original`;
    return el("a", { href, rel: "noopener noreferrer", title: "download the original", text: title });
  }

  function documentRow(d) {
    const link = httpUrl(d.source_url);
    const source = link
      ? el("a", { href: link, rel: "noopener noreferrer", text: d.source_url })
      : document.createTextNode(d.filename || d.source_type || "");
    return el(
      "tr",
      { "data-document-id": d.id },
      el("td", { className: "doc-title" }, originalLink(d)),
      el("td", {}, source),
      el("td", {}, badge(d.status)),
      el("td", { className: "num", text: d.chunk_count }),
      el("td", { className: "error", text: d.error || "" }),
    );
  }

  async function refreshDocuments() {
    const [docs, kb] = await Promise.all([
      api("GET", `/api/v1/kbs/${encodeURIComponent(kbId)}/documents?limit=1000`),
      api("GET", `/api/v1/kbs/${encodeURIComponent(kbId)}`),
    ]);
    document.querySelector("#documents tbody").replaceChildren(...docs.items.map(documentRow));
    setText("documents-total", `(${docs.total})`);
    document.getElementById("kb-status").replaceChildren(badge(kb.status));
    for (const node of document.querySelectorAll("#kb-counts [data-count]")) {
      node.textContent = String(kb.counts[node.dataset.count]);
    }
  }

  function updateDocument(d) {
    const row = document.querySelector(`#documents tr[data-document-id="${CSS.escape(d.document_id)}"]`);
    if (!row) return;
    const cells = row.children;
    cells[2].replaceChildren(badge(d.status));
    cells[3].textContent = String(d.chunk_count ?? "");
    cells[4].textContent = d.error || "";
  }

  function ended(p) {
    showPipeline(p);
    refreshDocuments().catch(report);
  }

  // the versions panel (versions.js) saw another version go live: its counts replace these
  document.addEventListener("lorebase:live-version", () => refreshDocuments().catch(report));

  let live = null;

  function startLive() {
    if (live) live.restart();
    else live = follow(pipelineId, { pipeline: showPipeline, document: updateDocument, ended, error: report });
  }

  async function control(action) {
    try {
      const p = await api("POST", `/api/v1/pipelines/${encodeURIComponent(pipelineId)}/${action}`);
      notice("");
      showPipeline(p);
      if (!FINAL.includes(p.status)) startLive();
      else refreshDocuments().catch(report);
    } catch (error) {
      report(error);
    }
  }

  if (section) {
    for (const button of section.querySelectorAll("button[data-action]")) {
      button.addEventListener("click", () => control(button.dataset.action));
    }
    updateButtons({ status: section.dataset.status, counts: { documents_failed: Number(section.dataset.failed) } });
    if (section.dataset.live === "true") startLive();
  }
})();
