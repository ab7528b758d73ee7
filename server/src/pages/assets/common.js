// Shared helpers of the two pages: API calls (with an optional API key kept
// in localStorage) and safe DOM building (text only, never innerHTML).
"use strict";

const Triage = (() => {
  const KEY = "triage.apiKey";

  async function api(method, path, body) {
    const headers = { "Content-Type": "application/json" };
    const key = localStorage.getItem(KEY);
    if (key) headers["Authorization"] = "Bearer " + key;
    const res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    let data = null;
    try { data = await res.json(); } catch (_) { /* empty body */ }
    if (!res.ok) {
      const msg = data && data.error ? data.error.message : res.statusText;
      if (res.status === 401 || res.status === 403) {
        const k = prompt((res.status === 403 ? "此密钥无权访问 / This key may not do that. " : "") + "API key / 访问密钥:");
        if (k) { localStorage.setItem(KEY, k); return api(method, path, body); }
      }
      throw new Error(msg + " (" + res.status + ")");
    }
    return data;
  }

  // el("div", {class: "x", onclick: f}, "text", child, ...)
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else if (k === "class") node.className = v;
      // Through the CSSOM: the pages' Content-Security-Policy refuses style attributes.
      else if (k === "style") node.style.cssText = v;
      else node.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children.flat()) {
      if (c === undefined || c === null || c === false) continue;
      node.appendChild(typeof c === "string" || typeof c === "number" ? document.createTextNode(String(c)) : c);
    }
    return node;
  }

  function pct(x) { return Math.round((x || 0) * 100) + "%"; }

  function confBar(x) {
    return el("div", { class: "bar", title: pct(x) }, el("span", { style: "width:" + pct(x) }));
  }

  function newId(prefix) {
    const r = Math.random().toString(36).slice(2, 8);
    return prefix + "-" + Date.now().toString(36) + "-" + r;
  }

  // Category id -> display name, from /v1/pack (loaded once).
  let packPromise = null;
  function pack() {
    if (!packPromise) packPromise = api("GET", "/v1/pack").catch(() => ({ categories: [], priorities: [], queues: [] }));
    return packPromise;
  }
  function nameOf(list, id) {
    const hit = (list || []).find((x) => x.id === id);
    return hit ? hit.name : id;
  }

  return { api, el, pct, confBar, newId, pack, nameOf };
})();
