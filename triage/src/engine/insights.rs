//! The insights of a tenant, gathered from the engine's stores: emerging
//! problems and their alerts, knowledge gaps and publishing them, the
//! dashboard's overview. The computations are [`crate::insights`]'; here the
//! engine copies what they need out of its ticket memory (through
//! [`TicketMemory::iter`](crate::store::memory::TicketMemory::iter), under the
//! read lock, only as long as the copy takes) and its activity log, then
//! computes without any lock, so requests and writes go on meanwhile.

use std::collections::{BTreeMap, HashMap};

use indexer::{ticket_text, Article};
use models::EmbedKind;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::Engine;
use crate::api::{
    AnswerMaterial, EmergingReport, GapReport, InsightAlert, KnowledgeGap, NearestArticle,
    Overview, PublishGap, PublishedGap, RiskyTicket,
};
use crate::decide::escalation::EscalationContext;
use crate::decide::recommend::is_resolved;
use crate::error::{Error, Result};
use crate::insights::cluster::{ClusterOptions, Rows};
use crate::insights::emerging::{
    detect, Detection, EmergingOptions, History, Item, BASELINE_SAMPLE, BASELINE_WEEKS,
};
use crate::insights::gaps::{self, Candidate, Source};
use crate::insights::overview::{self, Counted};
use crate::insights::{rfc3339, Window, DAY, GAP_WINDOW_DAYS};
use crate::store::activity::Activity;

/// Most gaps a report lists.
const MAX_GAPS: usize = 30;
/// Alternative phrasings a draft offers.
const ALTERNATIVES: usize = 5;
/// Resolved tickets a draft quotes.
const MATERIAL: usize = 3;
/// Open tickets whose escalation risk the overview computes (the newest).
const RISK_SCAN: usize = 300;
/// Flagged open tickets the overview lists.
const RISK_SHOWN: usize = 20;
/// Handed-off messages whose vectors are kept between reports.
const HANDOFF_VECTORS: usize = 20_000;
/// Texts embedded per call.
const EMBED_BATCH: usize = 32;

/// How gap candidates are grouped: pairs already count (a question asked
/// twice is worth an article's draft).
pub(crate) fn gap_clustering() -> ClusterOptions {
    ClusterOptions {
        min_size: 2,
        ..ClusterOptions::default()
    }
}

impl Engine {
    /// The tenants that have tickets (the default tenant is the empty name).
    pub fn tenants(&self) -> Vec<String> {
        let state = self.read();
        let mut out: Vec<String> = state
            .memory
            .iter()
            .map(|(e, _)| e.ticket.tenant.clone())
            .collect::<std::collections::BTreeSet<String>>()
            .into_iter()
            .collect();
        out.dedup();
        out
    }

    /// The detector's settings for this pack.
    pub fn emerging_options(&self) -> EmergingOptions {
        EmergingOptions {
            fields: self.pack.insights.fields.clone(),
            ..EmergingOptions::default()
        }
    }

    /// Emerging problems of `tenant` in the `days` days before `to` (Unix seconds).
    pub fn emerging(&self, tenant: &str, days: u32, to: i64) -> Result<EmergingReport> {
        Ok(self.detect_emerging(tenant, days, to)?.report)
    }

    /// [`Engine::emerging`], and the alerts it raises: its spikes that no
    /// alert of the last two weeks covers (see
    /// [`crate::insights::alerts::AlertBook`]; remembered in the data
    /// directory, so each problem alerts once).
    pub fn emerging_alerts(
        &self,
        tenant: &str,
        days: u32,
        to: i64,
    ) -> Result<(EmergingReport, Vec<InsightAlert>)> {
        let d = self.detect_emerging(tenant, days, to)?;
        let raised = self
            .alerts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .admit(tenant, &d, crate::insights::now())?;
        Ok((d.report, raised))
    }

    fn detect_emerging(&self, tenant: &str, days: u32, to: i64) -> Result<Detection> {
        let h = self.history(tenant, days, to)?;
        let mut d = detect(&h, &self.emerging_options());
        d.report.tenant = tenant.to_string();
        d.report.generated_at = rfc3339(crate::insights::now());
        Ok(d)
    }

