// The insights dashboard: tickets per day by category (uPlot), the chat's
// answer / clarify / handoff rates and the triage's abstention rate, the
// emerging problems with their sparklines and examples, the knowledge gaps
// with an editable draft and a publish button, the open tickets at risk of
// escalation, and a field × category heat map. Everything comes from
// /v1/insights/* and /v1/pack; text is set as text, never as HTML.
"use strict";

(() => {
  const { api, el, pct, pack, nameOf } = Triage;
  const $ = (id) => document.getElementById(id);
  const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#65a30d", "#475569", "#ea580c"];
  const STATUS = { new: ["新 / new", "bad"], growing: ["增长 / growing", "warn"], steady: ["平稳 / steady", "ok"] };
  let charts = [];

  const secs = (iso) => Date.parse(iso) / 1000;

  function clearCharts() {
    charts.forEach((c) => c.destroy());
    charts = [];
  }

  function volumeChart(ov, categories) {
    const box = $("volume");
    box.replaceChildren();
    const series = ov.volume.filter((s) => s.counts.some((n) => n > 0));
    if (!series.length) { box.appendChild(el("div", { class: "muted" }, "窗口内没有工单 / no tickets in the window")); return; }
    const x = ov.days.map(secs);
    const opts = {
      width: Math.max(320, box.clientWidth - 4), height: 240,
      scales: { x: { time: true } },
      axes: [{}, { label: "工单 / tickets" }],
      series: [{}].concat(series.map((s, i) => ({
        label: s.category ? nameOf(categories, s.category) : "未分类 / unlabelled",
        stroke: COLORS[i % COLORS.length], width: 2, points: { show: false },
      }))),
      legend: { live: false },
    };
    charts.push(new uPlot(opts, [x].concat(series.map((s) => s.counts)), box));
  }

  function rateRow(label, value, n, testid) {
    return el("div", { class: "rate", "data-testid": testid },
      el("div", { class: "rate-head" }, el("span", {}, label), el("strong", {}, pct(value)), el("span", { class: "muted" }, String(n))),
      el("div", { class: "bar" }, el("span", { style: "width:" + pct(value) })));
  }

  function rates(ov) {
    const d = ov.deflection, t = ov.triage;
    $("rates").replaceChildren(
      el("div", { class: "muted" }, "对话 / chat messages: " + d.messages + " · 转人工工单 / handoff tickets: " + d.tickets),
      rateRow("自动解答 / answered", d.answer_rate, d.answer, "rate-answer"),
      rateRow("澄清 / clarified", d.clarify_rate, d.clarify, "rate-clarify"),
      rateRow("转人工 / handed off", d.handoff_rate, d.handoff, "rate-handoff"),
      el("div", { class: "muted mt" }, "分诊请求 / triaged requests: " + t.requests + " · 升级风险标记 / flagged: " + t.escalation_flagged),
      rateRow("弃权（需人工）/ abstained", t.abstention_rate, t.abstained, "rate-abstain"),
      el("div", { class: "muted small" }, ov.counted_since
        ? "自 " + ov.counted_since.slice(0, 10) + " 起统计（活动日志）/ counted since " + ov.counted_since.slice(0, 10) + " (activity log)"
        : "尚无记录 / nothing recorded yet"));
  }

  function sparkline(box, days, counts, hot) {
    const opts = {
      width: 180, height: 44, cursor: { show: false }, legend: { show: false },
      scales: { x: { time: true } }, axes: [{ show: false }, { show: false }],
      series: [{}, { stroke: hot ? "#dc2626" : "#2563eb", width: 2, fill: hot ? "rgba(220,38,38,.12)" : "rgba(37,99,235,.10)", points: { show: false } }],
    };
    charts.push(new uPlot(opts, [days.map(secs), counts], box));
  }

  function shareLine(shares, categories) {
    return shares.slice(0, 3).map((s) => (s.value ? nameOf(categories, s.value) : "—") + " " + pct(s.share)).join(" · ");
  }

  function emerging(rep, categories) {
    const box = $("emerging");
    box.replaceChildren();
    const shown = rep.clusters.filter((c) => c.status !== "steady" || c.spike).concat(rep.clusters.filter((c) => c.status === "steady" && !c.spike)).slice(0, 12);
    box.appendChild(el("div", { class: "muted" }, rep.tickets + " 张工单 / tickets, " + rep.clustered + " 成簇 / clustered, 基线 / baseline " + rep.baseline_tickets));
    if (!shown.length) { box.appendChild(el("div", { class: "muted mt" }, "窗口内没有成簇的问题 / no clusters in the window")); return; }
    for (const c of shown) {
      const [label, tone] = STATUS[c.status];
      const spark = el("div", { class: "spark" });
      const fields = Object.entries(c.fields || {}).map(([f, s]) => f + ": " + shareLine(s, []));
      const row = el("div", { class: "cluster", "data-testid": "cluster", "data-status": c.status, "data-spike": c.spike ? "1" : "0" },
        el("div", { class: "cluster-head" },
          el("strong", { "data-testid": "cluster-label" }, c.label.join(" · ") || c.id),
          el("span", { class: "badge " + tone }, label),
          c.spike ? el("span", { class: "badge bad", "data-testid": "cluster-spike" },
            "激增 / spike: " + c.spike.count + " vs " + c.spike.expected.toFixed(1)) : null,
          el("span", { class: "muted" }, c.size + " 张 / tickets")),
        el("div", { class: "cluster-body" },
          spark,
          el("div", { class: "cluster-info" },
            el("div", { class: "small" }, "分类 / categories: " + shareLine(c.categories, categories)),
            fields.length ? el("div", { class: "small muted" }, fields.join(" — ")) : null,
            el("ul", { class: "examples" }, c.examples.slice(0, 3).map((e) =>
              el("li", { "data-testid": "cluster-example" }, el("span", { class: "muted" }, e.ticket_id + " "), e.title || e.text)))));
      box.appendChild(row);
      sparkline(spark, rep.days, c.daily, !!c.spike || c.status === "new");
    }
  }

  function gaps(rep, categories) {
    const box = $("gaps");
    box.replaceChildren(el("div", { class: "muted" }, "转人工消息 / handed-off messages: " + rep.handed_off +
      " · 未用文章解决的工单 / resolved without an article: " + rep.resolved_without_article));
    if (!rep.gaps.length) { box.appendChild(el("div", { class: "muted mt" }, "没有发现缺口 / no gaps found")); return; }
    for (const g of rep.gaps.slice(0, 8)) {
      const q = el("input", { value: g.question, "data-testid": "gap-question" });
      const answer = g.answer_material.map((m) => m.resolution).filter(Boolean)[0] || "";
      const a = el("textarea", { rows: "3", "data-testid": "gap-answer", placeholder: "答案 / answer" });
      a.value = answer;
      const alts = el("textarea", { rows: "2", "data-testid": "gap-alternatives" });
      alts.value = g.alternatives.join("\n");
      const status = el("div", { "data-testid": "gap-status" });
      const button = el("button", { type: "button", class: "primary", "data-testid": "gap-publish" }, "发布为文章 / Publish as article");
      button.addEventListener("click", async () => {
        button.disabled = true; status.replaceChildren();
        try {
          const res = await api("POST", "/v1/insights/gaps/" + encodeURIComponent(g.id) + "/publish", {
            question: q.value, answer: a.value, category: g.category || "",
            alt_questions: alts.value.split("\n").map((s) => s.trim()).filter(Boolean),
          });
          status.appendChild(el("div", { class: "notice", "data-testid": "gap-published" }, "已发布 / published: " + res.article.id));
        } catch (e) {
          button.disabled = false;
          status.appendChild(el("div", { class: "error" }, e.message));
        }
      });
      box.appendChild(el("div", { class: "gap", "data-testid": "gap", "data-gap": g.id },
        el("div", { class: "cluster-head" },
          el("strong", {}, g.label.join(" · ") || g.question),
          el("span", { class: "badge warn" }, g.volume + " 次 / asked"),
          el("span", { class: "muted" }, "对话 / chats " + g.chats + " · 工单 / tickets " + g.tickets),
          g.nearest_article ? el("span", { class: "muted" }, "最接近 / nearest: " + g.nearest_article.id + " " + pct(g.nearest_article.probability)) : null),
        el("label", {}, "问题 / Question"), q,
        el("label", {}, "其他问法 / Other phrasings (one a line)"), alts,
        el("label", {}, "答案 / Answer" + (g.answer_material.length ? " (来自相似已解决工单 / from similar resolved tickets: " + g.answer_material.map((m) => m.ticket_id).join(", ") + ")" : "")), a,
        el("div", { class: "row mt" }, button, g.category ? el("span", { class: "muted" }, nameOf(categories, g.category)) : el("span")),
        status));
    }
  }

  function risk(ov, categories) {
    const box = $("risk");
    if (!ov.high_risk.length) { box.replaceChildren(el("div", { class: "muted" }, "没有高风险的未结工单 / no flagged open tickets")); return; }
    box.replaceChildren(el("table", { class: "fields" },
      el("tr", {}, el("th", {}, "工单 / ticket"), el("th", {}, "风险 / risk"), el("th", {}, "原因 / reasons")),
      ov.high_risk.map((r) => el("tr", { "data-testid": "risk-row" },
        el("td", {}, el("div", {}, r.title || r.ticket_id), el("div", { class: "muted" }, r.ticket_id + (r.category ? " · " + nameOf(categories, r.category) : ""))),
        el("td", {}, el("span", { class: "badge bad" }, pct(r.risk.score))),
        el("td", { class: "small" }, r.risk.reasons.join("; "))))));
  }

  function heatmap(ov, categories) {
    const box = $("heatmap");
    const h = ov.heatmap;
    $("heatmap-field").textContent = h ? "(" + h.field + " × 分类 / category)" : "";
    if (!h || !h.rows.length) { box.replaceChildren(el("div", { class: "muted" }, "选择一个字段 / pick a field")); return; }
    const max = Math.max(1, ...h.counts.flat());
    box.replaceChildren(el("table", { class: "heat" },
      el("tr", {}, el("th", {}, h.field), h.columns.map((c) => el("th", {}, c ? nameOf(categories, c) : "—"))),
      h.rows.map((r, i) => el("tr", {}, el("th", {}, r || "—"),
        h.counts[i].map((n) => el("td", { "data-testid": "heat-cell", style: "background:rgba(37,99,235," + (n / max * 0.85).toFixed(3) + ");color:" + (n / max > 0.5 ? "#fff" : "inherit") }, n ? String(n) : ""))))));
  }

  async function load() {
    $("page-error").textContent = "";
    const w = $("window").value, f = $("field").value;
    const p = await pack();
    const categories = p.categories || [];
    try {
      const [ov, em, gp] = await Promise.all([
        api("GET", "/v1/insights/overview?window=" + encodeURIComponent(w) + (f ? "&field=" + encodeURIComponent(f) : "")),
        api("GET", "/v1/insights/emerging?window=7d"),
        api("GET", "/v1/insights/gaps?window=" + encodeURIComponent(w)),
      ]);
      clearCharts();
      volumeChart(ov, categories);
      rates(ov);
      emerging(em, categories);
      gaps(gp, categories);
      risk(ov, categories);
      heatmap(ov, categories);
      if (!f && ov.heatmap) $("field").value = ov.heatmap.field;
      $("stamp").textContent = ov.from.slice(0, 16).replace("T", " ") + " → " + ov.to.slice(0, 16).replace("T", " ") + " UTC";
      document.body.dataset.loaded = "1";
    } catch (e) {
      $("page-error").textContent = e.message;
    }
  }

  async function init() {
    const p = await pack();
    for (const f of p.fields || []) $("field").appendChild(el("option", { value: f }, f));
    $("controls").addEventListener("submit", (e) => { e.preventDefault(); load(); });
    await load();
  }

  init();
})();
