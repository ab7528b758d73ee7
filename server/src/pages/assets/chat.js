// Customer self-service chat: each message goes to /v1/deflect within the
// conversation the service issued (its id comes back with every reply). An
// answer asks "did this help?" (/v1/chat/feedback, about the article shown in
// that turn); a clarify offers candidate articles; a handoff shows the
// prefilled ticket draft, editable, and submits it with /v1/chat/tickets.
"use strict";

(() => {
  const { api, el, pct, pack, nameOf } = Triage;
  const SESSION = "triage.chatSession";
  const messages = document.getElementById("messages");
  const input = document.getElementById("text");
  const send = document.getElementById("send");

  const session = () => sessionStorage.getItem(SESSION);

  function push(node) {
    messages.appendChild(node);
    messages.scrollTop = messages.scrollHeight;
    return node;
  }

  function helpful(article, turn) {
    const box = el("div", { class: "actions" });
    const done = (msg) => { box.replaceChildren(el("span", { class: "muted", "data-testid": "feedback-thanks" }, msg)); };
    const tell = (yes) => api("POST", "/v1/chat/feedback", { session_id: session(), turn, article_id: article.id, helpful: yes });
    box.append(
      el("button", { "data-testid": "helpful-yes", onclick: async () => {
        try {
          await tell(true);
          done("谢谢反馈！ / Thanks for your feedback!");
        } catch (e) { done("反馈未保存 / Feedback not saved: " + e.message); }
      } }, "👍 有帮助 / This helped"),
      el("button", { "data-testid": "helpful-no", onclick: async () => {
        done("抱歉没能解决，正在为您转人工… / Sorry — passing you to a person…");
        try { await tell(false); } catch (_) { /* the handoff matters more */ }
        handoffFromSession();
      } }, "👎 没帮助 / Not helpful"),
    );
    return box;
  }

  function answerBubble(match, turn) {
    const a = match.article;
    return el("div", { class: "msg bot", "data-testid": "answer" },
      el("div", { class: "title" }, a.question),
      a.answer,
      el("div", { class: "conf muted" }, "匹配度 / confidence " + pct(match.confidence)),
      helpful(a, turn));
  }

  async function draftCard(draft) {
    const p = await pack();
    const title = el("input", { value: draft.title || "", "data-testid": "draft-title" });
    const body = el("textarea", { rows: 4, "data-testid": "draft-body" }, draft.body || "");
    const contact = el("input", { placeholder: "手机或邮箱 / phone or e-mail", "data-testid": "draft-contact" });
    const fields = draft.fields || [];
    const status = el("div");
    const submit = el("button", { class: "primary", "data-testid": "draft-submit", onclick: async () => {
      submit.disabled = true;
      try {
        const t = await api("POST", "/v1/chat/tickets", {
          session_id: session(), title: title.value, body: body.value, contact: contact.value.trim(),
        });
        status.replaceChildren(el("div", { class: "notice", "data-testid": "ticket-created" },
          "工单已提交，编号 " + t.ticket_id + "。客服会尽快联系您。 / Ticket " + t.ticket_id + " created — an agent will contact you soon."));
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
        el("dt", {}, "分类 / Category"), el("dd", { "data-testid": "draft-category" }, draft.category ? nameOf(p.categories, draft.category) : "待人工确认 / to be decided"),
        el("dt", {}, "优先级 / Priority"), el("dd", { "data-testid": "draft-priority" }, draft.priority ? nameOf(p.priorities, draft.priority) + " (" + draft.priority + ")" : "—"),
        fields.map((x) => [el("dt", {}, x.name), el("dd", {}, x.value)])),
      el("label", {}, "联系方式（可选） / Contact (optional)"), contact,
      el("div", { class: "actions" }, submit), status);
  }

  async function handoffBubble(draft) {
    const bubble = el("div", { class: "msg bot", "data-testid": "handoff" },
      "这个问题需要人工客服处理。请确认下面的工单信息后提交。\nThis needs a person. Please check the ticket below and submit it.");
    if (draft) bubble.appendChild(await draftCard(draft));
    return bubble;
  }

  async function handoffFromSession() {
    try {
      const draft = await api("POST", "/v1/chat/draft", { session_id: session() });
      push(await handoffBubble(draft));
    } catch (e) {
      push(el("div", { class: "msg bot error" }, "出错了 / Something went wrong: " + e.message));
    }
  }

  function clarifyBubble(result) {
    const box = el("div", { class: "actions" });
    for (const c of result.candidates) {
      box.appendChild(el("button", { "data-testid": "clarify-option", onclick: () => {
        box.replaceChildren(el("span", { class: "muted" }, c.article.question));
        push(answerBubble(c, result.turn));
      } }, c.article.question));
    }
    box.appendChild(el("button", { onclick: () => { box.remove(); handoffFromSession(); } }, "都不是 / None of these"));
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
    push(el("div", { class: "msg me" }, text));
    send.disabled = true;
    const typing = push(el("div", { class: "msg bot muted" }, "…"));
    try {
      const msg = { text };
      if (session()) msg.session_id = session();
      const r = await api("POST", "/v1/deflect", msg);
      sessionStorage.setItem(SESSION, r.session_id);
      typing.remove();
      if (r.action === "answer" && r.candidates.length) push(answerBubble(r.candidates[0], r.turn));
      else if (r.action === "clarify" && r.candidates.length) push(clarifyBubble(r));
      else push(await handoffBubble(r.ticket_draft));
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