    /// The window's tickets and a seeded sample of the baseline's, copied out
    /// of the ticket memory.
    fn history(&self, tenant: &str, days: u32, to: i64) -> Result<History> {
        let window = Window::ending(to, days);
        let baseline_days = BASELINE_WEEKS * 7;
        let base = window.before(baseline_days);
        let fields = &self.pack.insights.fields;
        let dim = self.embedder.dim();
        let (mut items, mut vectors) = (Vec::new(), Rows::new(dim));
        let (mut baseline, mut baseline_vectors) = (Vec::new(), Rows::new(dim));
        let mut seen = 0u64;
        let mut rng = StdRng::seed_from_u64(17);
        {
            let state = self.read();
            for (e, v) in state.memory.iter() {
                if e.ticket.tenant != tenant {
                    continue;
                }
                let Some(at) = e.created else { continue };
                if window.contains(at) {
                    let t = &e.ticket;
                    items.push(Item {
                        id: t.id.clone(),
                        title: t.title.clone(),
                        text: ticket_text(&t.title, &t.body),
                        category: t.category.clone(),
                        fields: fields
                            .iter()
                            .filter_map(|f| t.fields.get(f).map(|v| (f.clone(), v.clone())))
                            .collect(),
                        created: at,
                    });
                    vectors.push(v);
                } else if base.contains(at) {
                    // Reservoir sampling: every baseline ticket is kept with
                    // the same probability.
                    seen += 1;
                    if baseline.len() < BASELINE_SAMPLE {
                        baseline.push((at, v.to_vec()));
                    } else {
                        let j = rng.random_range(0..seen);
                        if (j as usize) < BASELINE_SAMPLE {
                            baseline[j as usize] = (at, v.to_vec());
                        }
                    }
                }
            }
        }
        let mut times = Vec::with_capacity(baseline.len());
        for (at, v) in baseline {
            times.push(at);
            baseline_vectors.push(&v);
        }
        Ok(History {
            window,
            baseline_days,
            items,
            vectors,
            baseline: times,
            baseline_vectors,
            baseline_total: seen,
        })
    }

    /// Knowledge gaps of `tenant` in the `days` days before `to`: handed-off
    /// chat messages and tickets resolved without an article, grouped by
    /// meaning, each with a draft article (see [`crate::insights::gaps`]).
    pub fn gaps(&self, tenant: &str, days: u32, to: i64) -> Result<GapReport> {
        self.gaps_grouped(tenant, days, to, &gap_clustering())
    }

