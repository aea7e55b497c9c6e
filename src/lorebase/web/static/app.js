// Shared helpers of the dashboard. Every piece of data goes into the page through
// textContent / createElement (never innerHTML): documents and names are untrusted text.
"use strict";

(function () {
  const FINAL = ["completed", "completed_with_errors", "failed", "cancelled"];

  class ApiError extends Error {
    constructor(status, body) {
      const err = (body && body.error) || {};
      super(err.message || `request failed (${status})`);
      this.status = status;
      this.code = err.code;
      this.details = err.details;
    }
  }

  // fetch the JSON API with the session cookie; the header proves to api/deps.py that the
  // request comes from our own scripts (CSRF), a FormData body is sent as multipart
  async function api(method, path, body) {
    const init = { method, credentials: "same-origin", headers: { "X-Requested-With": "lorebase" } };
    if (body instanceof FormData) {
      init.body = body;
    } else if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch(path, init);
    if (response.status === 401) {
      window.location.assign("/login?next=" + encodeURIComponent(location.pathname + location.search));
      throw new ApiError(401, null);
    }
    if (response.status === 204) return null;
    const data = await response.json().catch(() => null);
    if (!response.ok) throw new ApiError(response.status, data);
    return data;
  }

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "text") node.textContent = String(value);
      else if (key === "className") node.className = value;
      else node.setAttribute(key, String(value));
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function badge(status) {
    return el("span", { className: "badge badge-" + String(status).replace(/[^a-z_]/g, ""), text: status });
  }

  // only http(s) URLs become links: a javascript: URL must never be clickable
  function httpUrl(value) {
    if (!value) return null;
    try {
      const url = new URL(value, location.href);
      return url.protocol === "http:" || url.protocol === "https:" ? url.href : null;
    } catch (_) {
      return null;
    }
  }

  // the page's notice (#notice), or another box of the page given by id
  function notice(message, kind, id) {
    const box = document.getElementById(id || "notice");
    if (!box) return;
    box.textContent = message || "";
    box.className = "notice " + (kind || "error");
    box.hidden = !message;
  }

  function report(error, id) {
    notice(error && error.message ? error.message : String(error), "error", id);
  }

  window.lorebase = { api, el, badge, httpUrl, notice, report, FINAL, ApiError };
})();
