// beast dashboard: the challenge table, live from the event stream, and one challenge's detail.
"use strict";
(() => {
  const { $, el, api } = B;
  const enc = encodeURIComponent;
  let items = [];
  let selected = null;
  let feed = null;
  let refreshTimer = null;
  let logAbort = null;
  let taskTimer = null;
  const flashes = new Map(); // challenge -> time of its last heal
  let secrets = []; // the selected challenge's flags (known with an author token), masked in logs
  const HIDDEN = "•••• (hidden)";
  const mask = (text) => secrets.reduce((t, f) => t.split(f).join(HIDDEN), String(text));

  const main = (s) => s.status.containers.filter((c) => !c.service);
  const isReady = (c) => c.state === "running" && c.health !== "unhealthy" && c.health !== "starting";
  const ports = (cs) =>
    cs.flatMap((c) => c.ports.map((p) => p.hostPort + "→" + p.port + "/" + p.protocol))
      .filter((v, i, a) => a.indexOf(v) === i).join(" ");
  const condition = (s, type) => s.status.conditions.find((c) => c.type === type) || {};

  async function load() {
    const labels = $("filter-labels").value.trim();
    const query = labels ? "?labelSelector=" + enc(labels) : "";
    try {
      const r = await api("GET", "/api/v1/status/challenges" + query);
      $("filter-error").textContent = "";
      items = r.data.items;
      render();
      if (selected) renderDetail(items.find((s) => s.name === selected));
    } catch (e) {
      if (e.status !== 401) $("filter-error").textContent = e.message;
    }
  }

  function scheduleLoad() {
    clearTimeout(refreshTimer);
    refreshTimer = setTimeout(load, 150);
  }

  function render() {
    const count = (p) => items.filter((s) => s.status.phase === p).length;
    $("count-running").textContent = count("Running");
    $("count-degraded").textContent = count("Degraded");
    $("count-failed").textContent = count("Failed");
    $("count-building").textContent = count("Building");
    $("count-total").textContent = items.length;
    const phase = $("filter-phase").value;
    const shown = items.filter((s) => !phase || s.status.phase === phase);
    const now = Date.now();
    $("rows").replaceChildren(...shown.map((s) => row(s, now)));
    $("empty").hidden = shown.length > 0;
  }

  function row(s, now) {
    const cs = main(s);
    const health = condition(s, "Healthy");
    const healed = flashes.get(s.name);
    const tr = el("tr", {
      "data-name": s.name,
      "data-phase": s.status.phase,
      class: [s.name === selected ? "sel" : "", healed && now - healed < 2000 ? "flash" : ""].join(" ").trim() || null,
    },
      el("td", {}, el("button", { type: "button", class: "link", text: s.name, onclick: () => select(s.name) })),
      el("td", {}, el("span", { class: "phase " + s.status.phase, text: s.status.phase })),
      el("td", { class: "ready", text: cs.filter(isReady).length + "/" + cs.length }),
      el("td", { class: "s-" + (health.status || "Unknown"), title: health.message || null,
        text: (health.status || "Unknown") + (health.reason ? " " + health.reason : "") }),
      el("td", { class: "restarts", text: s.status.restarts }),
      el("td", { class: "mono", text: ports(s.status.containers) }),
      el("td", { class: "mono", text: s.source }),
      el("td", { class: "mono", title: s.commit || null, text: s.commit ? s.commit.slice(0, 10) : "" }));
    return tr;
  }

  function select(name) {
    if (selected === name) return;
    selected = name;
    secrets = [];
    stopLog();
    $("d-task").textContent = "";
    $("d-log").textContent = "";
    $("d-manifest").textContent = "";
    render();
    renderDetail(items.find((s) => s.name === name));
    loadManifest(name);
    startLog(name);
    $("detail").scrollIntoView({ block: "nearest" });
  }

  function close() {
    selected = null;
    stopLog();
    clearTimeout(taskTimer);
    $("detail").hidden = true;
    render();
  }

  function renderDetail(s) {
    if (!s) {
      $("detail").hidden = true;
      return;
    }
    $("detail").hidden = false;
    $("d-name").textContent = s.name;
    $("d-phase").textContent = s.status.phase;
    $("d-phase").className = "phase " + s.status.phase;
    $("d-conditions").replaceChildren(...s.status.conditions.map((c) =>
      el("tr", {}, el("td", { text: c.type }), el("td", { class: "s-" + c.status, text: c.status }),
        el("td", { text: c.reason }), el("td", { text: c.message }))));
    $("d-containers").replaceChildren(...s.status.containers.map((c) =>
      el("tr", { "data-id": c.id },
        el("td", { class: "mono", text: c.name }), el("td", { class: "mono", title: c.id, text: c.id.slice(0, 12) }),
        el("td", { text: c.replica }), el("td", { text: c.service || "" }), el("td", { text: c.node || "" }),
        el("td", { text: c.state }), el("td", { class: "h-" + c.health, text: c.health }),
        el("td", { class: "mono", text: ports([c]) }))));
    const t = s.status.lastTermination;
    $("d-term").textContent = t
      ? t.container + " exited with code " + t.exitCode + (t.oomKilled ? " (OOM killed)" : "") +
        (t.reason ? ": " + t.reason : "") + " at " + B.time(t.time)
      : "none";
    $("d-term-log").hidden = !(t && t.logTail && t.logTail.length);
    $("d-term-log").textContent = t && t.logTail ? mask(t.logTail.join("\n")) : "";
    $("d-events").replaceChildren(...s.status.events.slice().reverse().map((e) =>
      el("li", { class: e.type }, el("span", { class: "time", text: B.time(e.time) }),
        el("span", { class: "reason", text: e.reason }), mask(e.message))));
  }

  // The manifest with its flags hidden (authors may read it; the page never shows a flag).
  // Remembers the static flags in `secrets`, so the logs shown can mask them too.
  function redact(m) {
    const hide = (v) => {
      if (typeof v === "string" && v.length >= 4) secrets.push(v);
      return HIDDEN;
    };
    const env = (o) => {
      if (o && o.env) for (const k of Object.keys(o.env)) if (/flag/i.test(k)) o.env[k] = hide(o.env[k]);
    };
    const spec = m.spec || {};
    if ("flag" in spec) spec.flag = hide(spec.flag);
    if (spec.instances && spec.instances.flag) spec.instances.flag = HIDDEN;
    env(spec);
    (spec.services || []).forEach(env);
    return m;
  }

  async function loadManifest(name) {
    try {
      const r = await api("GET", "/api/v1/manage/challenges/" + enc(name));
      if (selected !== name) return;
      $("d-manifest").textContent = JSON.stringify(redact(r.data), null, 2);
      $("d-log").textContent = mask($("d-log").textContent);
      renderDetail(items.find((s) => s.name === name));
    } catch (e) {
      if (selected === name) $("d-manifest").textContent = e.status === 403 ? "(an author token reads manifests)" : e.message;
    }
  }

  function stopLog() {
    if (logAbort) logAbort.abort();
    logAbort = null;
  }

  function startLog(name) {
    stopLog();
    const abort = new AbortController();
    logAbort = abort;
    const pre = $("d-log");
    let fresh = true; // a reconnect replaces the text with its first chunk (no empty flash)
    const append = (text) => {
      const lines = mask((fresh ? "" : pre.textContent) + text).split("\n");
      fresh = false;
      pre.textContent = lines.slice(-400).join("\n");
      pre.scrollTop = pre.scrollHeight;
    };
    const run = async () => {
      while (!abort.signal.aborted && selected === name) {
        try {
          await B.follow("/api/v1/status/challenges/" + enc(name) + "/logs?tail=100&follow=true", append, abort.signal);
        } catch (e) {
          if (abort.signal.aborted) return;
          if (e.status === 403 || e.status === 404) return append("(" + e.message + ")\n");
        }
        await new Promise((r) => setTimeout(r, 2000));
        fresh = true;
      }
    };
    run();
  }

  async function act(action) {
    const name = selected;
    if (!name) return;
    const out = $("d-task");
    clearTimeout(taskTimer);
    out.textContent = action + ": sending…";
    try {
      const r = await api("POST", "/api/v1/manage/challenges/" + enc(name) + "/" + action);
      pollTask(r.data.task);
    } catch (e) {
      out.textContent = action + " refused: " + e.message;
    }
  }

  function pollTask(task) {
    const out = $("d-task");
    out.dataset.state = task.state;
    out.dataset.task = task.id;
    out.textContent = task.action + " " + task.id + ": " + task.state + (task.message ? " (" + task.message + ")" : "");
    if (task.state === "succeeded" || task.state === "failed") return scheduleLoad();
    taskTimer = setTimeout(async () => {
      try {
        pollTask((await api("GET", "/api/v1/status/tasks/" + enc(task.id))).data);
      } catch (e) {
        out.textContent = task.action + " " + task.id + ": " + e.message;
      }
    }, 500);
  }

  function notified(kind, n, id) {
    if (kind === "reset") return scheduleLoad();
    const challenge = n.challenge || "";
    if (kind === "heal") {
      flashes.set(challenge, Date.now());
      flashes.set(challenge.split(".")[0], Date.now());
    }
    const list = $("feed");
    list.prepend(el("li", { class: kind, "data-kind": kind, "data-challenge": challenge, "data-id": id },
      el("span", { class: "time", text: B.time(n.time) }), el("span", { class: "kind", text: kind }),
      el("b", { text: challenge }), " ", n.message || ""));
    while (list.children.length > 100) list.lastChild.remove();
    scheduleLoad();
  }

  function startFeed() {
    if (feed) feed.stop();
    feed = B.stream("/api/v1/notification/events", {
      event: notified,
      open: () => { $("live").textContent = "live"; $("live").classList.add("on"); scheduleLoad(); },
      down: () => { $("live").textContent = "reconnecting"; $("live").classList.remove("on"); },
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("filters").addEventListener("submit", (ev) => { ev.preventDefault(); load(); });
    $("filter-phase").addEventListener("change", render);
    $("d-close").addEventListener("click", close);
    for (const b of document.querySelectorAll("[data-action]")) b.addEventListener("click", () => act(b.dataset.action));
    B.start("/api/v1/status/challenges", (data) => {
      items = data.items;
      render();
      startFeed();
    }, () => {
      if (feed) feed.stop();
      feed = null;
      stopLog();
      $("live").textContent = "offline";
      $("live").classList.remove("on");
    });
  });
})();