    /// [`Engine::gaps`] with candidates grouped by `grouping` (the evaluation tries others).
    pub(crate) fn gaps_grouped(
        &self,
        tenant: &str,
        days: u32,
        to: i64,
        grouping: &ClusterOptions,
    ) -> Result<GapReport> {
        let window = Window::ending(to, days);
        let handoffs = self.activity.handoffs(tenant, window.from, window.to);
        let solved = self.activity.solved(tenant);
        let published = self.activity.published(tenant);
        let mut candidates: Vec<Candidate> = handoffs
            .iter()
            .map(|h| Candidate {
                source: Source::Chat {
                    session: h.session.clone(),
                },
                text: h.text.clone(),
                at: h.at,
            })
            .collect();
        let handed_off = candidates.len();
        let mut vectors = self.handoff_vectors(&candidates)?;
        {
            let state = self.read();
            for (e, v) in state.memory.iter() {
                let t = &e.ticket;
                if t.tenant != tenant
                    || !is_resolved(t)
                    || solved.contains(&t.id)
                    || !e.created.is_some_and(|at| window.contains(at))
                {
                    continue;
                }
                candidates.push(Candidate {
                    source: Source::Ticket { id: t.id.clone() },
                    text: ticket_text(&t.title, &t.body),
                    at: e.created.unwrap_or_default(),
                });
                vectors.push(v);
            }
        }
        let resolved_without_article = candidates.len() - handed_off;
        let groups = gaps::group(&candidates, &vectors, grouping, 5);
        let th = self.pack.thresholds;
        let mut out = Vec::new();
        for g in groups {
            if out.len() >= MAX_GAPS {
                break;
            }
            let (question, alternatives) = gaps::phrasings(&candidates, &g, ALTERNATIVES);
            let id = gaps::gap_id(tenant, &question);
            if question.is_empty() || published.contains(&id) {
                continue;
            }
            let nearest_article = self.nearest_article(tenant, &question)?;
            let answered = nearest_article.as_ref().map_or(0.0, |a| a.probability);
            if answered >= th.deflect_answer {
                // The chat would answer it now: not a gap (any more).
                continue;
            }
            let (answer_material, category) = self.answer_material(tenant, &g.centroid)?;
            let members: Vec<&Candidate> = g.members.iter().map(|m| &candidates[*m]).collect();
            let chats = members
                .iter()
                .filter(|c| matches!(c.source, Source::Chat { .. }))
                .count();
            out.push(KnowledgeGap {
                id,
                volume: members.len() as u32,
                chats: chats as u32,
                tickets: (members.len() - chats) as u32,
                score: gaps::score(members.len(), answered),
                label: g.label,
                question,
                alternatives,
                answer_material,
                category,
                nearest_article,
                first_seen: rfc3339(members.iter().map(|c| c.at).min().unwrap_or_default()),
                last_seen: rfc3339(members.iter().map(|c| c.at).max().unwrap_or_default()),
            });
        }
        out.sort_by(|a, b| b.score.total_cmp(&a.score).then(b.volume.cmp(&a.volume)));
        let report = GapReport {
            tenant: tenant.to_string(),
            window_days: days,
            from: rfc3339(window.from),
            to: rfc3339(window.to),
            handed_off: handed_off as u32,
            resolved_without_article: resolved_without_article as u32,
            gaps: out,
            generated_at: rfc3339(crate::insights::now()),
        };
        self.gap_reports
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(tenant.to_string(), report.clone());
        Ok(report)
    }

    /// Passage vectors of the candidates' texts (handed-off messages), from
    /// the cache or embedded now.
    fn handoff_vectors(&self, candidates: &[Candidate]) -> Result<Rows> {
        let mut rows = Rows::new(self.embedder.dim());
        let missing: Vec<&str> = {
            let cache = self
                .handoff_vectors
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let mut m: Vec<&str> = candidates
                .iter()
                .map(|c| c.text.as_str())
                .filter(|t| !cache.contains_key(*t))
                .collect();
            m.sort_unstable();
            m.dedup();
            m
        };
        let mut fresh: HashMap<&str, Vec<f32>> = HashMap::new();
        for chunk in missing.chunks(EMBED_BATCH) {
            for (t, v) in chunk
                .iter()
                .zip(self.embedder.embed(chunk, EmbedKind::Passage)?)
            {
                fresh.insert(t, v);
            }
        }
        let mut cache = self
            .handoff_vectors
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if cache.len() + fresh.len() > HANDOFF_VECTORS {
            cache.clear();
        }
        for c in candidates {
            let v = match fresh.get(c.text.as_str()) {
                Some(v) => v.clone(),
                None => cache
                    .get(&c.text)
                    .cloned()
                    .ok_or_else(|| Error::Numeric("a handed-off message has no vector".into()))?,
            };
            rows.push(&v);
        }
        for (t, v) in fresh {
            cache.insert(t.to_string(), v);
        }
        Ok(rows)
    }

    /// The article that comes closest to answering `question`, scored as the chat scores.
    fn nearest_article(&self, tenant: &str, question: &str) -> Result<Option<NearestArticle>> {
        let q = self.embed_one(question, EmbedKind::Query)?;
        let state = self.read();
        let scored = self.deflector.score(&state.bank, question, &q, tenant)?;
        Ok(scored.first().and_then(|s| {
            state.bank.article(s.slot).map(|a| NearestArticle {
                id: a.id.clone(),
                question: a.question.clone(),
                probability: s.probability,
            })
        }))
    }

