// Customer self-service chat: each message goes to /v1/deflect with a session
// id. An answer shows "did this help?" (feedback); a clarify offers candidate
// articles; a handoff shows the prefilled ticket draft, editable, and submits
// it with PUT /v1/tickets/{id}.
"use strict";

(() => {
  const { api, el, pct, newId, pack, nameOf } = Triage;
  const sessionId = sessionStorage.getItem("triage.session") || newId("chat");
  sessionStorage.setItem("triage.session", sessionId);
  const messages = document.getElementById("messages");
  const input = document.getElementById("text");
  const send = document.getElementById("send");
  const transcript = [];

  function push(node) {
    messages.appendChild(node);
    messages.scrollTop = messages.scrollHeight;
    return node;
  }

  function helpful(article, text) {
    const box = el("div", { class: "actions" });
    const done = (msg) => { box.replaceChildren(el("span", { class: "muted", "data-testid": "feedback-thanks" }, msg)); };
    box.append(
      el("button", { "data-testid": "helpful-yes", onclick: async () => {
        try {
          await api("POST", "/v1/feedback", { solved_by_article: article.id, message: text });
          done("谢谢反馈！ / Thanks for your feedback!");
        } catch (e) { done("反馈未保存 / Feedback not saved: " + e.message); }
      } }, "👍 有帮助 / This helped"),
      el("button", { "data-testid": "helpful-no", onclick: () => {
        done("抱歉没能解决，正在为您转人工… / Sorry — passing you to a person…");
        handoffFromText(text);
      } }, "👎 没帮助 / Not helpful"),
    );
    return box;
  }

  function answerBubble(match, text) {
    const a = match.article;
    return el("div", { class: "msg bot", "data-testid": "answer" },
      el("div", { class: "title" }, a.question),
      a.answer,
      el("div", { class: "conf muted" }, "匹配度 / confidence " + pct(match.confidence)),
      helpful(a, text));
  }

  async function draftCard(draft, text) {
    const p = await pack();
    const t = draft.triage || {};
    const title = el("input", { value: draft.title || text.slice(0, 60), "data-testid": "draft-title" });
    const body = el("textarea", { rows: 4, "data-testid": "draft-body" }, draft.body || text);
    const contact = el("input", { placeholder: "手机或邮箱 / phone or e-mail", "data-testid": "draft-contact" });
    const cat = t.category && t.category.label;
    const pri = t.priority && t.priority.label;
    const queue = t.queue && t.queue.label;
    const fields = (t.fields || []).filter((f) => f.source === "extracted");
    const status = el("div");
    const submit = el("button", { class: "primary", "data-testid": "draft-submit", onclick: async () => {
      submit.disabled = true;
      const id = newId("chat");
      const f = {};
      for (const x of fields) f[x.name] = x.value;
      if (contact.value.trim()) f.contact = contact.value.trim();
      try {
        await api("PUT", "/v1/tickets/" + encodeURIComponent(id), {
          title: title.value, body: body.value, channel: "chat", status: "open",
          category: cat || "", priority: pri || "", queue: queue || "", fields: f,
          created_at: new Date().toISOString().replace(/\.\d+Z$/, "Z"),
        });
        status.replaceChildren(el("div", { class: "notice", "data-testid": "ticket-created" },
          "工单已提交，编号 " + id + "。客服会尽快联系您。 / Ticket " + id + " created — an agent will contact you soon."));
      } catch (e) {
        submit.disabled = false;
        status.replaceChildren(el("div", { class: "error" }, "提交失败 / Could not submit: " + e.message));
      }
    } }, "提交工单 / Submit ticket");
    return el("div", { class: "draft", "data-testid": "ticket-draft" },
      el("strong", {}, "工单草稿 / Ticket draft"),
      el("label", {}, "标题 / Title"), title,
      el("label", {}, "描述 / Description"), body,
      el("dl", {},
        el("dt", {}, "分类 / Category"), el("dd", { "data-testid": "draft-category" }, cat ? nameOf(p.categories, cat) : "待人工确认 / to be decided"),
        el("dt", {}, "优先级 / Priority"), el("dd", { "data-testid": "draft-priority" }, pri ? nameOf(p.priorities, pri) + " (" + pri + ")" : "—"),
        fields.map((x) => [el("dt", {}, x.name), el("dd", {}, x.value)])),
      el("label", {}, "联系方式（可选） / Contact (optional)"), contact,
      el("div", { class: "actions" }, submit), status);
  }

  async function handoffBubble(result, text) {
    const bubble = el("div", { class: "msg bot", "data-testid": "handoff" },
      "这个问题需要人工客服处理。请确认下面的工单信息后提交。\nThis needs a person. Please check the ticket below and submit it.");
    if (result.ticket_draft) bubble.appendChild(await draftCard(result.ticket_draft, text));
    return bubble;
  }

  async function handoffFromText(text) {
    try {
      const t = await api("POST", "/v1/triage", { title: "", body: transcript.join("\n"), channel: "chat" });
      push(await handoffBubble({ ticket_draft: { title: text.slice(0, 60), body: transcript.join("\n"), triage: t } }, text));
    } catch (e) {
      push(el("div", { class: "msg bot error" }, "出错了 / Something went wrong: " + e.message));
    }
  }

  function clarifyBubble(result, text) {
    const box = el("div", { class: "actions" });
    for (const c of result.candidates) {
      box.appendChild(el("button", { "data-testid": "clarify-option", onclick: () => {
        box.replaceChildren(el("span", { class: "muted" }, c.article.question));
        push(answerBubble(c, text));
      } }, c.article.question));
    }
    box.appendChild(el("button", { onclick: () => { box.remove(); handoffFromText(text); } }, "都不是 / None of these"));
    const prompt = result.candidates.length === 1
      ? "您是想问这个问题吗？ / Did you mean this?"
      : "您是想问以下哪个问题？ / Did you mean one of these?";
    return el("div", { class: "msg bot", "data-testid": "clarify" }, prompt, box);
  }

  async function onSend(ev) {
    ev.preventDefault();
    const text = input.value.trim();
    if (!text) return;
    input.value = "";
    transcript.push(text);
    push(el("div", { class: "msg me" }, text));
    send.disabled = true;
    const typing = push(el("div", { class: "msg bot muted" }, "…"));
    try {
      const r = await api("POST", "/v1/deflect", { text, session_id: sessionId });
      typing.remove();
      if (r.action === "answer" && r.candidates.length) push(answerBubble(r.candidates[0], text));
      else if (r.action === "clarify" && r.candidates.length) push(clarifyBubble(r, text));
      else push(await handoffBubble(r, text));
    } catch (e) {
      typing.remove();
      push(el("div", { class: "msg bot error" }, "出错了 / Something went wrong: " + e.message));
    } finally {
      send.disabled = false;
      input.focus();
    }
  }

  document.getElementById("composer").addEventListener("submit", onSend);
  input.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); onSend(e); }
  });
})();
