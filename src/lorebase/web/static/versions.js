// The KB page's versions panel: every config version of the KB (GET /kbs/{id}/versions), the
// building one's live progress (live.js) and its Cancel, Activate on complete and retired
// versions (forwards or a rollback), the re-index form (PATCH /kbs/{id}) and, for versions that
// were evaluated, nDCG@10 per search mode as an SVG bar chart. All data goes in as text.
"use strict";

(function () {
  const { api, el, badge, notice, follow, FINAL } = window.lorebase;
  const panel = document.getElementById("versions");
  if (!panel) return;
  const kbId = document.getElementById("kb").dataset.kbId;
  const kbPath = `/api/v1/kbs/${encodeURIComponent(kbId)}`;
  const NOTICE = "versions-notice";
  const SVG = "http://www.w3.org/2000/svg";
  const EVALUATION_FINAL = ["completed", "failed"];
  let followed = null; // { pipelineId, live } of the building version
  let evaluationTimer = null;

  function when(value) {
    return value ? String(value).replace("T", " ").slice(0, 19) : "";
  }

  // the message of an API error and, for a 422, which field is wrong and why
  function explain(error) {
    const details = Array.isArray(error.details) ? error.details : [];
    const reasons = details.map((d) => (d.field ? `${d.field}: ${d.message}` : d.message));
    return [error.message, ...reasons].filter(Boolean).join(" — ");
  }

  function fail(error) {
    notice(explain(error), "error", NOTICE);
  }

  // -- the table -------------------------------------------------------------------------------

  function progressCell(v) {
    const p = v.pipeline || {};
    const value = Math.max(0, Math.min(100, Number(p.progress) || 0));
    return el(
      "div",
      { className: "version-progress" },
      el("progress", { max: 100, value, "aria-label": `Version ${v.version} progress` }, `${value} %`),
      el("span", { className: "version-progress-text", text: `${value} %` }),
      el("span", { className: "version-phase muted", text: [p.status, p.phase].filter(Boolean).join(" · ") }),
    );
  }

  function times(v) {
    const lines = [
      ["created", v.created_at],
      ["completed", v.completed_at],
      ["activated", v.activated_at],
      ["retired", v.retired_at],
    ].filter(([, value]) => value);
    return el("td", { className: "version-times" }, ...lines.map(([label, value]) => el("div", { text: `${label} ${when(value)}` })));
  }

  function actions(v) {
    const cell = el("td", { className: "version-actions" });
    if (v.status === "complete" || v.status === "retired") {
      const button = el("button", { type: "button", "data-activate": v.version, text: "Activate" });
      button.addEventListener("click", () => activate(v.version, button));
      cell.append(button);
    }
    if (v.status === "building" && v.pipeline_id) {
      const button = el("button", { type: "button", className: "danger", "data-cancel": v.version, text: "Cancel" });
      button.addEventListener("click", () => cancel(v.pipeline_id, button));
      cell.append(button);
    }
    return cell;
  }

  function message(v) {
    const cell = el("td", { className: "version-message" });
    const text = v.message || (v.pipeline && v.status === "building" ? v.pipeline.message : "");
    if (text) cell.append(el("div", { text }));
    if (v.evaluation) {
      const ev = v.evaluation;
      cell.append(el("div", { className: "muted", text: `evaluation ${ev.status}` }));
      if (ev.error) cell.append(el("div", { className: "error", text: ev.error }));
    }
    return cell;
  }

  function row(v) {
    const cfg = v.config || {};
    const chunking = cfg.chunking || {};
    const status = el("td", { className: "version-status" }, badge(v.status));
    if (v.status === "building") status.append(progressCell(v));
    return el(
      "tr",
      { "data-version": v.version, "data-status": v.status },
      el("td", { className: "num", text: v.version }),
      status,
      el("td", { className: "num", text: chunking.chunk_size ?? "" }),
      el("td", { className: "num", text: chunking.chunk_overlap ?? "" }),
      el("td", { text: (cfg.embedding || {}).model || "" }),
      el("td", { text: (cfg.store || {}).type || "" }),
      el("td", { className: "num version-chunks", text: v.counts ? v.counts.chunks : "" }),
      times(v),
      message(v),
      actions(v),
    );
  }

  // -- live progress of the building version ---------------------------------------------------

  function showProgress(version, p) {
    const tr = panel.querySelector(`tr[data-version="${Number(version)}"]`);
    if (!tr || tr.dataset.status !== "building") return;
    const value = Math.max(0, Math.min(100, Number(p.progress) || 0));
    const bar = tr.querySelector("progress");
    if (bar) {
      bar.value = value;
      bar.textContent = `${value} %`;
    }
    const text = tr.querySelector(".version-progress-text");
    if (text) text.textContent = `${value} %`;
    const phase = tr.querySelector(".version-phase");
    if (phase) phase.textContent = [p.status, p.phase].filter(Boolean).join(" · ");
  }

  function followBuilding(items) {
    const building = items.find((v) => v.status === "building" && v.pipeline_id);
    if (followed && (!building || followed.pipelineId !== building.pipeline_id)) {
      followed.live.stop();
      followed = null;
    }
    if (!building || followed) return;
    if (building.pipeline && FINAL.includes(building.pipeline.status)) {
      setTimeout(() => refresh().catch(fail), 1000); // its version's end is being recorded
      return;
    }
    const live = follow(building.pipeline_id, {
      pipeline: (p) => showProgress(building.version, p),
      ended: () => {
        followed = null;
        refresh().catch(fail);
      },
      error: fail,
    });
    followed = { pipelineId: building.pipeline_id, live };
  }

  // -- the evaluation chart --------------------------------------------------------------------

  function svg(tag, attrs, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, String(value));
    if (text !== undefined) node.textContent = String(text);
    return node;
  }

  // nDCG@10 of each evaluated version, side by side per search mode
  function chart(ev) {
    const results = ev.results || {};
    const versions = Object.keys(results).sort((a, b) => Number(a) - Number(b));
    const modes = [...new Set(versions.flatMap((v) => Object.keys(results[v] || {})))].sort();
    const bar = 28;
    const gap = 24;
    const height = 140;
    const top = 18;
    const groupWidth = versions.length * bar + gap;
    const width = Math.max(modes.length * groupWidth + gap, 200);
    const root = svg("svg", {
      viewBox: `0 0 ${width} ${height + top + 40}`,
      width,
      height: height + top + 40,
      role: "img",
      class: "chart",
      "aria-label": `nDCG@10 per search mode, evaluation ${ev.id}`,
    });
    root.append(svg("line", { x1: 0, y1: top + height, x2: width, y2: top + height, class: "axis" }));
    modes.forEach((mode, m) => {
      const x0 = gap + m * groupWidth;
      versions.forEach((version, i) => {
        const metrics = (results[version] || {})[mode];
        if (!metrics) return;
        const value = Math.max(0, Math.min(1, Number(metrics["ndcg@10"]) || 0));
        const h = value * height;
        const x = x0 + i * bar;
        const rect = svg("rect", {
          x: x + 2,
          y: top + height - h,
          width: bar - 4,
          height: h,
          class: `bar bar-${i % 4}`,
          "data-version": version,
          "data-mode": mode,
          "data-value": value.toFixed(3),
        });
        rect.append(svg("title", {}, `version ${version}, ${mode}: nDCG@10 ${value.toFixed(3)}`));
        root.append(rect);
        root.append(svg("text", { x: x + bar / 2, y: top + height - h - 4, class: "value" }, value.toFixed(2)));
        root.append(svg("text", { x: x + bar / 2, y: top + height + 14, class: "label" }, `v${version}`));
      });
      const middle = x0 + (versions.length * bar) / 2;
      root.append(svg("text", { x: middle, y: top + height + 32, class: "mode" }, mode));
    });
    return el(
      "figure",
      { className: "evaluation", "data-evaluation-id": ev.id },
      root,
      el("figcaption", { className: "muted", text: `nDCG@10 by search mode, versions ${versions.join(", ")}` }),
    );
  }

  function charts(items) {
    const seen = new Set();
    const figures = [];
    for (const v of items) {
      const ev = v.evaluation;
      if (!ev || !ev.results || seen.has(ev.id) || Object.keys(ev.results).length === 0) continue;
      seen.add(ev.id);
      figures.push(chart(ev));
    }
    const box = document.getElementById("evaluations");
    box.replaceChildren(...figures);
    box.hidden = figures.length === 0;
  }

  // -- actions ---------------------------------------------------------------------------------

  let liveSeen = null; // the live version at the last refresh

  async function refresh() {
    const data = await api("GET", `${kbPath}/versions`);
    if (liveSeen !== null && data.live !== liveSeen) {
      // another version went live: the KB's counts and documents are now that version's (kb.js)
      document.dispatchEvent(new CustomEvent("lorebase:live-version", { detail: data.live }));
    }
    liveSeen = data.live;
    const items = [...data.items].sort((a, b) => b.version - a.version);
    document.querySelector("#versions-table tbody").replaceChildren(...items.map(row));
    document.getElementById("versions-live").textContent = data.live === null ? "" : `live: version ${data.live}`;
    document.getElementById("versions-empty").hidden = items.length > 0;
    charts(items);
    followBuilding(items);
    // an evaluation runs after its version's build: look again until its results are in
    clearTimeout(evaluationTimer);
    if (items.some((v) => v.evaluation && !EVALUATION_FINAL.includes(v.evaluation.status))) {
      evaluationTimer = setTimeout(() => refresh().catch(fail), 2000);
    }
  }

  async function activate(version, button) {
    button.disabled = true;
    try {
      await api("POST", `${kbPath}/versions/${Number(version)}/activate`);
      notice(`Version ${version} is live.`, "ok", NOTICE);
    } catch (error) {
      fail(error);
    }
    await refresh().catch(fail);
  }

  async function cancel(pipelineId, button) {
    button.disabled = true;
    try {
      await api("POST", `/api/v1/pipelines/${encodeURIComponent(pipelineId)}/cancel`);
      notice("Cancelling the build.", "ok", NOTICE);
    } catch (error) {
      fail(error);
      button.disabled = false;
    }
  }

  function number(value) {
    const n = Number(value);
    return value !== "" && Number.isInteger(n) ? n : value; // not a number: the API says why
  }

  async function reindex(event) {
    event.preventDefault();
    const form = event.currentTarget;
    const data = new FormData(form);
    const body = {
      config: {
        chunking: { chunk_size: number(data.get("chunk_size")), chunk_overlap: number(data.get("chunk_overlap")) },
        embedding: { model: String(data.get("model") || "") },
      },
      activate: String(data.get("activate") || "always"),
    };
    const submit = form.querySelector("button[type=submit]");
    submit.disabled = true;
    try {
      const result = await api("PATCH", kbPath, body);
      if (result && result.pipeline_id) {
        notice(`Version ${result.version} is building.`, "ok", NOTICE);
      } else {
        notice("Nothing to re-index: this is the live version's config.", "ok", NOTICE);
      }
      await refresh();
    } catch (error) {
      fail(error);
    } finally {
      submit.disabled = false;
    }
  }

  document.getElementById("reindex-form").addEventListener("submit", reindex);
  refresh().catch(fail);
})();