    /// The resolutions of the resolved tickets nearest a gap's centre, and
    /// their category when most of them agree.
    fn answer_material(
        &self,
        tenant: &str,
        centroid: &[f32],
    ) -> Result<(Vec<AnswerMaterial>, Option<String>)> {
        let state = self.read();
        let near = state.memory.nearest(centroid, MATERIAL, |e| {
            e.ticket.tenant == tenant && is_resolved(&e.ticket)
        })?;
        let material: Vec<AnswerMaterial> = near
            .iter()
            .map(|(i, s)| {
                let t = &state.memory.item(*i).ticket;
                AnswerMaterial {
                    ticket_id: t.id.clone(),
                    resolution: t.resolution.clone(),
                    similarity: *s,
                }
            })
            .collect();
        let mut votes: BTreeMap<&str, usize> = BTreeMap::new();
        for (i, _) in &near {
            let c = state.memory.item(*i).ticket.category.as_str();
            if !c.is_empty() {
                *votes.entry(c).or_default() += 1;
            }
        }
        let category = votes
            .into_iter()
            .max_by_key(|(_, n)| *n)
            .filter(|(_, n)| *n * 2 > near.len())
            .map(|(c, _)| c.to_string());
        Ok((material, category))
    }

    /// Publishes a knowledge gap of the tenant's last gap report (or, when
    /// there is none, of a fresh one over [`GAP_WINDOW_DAYS`]) as an article
    /// with the agent's question and answer. The article answers in the chat
    /// when this returns, and the gap is not listed again.
    pub fn publish_gap(&self, gap_id: &str, req: &PublishGap) -> Result<PublishedGap> {
        if req.question.trim().is_empty() || req.answer.trim().is_empty() {
            return Err(Error::InvalidInput(
                "a published gap needs a question and an answer".into(),
            ));
        }
        let tenant = req.tenant.as_str();
        let known = |reports: &HashMap<String, GapReport>| {
            reports
                .get(tenant)
                .is_some_and(|r| r.gaps.iter().any(|g| g.id == gap_id))
        };
        let cached = known(&self.gap_reports.lock().unwrap_or_else(|p| p.into_inner()));
        if !cached {
            self.gaps(tenant, GAP_WINDOW_DAYS, crate::insights::report_end())?;
        }
        let found = known(&self.gap_reports.lock().unwrap_or_else(|p| p.into_inner()));
        if !found || self.activity.published(tenant).contains(gap_id) {
            return Err(Error::NotFound(format!("knowledge gap `{gap_id}`")));
        }
        let article = Article {
            id: format!("kb-{gap_id}"),
            question: req.question.trim().to_string(),
            answer: req.answer.trim().to_string(),
            alt_questions: req
                .alt_questions
                .iter()
                .map(|q| q.trim().to_string())
                .filter(|q| !q.is_empty())
                .collect(),
            tags: vec!["knowledge-gap".into()],
            category: req.category.trim().to_string(),
            tenant: tenant.to_string(),
        };
        self.upsert_article(article.clone())?;
        self.activity.record(
            tenant,
            crate::insights::now(),
            Activity::GapPublished {
                gap_id: gap_id.to_string(),
                article_id: article.id.clone(),
            },
        )?;
        if let Some(r) = self
            .gap_reports
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(tenant)
        {
            r.gaps.retain(|g| g.id != gap_id);
        }
        Ok(PublishedGap {
            gap_id: gap_id.to_string(),
            article,
        })
    }

