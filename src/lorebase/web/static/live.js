// Following one pipeline live: its Server-Sent Events stream, or polling when the stream is
// unavailable. The KB page's pipeline card and its versions panel both follow pipelines this
// way: lorebase.follow(id, { pipeline, document, ended, error }) returns { restart, stop }.
"use strict";

(function () {
  const { api, FINAL } = window.lorebase;

  function follow(pipelineId, handlers) {
    const on = {
      pipeline: () => {},
      document: () => {},
      ended: () => {},
      error: () => {},
      ...handlers,
    };
    const path = `/api/v1/pipelines/${encodeURIComponent(pipelineId)}`;
    let source = null;
    let pollTimer = null;
    let lastEventId = 0; // restarting the stream resumes after it (?after=) instead of replaying

    function stop() {
      if (source) source.close();
      source = null;
      if (pollTimer) clearTimeout(pollTimer);
      pollTimer = null;
    }

    function ended(p) {
      stop();
      on.ended(p);
    }

    // polling: the fallback while the events endpoint is missing or refused
    function poll() {
      api("GET", path)
        .then((p) => {
          if (FINAL.includes(p.status)) return ended(p);
          on.pipeline(p);
          pollTimer = setTimeout(poll, 1000);
        })
        .catch((error) => {
          on.error(error);
          pollTimer = setTimeout(poll, 3000);
        });
    }

    function parse(event) {
      const id = Number(event.lastEventId);
      if (Number.isInteger(id) && id > lastEventId) lastEventId = id;
      try {
        return JSON.parse(event.data);
      } catch (_) {
        return null;
      }
    }

    function restart() {
      stop();
      if (!window.EventSource) return poll();
      let heard = false;
      const after = lastEventId ? `?after=${lastEventId}` : "";
      source = new EventSource(`${path}/events${after}`);
      source.addEventListener("pipeline", (event) => {
        heard = true;
        const p = parse(event);
        if (p) on.pipeline(p);
      });
      source.addEventListener("document", (event) => {
        heard = true;
        const d = parse(event);
        if (d) on.document(d);
      });
      source.addEventListener("end", (event) => {
        heard = true;
        parse(event);
        // the log replays from the start: the 'end' of an earlier run (before a retry) is old
        // news, so the pipeline's current state decides
        api("GET", path)
          .then((p) => (FINAL.includes(p.status) ? ended(p) : on.pipeline(p)))
          .catch(on.error);
      });
      source.addEventListener("error", () => {
        // before any message: no stream here (404/405 or a proxy): poll instead. After one,
        // EventSource reconnects by itself with Last-Event-ID.
        if (!heard || source.readyState === EventSource.CLOSED) {
          stop();
          poll();
        }
      });
    }

    restart();
    return { restart, stop };
  }

  window.lorebase.follow = follow;
})();
