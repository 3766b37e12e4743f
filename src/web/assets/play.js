// beast players' page: challenges from the info namespace; a team's own instances of per-team
// challenges (start, renew, stop) with their connection strings and time left. The info
// namespace never carries a flag, and neither does an Instance; this page shows nothing else.
"use strict";
(() => {
  const { $, el, api } = B;
  const enc = encodeURIComponent;
  const HTTP_PORTS = [80, 443, 3000, 5000, 8000, 8080, 8443];
  let infos = [];
  const instances = new Map(); // challenge -> Instance
  const busy = new Set();
  let refreshTimer = null;

  // A player's token names its team; an organiser's may act for one with /play?team=T.
  function teamQuery() {
    const c = B.claims();
    if (c && c.team) return "";
    const team = new URLSearchParams(location.search).get("team");
    return team ? "?team=" + enc(team) : "";
  }

  function connection(p) {
    const host = location.hostname;
    if (p.protocol === "udp") return "nc -u " + host + " " + p.hostPort;
    if (HTTP_PORTS.includes(p.port)) return (p.port === 443 || p.port === 8443 ? "https://" : "http://") + host + ":" + p.hostPort + "/";
    return "nc " + host + " " + p.hostPort;
  }

  function connections(list) {
    const seen = new Set();
    return list.filter((p) => !seen.has(p.hostPort) && seen.add(p.hostPort)).map((p) => {
      const text = connection(p);
      const copy = el("button", { type: "button", class: "link", text: "copy",
        onclick: () => navigator.clipboard && navigator.clipboard.writeText(text) });
      return el("div", { class: "conn" }, el("code", { class: "connection", text }), copy);
    });
  }

  async function loadInstances() {
    const c = B.claims();
    if (!teamQuery() && !(c && c.team)) return false;
    const r = await api("GET", "/api/v1/instances" + teamQuery());
    instances.clear();
    for (const i of r.data.items) {
      const had = instances.get(i.challenge);
      if (!had || had.createdAt < i.createdAt) instances.set(i.challenge, i);
    }
    return true;
  }

  async function refresh() {
    clearTimeout(refreshTimer);
    try {
      infos = (await api("GET", "/api/v1/info/challenges")).data.items;
      let canAct = false;
      try {
        canAct = await loadInstances();
      } catch (e) {
        if (e.status === 401) return;
        notice(e.status === 404 ? "" : "instances: " + e.message);
      }
      render(canAct);
    } catch (e) {
      if (e.status !== 401) notice(e.message);
    }
    refreshTimer = setTimeout(refresh, 30000);
  }

  function notice(text) {
    $("notice").hidden = !text;
    $("notice").textContent = text;
  }

  function render(canAct) {
    $("cards").replaceChildren(...infos.map((i) => card(i, canAct)));
    $("empty").hidden = infos.length > 0;
    tick();
  }

  function card(info, canAct) {
    const files = info.attachments.map((a) =>
      el("li", {}, a.available
        ? el("button", { type: "button", class: "link attachment", "data-url": a.url, text: a.name,
          onclick: () => B.download(a.url, a.name).catch((e) => notice(e.message)) })
        : el("span", { class: "muted", text: a.name + " (unavailable)" }),
        a.size !== null ? el("span", { class: "muted", text: " " + a.size + " B" }) : null));
    return el("article", { class: "card", "data-name": info.name },
      el("h2", {}, el("span", { text: info.name }),
        info.points !== null ? el("span", { class: "points", text: info.points + " pts" }) : null),
      el("div", { class: "tags" }, info.category ? el("span", { text: info.category }) : null,
        info.tags.map((t) => el("span", { text: t }))),
      el("p", { class: "desc", text: info.description }),
      info.hints.length ? el("details", {}, el("summary", { text: "hints (" + info.hints.length + ")" }),
        el("ul", {}, info.hints.map((h) => el("li", { text: h })))) : null,
      files.length ? el("ul", { class: "files" }, files) : null,
      info.perTeam ? instanceBox(info, canAct) : connections(info.connection));
  }

  function instanceBox(info, canAct) {
    const box = el("div", { class: "instance" });
    const inst = instances.get(info.name);
    const ttl = info.instanceTtlSeconds ? " for " + B.duration(info.instanceTtlSeconds) : "";
    if (!canAct) {
      box.append(el("p", { class: "muted", text: "Your own instance: open this page with your team's token." }));
      return box;
    }
    const button = (text, cls, fn) =>
      el("button", { type: "button", class: cls, text, disabled: busy.has(info.name), onclick: () => run(info.name, fn) });
    if (!inst) {
      box.append(el("div", { class: "row" },
        el("span", { class: "muted", text: "Your team's own copy" + ttl + "." }),
        button("start", "start", () => start(info.name))));
      return box;
    }
    box.dataset.instance = inst.id;
    box.append(
      el("div", { class: "row" }, el("span", { class: "phase " + inst.phase, text: inst.phase }),
        el("span", {}, "expires in ", el("span", { class: "countdown", "data-expires": inst.expiresAt })),
        el("span", { class: "muted renewals", text: inst.renewals + "/" + inst.maxRenewals + " renewals" })),
      ...connections(inst.connection),
      el("div", { class: "row" },
        button("renew", "renew", () => renew(info.name)),
        button("stop", "stop", () => stop(info.name))));
    return box;
  }

  async function run(name, fn) {
    busy.add(name);
    render(true);
    try {
      await fn();
      notice("");
    } catch (e) {
      if (e.status === 409 && e.body && e.body.instance) instances.set(name, e.body.instance);
      notice(name + ": " + e.message + (e.retryAfter ? " (retry in " + e.retryAfter + " s)" : ""));
    }
    busy.delete(name);
    render(true);
  }

  async function start(name) {
    const r = await api("POST", "/api/v1/instances/" + enc(name) + teamQuery());
    instances.set(name, r.data);
    render(true);
    for (let n = 0; n < 90 && instances.get(name) && instances.get(name).phase !== "Running"; n++) {
      await new Promise((ok) => setTimeout(ok, 1000));
      instances.set(name, (await api("GET", "/api/v1/instances/" + enc(name) + teamQuery())).data);
      render(true);
    }
  }

  async function renew(name) {
    instances.set(name, (await api("POST", "/api/v1/instances/" + enc(name) + "/renew" + teamQuery())).data);
  }

  async function stop(name) {
    await api("DELETE", "/api/v1/instances/" + enc(name) + teamQuery());
    instances.delete(name);
  }

  function tick() {
    for (const node of document.querySelectorAll("[data-expires]")) {
      const left = (Date.parse(node.dataset.expires) - Date.now()) / 1000;
      node.textContent = B.duration(left);
      node.dataset.seconds = String(Math.max(0, Math.round(left)));
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    setInterval(tick, 1000);
    B.start("/api/v1/info/challenges", () => {
      const c = B.claims();
      $("whoami").textContent = c && c.team ? "team " + c.team : c && c.role ? c.role : "";
      refresh();
    }, () => clearTimeout(refreshTimer));
  });
})();
