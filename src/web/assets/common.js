// beast web pages: what both pages share. The token, API calls, the login prompt, the
// event-stream reader and a DOM helper that only ever sets text (never HTML).
"use strict";
const B = (() => {
  const KEY = "beast.token";
  const $ = (id) => document.getElementById(id);
  let onAuthLost = () => {};

  // el("td", {class: "x", title: t}, "text", child, ...): text children become text nodes.
  function el(tag, attrs, ...kids) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "text") node.textContent = String(v);
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? "" : String(v));
    }
    for (const kid of kids.flat()) {
      if (kid === undefined || kid === null || kid === false) continue;
      node.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
    }
    return node;
  }

  const token = () => sessionStorage.getItem(KEY) || "";

  // The claims of the token, for display only (the server checks the token, not this).
  function claims() {
    const part = token().split(".")[1];
    if (!part) return null;
    try {
      return JSON.parse(atob(part.replace(/-/g, "+").replace(/_/g, "/")));
    } catch (_) {
      return null;
    }
  }

  class ApiError extends Error {
    constructor(status, code, message, body) {
      super(message);
      this.status = status;
      this.code = code;
      this.body = body;
    }
  }

  function headers(extra) {
    const h = Object.assign({}, extra || {});
    if (token()) h.Authorization = "Bearer " + token();
    return h;
  }

  // fetch with the token; a 401 brings the prompt back; errors carry the API's message.
  async function api(method, path, body) {
    const init = { method, headers: headers(body ? { "Content-Type": "application/json" } : {}) };
    if (body) init.body = JSON.stringify(body);
    const res = await fetch(path, init);
    const type = res.headers.get("content-type") || "";
    const data = type.startsWith("application/json") ? await res.json().catch(() => null) : await res.text();
    if (res.ok) return { status: res.status, data, headers: res.headers };
    const err = (data && data.error) || {};
    const e = new ApiError(res.status, err.code || String(res.status), err.message || res.statusText, data);
    e.retryAfter = res.headers.get("retry-after");
    if (res.status === 401) authLost(e.message);
    throw e;
  }

  function authLost(message) {
    const had = token() !== "";
    sessionStorage.removeItem(KEY);
    $("main").hidden = true;
    $("logout").hidden = true;
    $("login").hidden = false;
    $("login-error").textContent = had && message ? "Token refused: " + message : "";
    $("token").focus();
    onAuthLost();
  }

  // Shows the page once `probe` answers; otherwise the token prompt.
  function start(probe, ready, lost) {
    onAuthLost = lost || onAuthLost;
    $("logout").addEventListener("click", () => authLost(""));
    $("login-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const value = $("token").value.trim();
      $("token").value = "";
      if (!value) return;
      sessionStorage.setItem(KEY, value);
      attempt();
    });
    async function attempt() {
      try {
        const r = await api("GET", probe);
        $("login").hidden = true;
        $("main").hidden = false;
        $("logout").hidden = !token();
        ready(r.data);
      } catch (e) {
        if (e.status !== 401) {
          $("login").hidden = false;
          $("login-error").textContent = e.status === 403 ? "This token may not see this page (" + e.message + ")" : String(e.message);
          if (e.status === 403) sessionStorage.removeItem(KEY);
        }
      }
    }
    attempt();
  }

  // Server-sent events over fetch (EventSource cannot send a bearer token). Resumes with
  // Last-Event-ID after a drop. handlers: {event(type, data, id), open(), down()}.
  function stream(path, handlers) {
    let lastId = null;
    let stopped = false;
    let controller = null;
    let delay = 500;
    async function connect() {
      while (!stopped) {
        controller = new AbortController();
        try {
          const h = headers({ Accept: "text/event-stream" });
          if (lastId !== null) h["Last-Event-ID"] = lastId;
          const res = await fetch(path, { headers: h, signal: controller.signal, cache: "no-store" });
          if (res.status === 401) {
            authLost("the event stream refused the token");
            return;
          }
          if (!res.ok || !res.body) throw new Error("stream " + res.status);
          handlers.open && handlers.open();
          delay = 500;
          await read(res.body.getReader());
        } catch (_) {
          if (stopped) return;
        }
        handlers.down && handlers.down();
        await new Promise((r) => setTimeout(r, delay));
        delay = Math.min(delay * 2, 10000);
      }
    }
    async function read(reader) {
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        buffer += decoder.decode(value, { stream: true });
        let cut;
        while ((cut = buffer.search(/\r?\n\r?\n/)) >= 0) {
          const block = buffer.slice(0, cut);
          buffer = buffer.slice(cut).replace(/^\r?\n\r?\n/, "");
          dispatch(block);
        }
      }
    }
    function dispatch(block) {
      let type = "message", id = null;
      const data = [];
      for (const line of block.split(/\r?\n/)) {
        if (!line || line.startsWith(":")) continue;
        const i = line.indexOf(":");
        const field = i < 0 ? line : line.slice(0, i);
        const value = i < 0 ? "" : line.slice(i + 1).replace(/^ /, "");
        if (field === "event") type = value;
        else if (field === "data") data.push(value);
        else if (field === "id") id = value;
      }
      if (id !== null) lastId = id;
      if (!data.length) return;
      let parsed = null;
      try {
        parsed = JSON.parse(data.join("\n"));
      } catch (_) {
        return;
      }
      handlers.event(type, parsed, id);
    }
    connect();
    return { stop() { stopped = true; controller && controller.abort(); } };
  }

  // Streams a text response into `onChunk` until aborted (follow=true logs).
  async function follow(path, onChunk, signal) {
    const res = await fetch(path, { headers: headers(), signal, cache: "no-store" });
    if (res.status === 401) return authLost("the log stream refused the token");
    if (!res.ok || !res.body) throw new ApiError(res.status, String(res.status), res.statusText);
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      onChunk(decoder.decode(value, { stream: true }));
    }
  }

  // Downloads an API file with the token (a plain link could not send it).
  async function download(path, name) {
    const res = await fetch(path, { headers: headers() });
    if (res.status === 401) return authLost("the download refused the token");
    if (!res.ok) throw new ApiError(res.status, String(res.status), "download failed: " + res.status);
    const url = URL.createObjectURL(await res.blob());
    const a = el("a", { href: url, download: name.split("/").pop() });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  }

  const time = (t) => (t ? new Date(t).toLocaleTimeString() : "");

  function duration(seconds) {
    if (seconds <= 0) return "expired";
    const h = Math.floor(seconds / 3600), m = Math.floor((seconds % 3600) / 60), s = Math.floor(seconds % 60);
    const two = (n) => String(n).padStart(2, "0");
    return (h ? h + ":" + two(m) : m) + ":" + two(s);
  }

  return { $, el, api, start, stream, follow, download, claims, time, duration, token, ApiError };
})();