    /// The dashboard's figures for `tenant` in the `days` days before `to`:
    /// volume by category (stored tickets), deflection and abstention rates
    /// (activity log), flagged open tickets, and the heat map of `field` (or
    /// the pack's `[insights] heatmap`) × category.
    pub fn overview(
        &self,
        tenant: &str,
        days: u32,
        to: i64,
        field: Option<&str>,
    ) -> Result<Overview> {
        let window = Window::ending(to, days);
        let field = match field.map(str::trim).filter(|f| !f.is_empty()) {
            Some(f) if self.pack.fields.iter().any(|x| x.name == f) => Some(f.to_string()),
            Some(f) => {
                return Err(Error::InvalidInput(format!(
                    "`{f}` is not one of the pack's fields"
                )))
            }
            None => self.pack.insights.heatmap.clone(),
        };
        let tops: Vec<(String, String)> = self
            .pack
            .categories
            .iter()
            .filter(|c| c.parent.is_none())
            .map(|c| (c.id.clone(), c.name.clone()))
            .collect();
        let top_of = |category: &str| -> String {
            let mut c = self.pack.category(category);
            while let Some(cat) = c {
                match &cat.parent {
                    Some(p) => c = self.pack.category(p),
                    None => return cat.id.clone(),
                }
            }
            category.to_string()
        };
        let dup_window = i64::from(self.pack.thresholds.duplicate_window_days) * DAY;
        let mut counted: Vec<(i64, String, String)> = Vec::new();
        let mut open: Vec<(indexer::Ticket, i64, Vec<f32>)> = Vec::new();
        let mut contacts: HashMap<String, Vec<i64>> = HashMap::new();
        {
            let state = self.read();
            for (e, v) in state.memory.iter() {
                let t = &e.ticket;
                if t.tenant != tenant {
                    continue;
                }
                let Some(at) = e.created else { continue };
                if window.contains(at) {
                    let value = field
                        .as_deref()
                        .and_then(|f| t.fields.get(f))
                        .cloned()
                        .unwrap_or_default();
                    counted.push((at, top_of(&t.category), value));
                }
                if !t.customer_id.is_empty() {
                    contacts.entry(t.customer_id.clone()).or_default().push(at);
                }
                if !is_resolved(t) && !matches!(t.status.as_str(), "closed" | "resolved") {
                    open.push((t.clone(), at, v.to_vec()));
                }
            }
        }
        let items: Vec<Counted> = counted
            .iter()
            .map(|(created, top, value)| Counted {
                created: *created,
                top,
                value,
            })
            .collect();
        let columns: Vec<String> = tops.iter().map(|(id, _)| id.clone()).collect();
        let counts = self.activity.counts(tenant, window.from, window.to);
        open.sort_by_key(|o| std::cmp::Reverse(o.1));
        open.truncate(RISK_SCAN);
        let mut high_risk = Vec::new();
        for (t, at, v) in open {
            let earlier = contacts.get(&t.customer_id).map_or(0, |times| {
                times
                    .iter()
                    .filter(|x| **x < at && at - **x <= dup_window)
                    .count()
            });
            let learned = match self.pack.escalation.field.as_deref() {
                Some(f) => {
                    let state = self.read();
                    let near = state
                        .memory
                        .nearest(&v, 10, |e| e.ticket.tenant == tenant && e.ticket.id != t.id)?;
                    super::triage::escalated_share(
                        near.iter()
                            .map(|(i, s)| (state.memory.item(*i).ticket.fields.get(f), *s)),
                    )
                }
                None => None,
            };
            let risk = self.escalation.assess(
                &ticket_text(&t.title, &t.body),
                EscalationContext {
                    earlier_contacts: earlier,
                    learned,
                },
            );
            if risk.flagged {
                high_risk.push(RiskyTicket {
                    ticket_id: t.id.clone(),
                    title: t.title.clone(),
                    category: t.category.clone(),
                    customer_id: t.customer_id.clone(),
                    created_at: t.created_at.clone(),
                    risk,
                });
            }
        }
        high_risk.sort_by(|a, b| b.risk.score.total_cmp(&a.risk.score));
        high_risk.truncate(RISK_SHOWN);
        Ok(Overview {
            tenant: tenant.to_string(),
            window_days: days,
            from: rfc3339(window.from),
            to: rfc3339(window.to),
            days: window.day_starts(),
            volume: overview::volume(&items, &window, &tops),
            deflection: overview::deflection(&counts),
            triage: overview::triage(&counts),
            counted_since: self.activity.first().map(rfc3339),
            high_risk,
            heatmap: field.map(|f| overview::heatmap(&f, &items, &window, &columns)),
        })
    }

    /// Records a decision in the activity log (see [`crate::store::activity`]).
    pub(super) fn note_activity(&self, tenant: &str, what: Activity) {
        self.activity.note(tenant, crate::insights::now(), what);
    }

    /// Records durably that an agent said `article` solved ticket `ticket`.
    pub(super) fn note_solved(&self, tenant: &str, ticket: &str, article: &str) -> Result<()> {
        self.activity.record(
            tenant,
            crate::insights::now(),
            Activity::Solved {
                ticket_id: ticket.to_string(),
                article_id: article.to_string(),
            },
        )
    }
}
