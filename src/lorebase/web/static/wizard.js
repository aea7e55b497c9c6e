// The creation wizard: draft → sources (drag-and-drop or chosen files, URLs) → settings →
// chunk preview and validation → finalize, all through the drafts API.
"use strict";

(function () {
  const { api, el, report, notice } = window.lorebase;
  let draftId = new URL(location.href).searchParams.get("draft");
  const base = () => `/api/v1/kb-drafts/${encodeURIComponent(draftId)}`;

  function goto(step) {
    for (const section of document.querySelectorAll("section.step")) {
      section.hidden = section.dataset.step !== step;
    }
    for (const label of document.querySelectorAll("#steps li")) {
      if (label.dataset.stepLabel === step) label.setAttribute("aria-current", "step");
      else label.removeAttribute("aria-current");
    }
    if (step === "preview") loadPreview();
  }

  function sizeText(bytes) {
    if (bytes === null || bytes === undefined) return "";
    return bytes < 1024 ? bytes + " B" : (bytes / 1024).toFixed(1) + " KiB";
  }

  function sourceRow(src) {
    let name = src.filename || src.url || "";
    let size = src.size_bytes;
    if (src.type === "text") {
      name = (src.documents || []).map((d) => d.title || d.external_id || "record").join(", ");
      size = (src.documents || []).reduce((n, d) => n + (d.size_bytes || 0), 0);
    }
    const remove = el("button", { type: "button", className: "link danger", text: "Remove" });
    const row = el(
      "tr",
      { "data-source-id": src.id },
      el("td", { text: src.type }),
      el("td", { className: "source-name", text: name }),
      el("td", { className: "num", text: sizeText(size) }),
      el("td", {}, remove),
    );
    remove.addEventListener("click", async () => {
      try {
        await api("DELETE", `${base()}/sources/${encodeURIComponent(src.id)}`);
        row.remove();
      } catch (error) {
        report(error);
      }
    });
    return row;
  }

  function addSources(sources) {
    const body = document.querySelector("#sources tbody");
    for (const src of sources) body.append(sourceRow(src));
  }

  async function upload(files) {
    if (!files || !files.length) return;
    const form = new FormData();
    for (const file of files) form.append("files", file, file.name);
    try {
      const answer = await api("POST", `${base()}/sources`, form);
      addSources(answer.sources);
      notice(`${files.length} file(s) added.`, "ok");
    } catch (error) {
      report(error);
    }
  }

  document.getElementById("draft-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = {
      name: document.getElementById("kb-name-input").value,
      description: document.getElementById("kb-description-input").value || null,
    };
    try {
      const draft = await api("POST", "/api/v1/kb-drafts", body);
      draftId = draft.id;
      const url = new URL(location.href);
      url.searchParams.set("draft", draftId);
      history.replaceState(null, "", url);
      notice("");
      goto("sources");
    } catch (error) {
      report(error);
    }
  });

  const input = document.getElementById("file-input");
  input.addEventListener("change", async () => {
    await upload(Array.from(input.files));
    input.value = "";
  });

  const zone = document.getElementById("dropzone");
  for (const name of ["dragenter", "dragover"]) {
    zone.addEventListener(name, (event) => {
      event.preventDefault();
      zone.classList.add("dragging");
    });
  }
  zone.addEventListener("dragleave", () => zone.classList.remove("dragging"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("dragging");
    upload(Array.from(event.dataTransfer.files));
  });

  document.getElementById("web-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = {
      type: "web",
      url: document.getElementById("web-url").value,
      crawl: { max_pages: Number(document.getElementById("web-max-pages").value) || 100 },
    };
    try {
      const answer = await api("POST", `${base()}/sources`, body);
      addSources(answer.sources);
      document.getElementById("web-url").value = "";
      notice("");
    } catch (error) {
      report(error);
    }
  });

  for (const button of document.querySelectorAll("button[data-goto]")) {
    button.addEventListener("click", () => goto(button.dataset.goto));
  }

  document.getElementById("settings-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const f = event.target.elements;
    const config = {
      chunking: {
        strategy: f.strategy.value,
        chunk_size: Number(f.chunk_size.value),
        chunk_overlap: Number(f.chunk_overlap.value),
      },
      embedding: { model: f.model.value },
      store: { type: f.store.value },
    };
    try {
      await api("PATCH", base(), { config });
      notice("");
      goto("preview");
    } catch (error) {
      report(error);
    }
  });

  async function loadPreview() {
    const list = document.getElementById("preview");
    const checks = document.getElementById("validation");
    list.replaceChildren();
    checks.replaceChildren();
    document.getElementById("preview-meta").textContent = "Chunking…";
    try {
      const preview = await api("POST", `${base()}/preview`, { limit: 10 });
      document.getElementById("preview-title").textContent = preview.title || "";
      document.getElementById("preview-meta").textContent =
        `${preview.total_chunks} chunk(s) from the first source; showing ${preview.chunks.length}.`;
      list.replaceChildren(
        ...preview.chunks.map((c) =>
          el(
            "li",
            { className: "chunk" },
            el("div", { className: "muted", text: `${c.token_count} tokens` }),
            el("p", { className: "chunk-text", text: c.text }),
          ),
        ),
      );
    } catch (error) {
      document.getElementById("preview-meta").textContent = "";
      report(error);
    }
    try {
      const result = await api("POST", `${base()}/validate`);
      for (const e of result.errors) checks.append(el("li", { className: "error", text: e.message || JSON.stringify(e) }));
      for (const w of result.warnings) checks.append(el("li", { className: "warning", text: w.message || JSON.stringify(w) }));
      if (result.is_valid) {
        checks.append(el("li", { className: "ok", text: `Valid; about ${result.estimated_duration_minutes} min to build.` }));
      }
      document.getElementById("to-finalize").disabled = !result.is_valid;
    } catch (error) {
      report(error);
    }
  }

  document.getElementById("finalize").addEventListener("click", async (event) => {
    event.target.disabled = true;
    try {
      const answer = await api("POST", `${base()}/finalize`);
      window.location.assign(`/kbs/${encodeURIComponent(answer.kb_id)}`);
    } catch (error) {
      event.target.disabled = false;
      report(error);
    }
  });

  async function resume() {
    try {
      const draft = await api("GET", base());
      document.getElementById("kb-name-input").value = draft.name;
      addSources(draft.sources);
      goto("sources");
    } catch (error) {
      draftId = null;
      report(error);
    }
  }

  if (draftId) resume();
})();
