// Agent side panel: triage + suggestions for a pasted, picked or loaded
// ticket, with confidence and evidence; accept or correct sends feedback and
// re-analyses, so the agent sees the next suggestion change at once.
"use strict";

(() => {
  const { api, el, pct, confBar, newId, pack, nameOf } = Triage;
  const $ = (id) => document.getElementById(id);
  const results = $("results");
  let current = null; // { id, title, body, triage }

  const SAMPLES = [
    { title: "空调不制冷", body: "家里的空调开了一个小时还是不制冷，吹出来的是热风。订单号 JD20240315001，电话 13812345678。" },
    { title: "Washing machine leaking", body: "My washing machine leaks water from the bottom during the spin cycle. Order AB1234567890, call me at +44 20 7946 0958." },
    { title: "冰箱冒烟", body: "冰箱后面冒烟了，还有烧焦的味道，已经拔掉电源，非常着急！" },
    { title: "Refund not received", body: "I returned the TV two weeks ago but still have not received my refund of 2,999 yuan." },
    { title: "热水器显示E4故障码", body: "热水器屏幕显示 E4，不出热水，型号 JSQ25-13WH。" },
  ];

  function fillSamples() {
    const sel = $("sample");
    SAMPLES.forEach((s, i) => sel.appendChild(el("option", { value: String(i) }, s.title)));
    sel.addEventListener("change", () => {
      const s = SAMPLES[Number(sel.value)];
      if (!s) return;
      $("ticket-id").value = ""; $("title").value = s.title; $("body").value = s.body;
      analyze();
    });
  }

  function decision(label, d, list) {
    const value = d.label ? nameOf(list, d.label) : "需人工判断 / needs a human";
    return el("div", { class: "card", "data-testid": "decision-" + label },
      el("h3", {}, { category: "分类 / Category", priority: "优先级 / Priority", queue: "队列 / Queue" }[label]),
      el("div", { class: "decision" },
        el("span", { class: "value", "data-testid": label + "-value", "data-label": d.label || "" }, value),
        d.label && d.label !== value ? el("span", { class: "muted" }, d.label) : null,
        el("span", { class: "badge" + (d.abstain ? " warn" : "") }, pct(d.confidence)),
        d.abstain ? el("span", { class: "badge warn", "data-testid": label + "-abstain" }, "需人工 / needs human") : null),
      confBar(d.confidence),
      (d.alternatives || []).length > 1 ? el("div", { class: "alts" }, "备选 / alternatives: " +
        d.alternatives.slice(0, 4).map((a) => nameOf(list, a.label) + " " + pct(a.probability)).join(" · ")) : null,
      (d.reasons || []).length ? el("ul", { class: "reasons" }, d.reasons.map((r) => el("li", {}, r))) : null);
  }

  function highlighted(text, fields) {
    const spans = fields.filter((f) => f.char_span).map((f) => ({ s: f.char_span[0], e: f.char_span[1], name: f.name }))
      .sort((a, b) => a.s - b.s);
    const chars = Array.from(text);
    const out = []; let at = 0;
    for (const sp of spans) {
      if (sp.s < at) continue;
      out.push(chars.slice(at, sp.s).join(""));
      out.push(el("mark", { title: sp.name }, chars.slice(sp.s, sp.e).join("")));
      at = sp.e;
    }
    out.push(chars.slice(at).join(""));
    return el("div", { class: "pre" }, out);
  }

  function fieldsCard(t, text) {
    if (!t.fields.length) return el("div", { class: "card" }, el("h3", {}, "字段 / Fields"), el("span", { class: "muted" }, "未识别到字段 / no fields found"));
    return el("div", { class: "card", "data-testid": "fields" }, el("h3", {}, "字段 / Fields"),
      el("table", { class: "fields" },
        el("tr", {}, el("th", {}, "字段 / field"), el("th", {}, "值 / value"), el("th", {}, "来源 / source"), el("th", {}, "置信 / conf.")),
        t.fields.map((f) => el("tr", { "data-field": f.name },
          el("td", {}, f.name), el("td", {}, f.value),
          el("td", { title: (f.reasons || []).join("; ") || undefined }, f.source === "inferred" ? "推断 / inferred" : "文本 / text"), el("td", {}, pct(f.confidence))))),
      highlighted(text, t.fields));
  }

  function hitDoc(h) { return h.doc || {}; }

  function explain(h) {
    const x = h.explanation || {};
    const parts = [];
    if (x.vector_similarity != null) parts.push("相似度 / sim " + x.vector_similarity.toFixed(2));
    if (x.bm25_rank != null) parts.push("BM25 #" + x.bm25_rank);
    if ((x.matched_terms || []).length) parts.push("词 / terms: " + x.matched_terms.slice(0, 6).join(", "));
    return el("div", { class: "muted" }, parts.join(" · "));
  }

  function suggestionsCards(s, p) {
    const similar = el("div", { class: "card", "data-testid": "similar" }, el("h3", {}, "相似工单 / Similar tickets"),
      s.similar_tickets.length ? s.similar_tickets.slice(0, 5).map((h) => {
        const d = hitDoc(h);
        return el("div", { class: "hit" },
          el("div", {}, el("strong", {}, d.title || d.id), el("span", { class: "badge" }, nameOf(p.categories, d.category || ""))),
          d.resolution ? el("div", { class: "resolution" }, "解决 / resolution: " + d.resolution) : null,
          explain(h));
      }) : el("span", { class: "muted" }, "无 / none"));
    const articles = el("div", { class: "card", "data-testid": "articles" }, el("h3", {}, "知识库 / Articles"),
      s.articles.length ? s.articles.slice(0, 4).map((h) => {
        const d = hitDoc(h);
        return el("div", { class: "hit" }, el("strong", {}, d.question || d.id),
          el("div", { class: "small" }, (d.answer || "").slice(0, 220)), explain(h));
      }) : el("span", { class: "muted" }, "无 / none"));
    const cards = [el("div", { class: "grid2" }, similar, articles)];
    if (s.predicted_resolution) {
      const r = s.predicted_resolution;
      cards.unshift(el("div", { class: "card", "data-testid": "predicted" }, el("h3", {}, "建议处理 / Predicted resolution"),
        el("div", {}, r.text), el("div", { class: "muted" }, pct(r.probability) + " · " + r.supporting_ticket_ids.join(", "))));
    }
    const dups = (s.duplicates || []).filter((d) => !current || d.ticket.id !== current.id);
    if (dups.length) {
      cards.unshift(el("div", { class: "card", "data-testid": "duplicates" }, el("h3", {}, "疑似重复 / Likely duplicates"),
        dups.map((d) => el("div", { class: "hit" }, el("strong", {}, d.ticket.title || d.ticket.id),
          el("span", { class: "badge" + (d.same_customer ? " warn" : "") }, pct(d.similarity) + (d.same_customer ? " · 同一客户 / same customer" : ""))))));
    }
    return cards;
  }

  async function fillCorrection(t) {
    const p = await pack();
    const parents = new Set(p.categories.map((c) => c.parent).filter(Boolean));
    const leaves = p.categories.filter((c) => !parents.has(c.id));
    const cat = $("fix-category"), pri = $("fix-priority");
    cat.replaceChildren(...leaves.map((c) => el("option", { value: c.id }, c.name + " (" + c.id + ")")));
    pri.replaceChildren(...p.priorities.map((x) => el("option", { value: x.id }, x.id + " " + x.name)));
    const best = t.category.label || (t.category.alternatives[0] || {}).label;
    if (best) cat.value = best;
    if (t.priority.label) pri.value = t.priority.label;
    $("correct").hidden = false;
  }

  async function analyze(ev) {
    if (ev) ev.preventDefault();
    $("form-error").textContent = "";
    const req = { title: $("title").value, body: $("body").value, customer_id: $("customer").value, channel: "web" };
    if (!req.title.trim() && !req.body.trim()) { $("form-error").textContent = "请输入内容 / Enter the request text"; return null; }
    results.replaceChildren(el("div", { class: "card muted" }, "分析中… / Analysing…"));
    try {
      const [t, s, p] = await Promise.all([api("POST", "/v1/triage", req), api("POST", "/v1/suggest", req), pack()]);
      current = { id: $("ticket-id").value.trim() || (current && current.sameText(req) ? current.id : newId("agent")), req, triage: t,
        sameText(o) { return o.title === this.req.title && o.body === this.req.body; } };
      results.replaceChildren(
        t.needs_human ? el("div", { class: "card", "data-testid": "needs-human" }, el("span", { class: "badge warn" }, "需人工 / needs a human"), " 置信度不足，请确认分类。 / Low confidence: please confirm.") : el("span"),
        el("div", { class: "grid2" }, decision("category", t.category, p.categories), decision("priority", t.priority, p.priorities)),
        decision("queue", t.queue, p.queues),
        fieldsCard(t, (req.title ? req.title + "\n" : "") + req.body),
        ...suggestionsCards(s, p));
      await fillCorrection(t);
      return t;
    } catch (e) {
      results.replaceChildren(el("div", { class: "card error" }, "分析失败 / Analysis failed: " + e.message));
      return null;
    }
  }

  async function sendFeedback(category, priority) {
    if (!current) return;
    const before = current.triage;
    const learned = $("learned");
    learned.replaceChildren(el("span", { class: "muted" }, "保存中… / Saving…"));
    try {
      await api("POST", "/v1/feedback", {
        ticket_id: current.id, title: current.req.title, body: current.req.body,
        category, priority,
      });
      const after = await analyze();
      const p = await pack();
      const was = before.category.label ? nameOf(p.categories, before.category.label) : "需人工 / needs human";
      const now = after && after.category.label ? nameOf(p.categories, after.category.label) : "需人工 / needs human";
      learned.replaceChildren(el("div", { class: "notice", "data-testid": "learned" },
        "已学习 / Learned. 分类 / category: " + was + " → " + now +
        (after ? " (" + pct(after.category.confidence) + ")" : "")));
    } catch (e) {
      learned.replaceChildren(el("div", { class: "error" }, "保存失败 / Not saved: " + e.message));
    }
  }

  async function load() {
    const id = $("ticket-id").value.trim();
    if (!id) return;
    $("form-error").textContent = "";
    try {
      const t = await api("GET", "/v1/tickets/" + encodeURIComponent(id));
      $("title").value = t.title; $("body").value = t.body; $("customer").value = t.customer_id || "";
      analyze();
    } catch (e) {
      $("form-error").textContent = "载入失败 / Could not load: " + e.message;
    }
  }

  // Learned phrasings: candidates wait for more customers or an agent; an
  // agent approves (it answers from now on) or removes (never learned again).
  async function refreshLearned() {
    const list = $("learned-list");
    try {
      const items = await api("GET", "/v1/learned");
      if (!items.length) { list.replaceChildren(el("span", { class: "muted" }, "暂无 / none yet")); return; }
      list.replaceChildren(...items.map((p) => {
        const act = (verb, path, method) => el("button", { "data-testid": "learned-" + verb, onclick: async () => {
          try { await api(method, path); refreshLearned(); } catch (e) { list.prepend(el("div", { class: "error" }, e.message)); }
        } }, verb === "approve" ? "✓ 批准 / Approve" : "✕ 移除 / Remove");
        const id = encodeURIComponent(p.id);
        return el("div", { class: "hit", "data-testid": "learned-item", "data-id": p.id, "data-status": p.status },
          el("div", {}, el("strong", {}, p.text), el("span", { class: "badge" + (p.status === "active" ? " ok" : p.status === "removed" ? " bad" : " warn") }, p.status)),
          el("div", { class: "muted" }, "→ " + p.article_id + " · " + (p.source === "agent" ? "坐席 / agent" : "客户 / customers") +
            " · 有帮助 / helped " + p.helpful_sessions + " · 没帮助 / not " + p.unhelpful_sessions),
          el("div", { class: "row" },
            p.status !== "active" ? act("approve", "/v1/learned/" + id + "/approve", "POST") : null,
            p.status !== "removed" ? act("remove", "/v1/learned/" + id, "DELETE") : null));
      }));
    } catch (e) {
      list.replaceChildren(el("div", { class: "error" }, "载入失败 / Could not load: " + e.message));
    }
  }

  fillSamples();
  refreshLearned();
  $("learned-refresh").addEventListener("click", refreshLearned);
  $("ticket-form").addEventListener("submit", analyze);
  $("load").addEventListener("click", load);
  $("accept").addEventListener("click", () => {
    const t = current && current.triage;
    if (t) sendFeedback(t.category.label || $("fix-category").value, t.priority.label || $("fix-priority").value);
  });
  $("save").addEventListener("click", () => sendFeedback($("fix-category").value, $("fix-priority").value));
})();
