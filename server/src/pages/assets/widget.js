// The embeddable chat widget: one tag on any site adds a floating chat button.
//
//   <script src="https://HOST/widget.js" data-tenant="acme" data-key="PUBLIC_KEY" async></script>
//
// It talks to the service the script came from: /v1/deflect within the
// conversation the service issued (kept in the page's sessionStorage), and
// /v1/chat/tickets for a handoff; answers, choices (clarify) and the handoff
// form as on /chat. The key is a `public` one (deflect and hand off only);
// the site's origin must be listed with --widget-origin (CORS). The DOM is
// built from text only, inside a shadow root, so the site's styles and the
// widget's do not mix.
"use strict";

(() => {
  const script = document.currentScript;
  if (!script || window.__triageWidget) return;
  window.__triageWidget = true;
  const base = new URL(script.src).origin;
  const tenant = script.dataset.tenant || "";
  const key = script.dataset.key || "";
  const title = script.dataset.title || "在线客服 · Help";
  const SESSION = "triage.widget.session." + base + "." + tenant;

  const host = document.createElement("div");
  host.setAttribute("data-triage-widget", "");
  const root = host.attachShadow({ mode: "open" });
  const style = document.createElement("style");
  style.textContent = `
    :host { all: initial; }
    .btn { position: fixed; right: 20px; bottom: 20px; width: 56px; height: 56px; border-radius: 50%;
      border: none; background: #2563eb; color: #fff; font-size: 26px; cursor: pointer; z-index: 2147483646;
      box-shadow: 0 4px 14px rgba(0,0,0,.25); }
    .panel { position: fixed; right: 20px; bottom: 88px; width: 340px; max-width: calc(100vw - 40px);
      height: 460px; max-height: calc(100vh - 120px); display: none; flex-direction: column; background: #fff;
      border-radius: 12px; box-shadow: 0 8px 30px rgba(0,0,0,.25); z-index: 2147483647;
      font: 14px/1.45 system-ui, -apple-system, "Segoe UI", "PingFang SC", "Microsoft YaHei", sans-serif; color: #111; }
    .panel.open { display: flex; }
    header { padding: 10px 14px; background: #2563eb; color: #fff; border-radius: 12px 12px 0 0; font-weight: 600; }
    .msgs { flex: 1; overflow-y: auto; padding: 10px; display: flex; flex-direction: column; gap: 8px; }
    .msg { padding: 8px 10px; border-radius: 10px; max-width: 88%; white-space: pre-wrap; word-wrap: break-word; }
    .me { align-self: flex-end; background: #dbeafe; }
    .bot { align-self: flex-start; background: #f3f4f6; }
    .err { background: #fee2e2; }
    .q { font-weight: 600; margin-bottom: 4px; }
    .opt { display: block; margin-top: 6px; width: 100%; text-align: left; padding: 6px 8px; border: 1px solid #c7d2fe;
      background: #eef2ff; border-radius: 8px; cursor: pointer; font: inherit; }
    form.compose { display: flex; gap: 6px; padding: 8px; border-top: 1px solid #e5e7eb; }
    input, textarea { font: inherit; border: 1px solid #d1d5db; border-radius: 8px; padding: 6px 8px; }
    form.compose input { flex: 1; }
    button.send, button.submit { border: none; background: #2563eb; color: #fff; border-radius: 8px; padding: 6px 12px;
      cursor: pointer; font: inherit; }
    .draft { display: flex; flex-direction: column; gap: 4px; margin-top: 6px; }
    .muted { color: #6b7280; font-size: 12px; }`;
  root.appendChild(style);

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else if (k === "class") node.className = v;
      else node.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children.flat()) {
      if (c === undefined || c === null || c === false) continue;
      node.appendChild(typeof c === "string" ? document.createTextNode(c) : c);
    }
    return node;
  }

  const msgs = el("div", { class: "msgs", "data-testid": "triage-messages", "aria-live": "polite" },
    el("div", { class: "msg bot" }, "您好！请描述您的问题。\nHello! How can we help?"));
  const input = el("input", { "data-testid": "triage-input", placeholder: "输入问题 / Type your question", "aria-label": "message" });
  const send = el("button", { class: "send", type: "submit", "data-testid": "triage-send" }, "发送 / Send");
  const compose = el("form", { class: "compose" }, input, send);
  const panel = el("div", { class: "panel", role: "dialog", "aria-label": title }, el("header", {}, title), msgs, compose);
  const button = el("button", { class: "btn", "data-testid": "triage-open", "aria-label": title, title,
    onclick: () => { panel.classList.toggle("open"); if (panel.classList.contains("open")) input.focus(); } }, "💬");
  root.append(panel, button);

  function push(node) { msgs.appendChild(node); msgs.scrollTop = msgs.scrollHeight; return node; }
  const session = () => sessionStorage.getItem(SESSION);

  async function api(path, body) {
    const headers = { "Content-Type": "application/json" };
    if (key) headers["Authorization"] = "Bearer " + key;
    const res = await fetch(base + path, { method: "POST", headers, body: JSON.stringify({ ...body, tenant }) });
    let data = null;
    try { data = await res.json(); } catch (_) { /* empty */ }
    if (!res.ok) throw new Error((data && data.error ? data.error.message : res.statusText) + " (" + res.status + ")");
    return data;
  }

  function answer(c) {
    return el("div", { class: "msg bot", "data-testid": "triage-answer" }, el("div", { class: "q" }, c.article.question), c.article.answer);
  }

  function handoff(draft) {
    const contact = el("input", { placeholder: "手机或邮箱 / phone or e-mail", "data-testid": "triage-contact" });
    const note = el("textarea", { rows: 3, "data-testid": "triage-draft-body" }, (draft && draft.body) || "");
    const status = el("div");
    const submit = el("button", { class: "submit", type: "button", "data-testid": "triage-submit", onclick: async () => {
      submit.disabled = true;
      try {
        const t = await api("/v1/chat/tickets", { session_id: session(), body: note.value, contact: contact.value.trim() });
        status.replaceChildren(el("div", { class: "muted", "data-testid": "triage-created" },
          "已提交，编号 " + t.ticket_id + " / Ticket " + t.ticket_id + " created — an agent will contact you."));
      } catch (e) {
        submit.disabled = false;
        status.replaceChildren(el("div", { class: "msg err", "data-testid": "triage-error" }, "提交失败 / Could not submit: " + e.message));
      }
    } }, "提交工单 / Submit ticket");
    return el("div", { class: "msg bot", "data-testid": "triage-handoff" },
      "这个问题需要人工处理，请留下联系方式。\nThis needs a person: leave your contact and we will get back to you.",
      el("div", { class: "draft" }, note, contact, submit, status));
  }

  function clarify(r) {
    const box = el("div", {});
    for (const c of r.candidates) {
      box.appendChild(el("button", { class: "opt", type: "button", "data-testid": "triage-option", onclick: () => {
        box.replaceChildren(el("span", { class: "muted" }, c.article.question));
        push(answer(c));
      } }, c.article.question));
    }
    box.appendChild(el("button", { class: "opt", type: "button", "data-testid": "triage-none", onclick: () => {
      box.remove(); push(handoff(null));
    } }, "都不是 / None of these"));
    return el("div", { class: "msg bot", "data-testid": "triage-clarify" }, "您是想问？ / Did you mean:", box);
  }

  compose.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const text = input.value.trim();
    if (!text) return;
    input.value = "";
    push(el("div", { class: "msg me" }, text));
    send.disabled = true;
    const typing = push(el("div", { class: "msg bot muted" }, "…"));
    try {
      const msg = { text };
      if (session()) msg.session_id = session();
      const r = await api("/v1/deflect", msg);
      sessionStorage.setItem(SESSION, r.session_id);
      typing.remove();
      if (r.action === "answer" && r.candidates.length) push(answer(r.candidates[0]));
      else if (r.action === "clarify" && r.candidates.length) push(clarify(r));
      else push(handoff(r.ticket_draft));
    } catch (e) {
      typing.remove();
      push(el("div", { class: "msg bot err", "data-testid": "triage-error" }, "出错了 / Something went wrong: " + e.message));
    } finally {
      send.disabled = false;
      input.focus();
    }
  });

  const mount = () => document.body.appendChild(host);
  if (document.body) mount(); else document.addEventListener("DOMContentLoaded", mount);
})();
