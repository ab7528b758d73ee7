//! Each tenant's adapted encoder: trained on the tenant's own labelled
//! tickets and the pack's phrasings, judged on a held-out fold of those
//! tickets, kept beside the tenant's heads ([`AdapterStore`]), dropped on
//! request.
//!
//! An accepted adapter gives the tenant a second vector *space* for its
//! label decisions only: the request's vector through the adapted encoder,
//! the tenant's labelled tickets (the vote and the heads' training rows) and
//! the pack's shared examples, all re-embedded with it. Everything else keeps
//! the shipped encoder's vectors, whose thresholds were set in that space:
//! the index and search, the neighbours shown as evidence, duplicates,
//! similar tickets, field inference, the agent-correction override and the
//! chat's article matching. The stored history is therefore never
//! re-embedded; only the tenant's *labelled* tickets get a second vector,
//! kept in memory (see docs/EVAL.md for its cost at 100k tickets).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use indexer::{ticket_text, Ticket};
use models::{AdaptExample, Adapter, EmbedKind, Embedder, TextEmbedder, TrainingSet};
use serde::Serialize;

use super::heads::{is_labelled, train_owner, Owner, SharedExamples};
use super::{Engine, WriteLock};
use crate::decide::labels::OUT_OF_SCOPE;
use crate::error::{Error, Result};
use crate::model::adaptation::{adapt, AdaptSettings, AdaptationSummary};
use crate::pack::Pack;
use crate::store::faqbank::FaqBank;
use crate::store::memory::TicketMemory;

/// A tenant's adapted space (see the module docs).
pub(super) struct Space {
    /// The adapted encoder.
    pub(super) encoder: Arc<dyn TextEmbedder>,
    /// The adapter's digest.
    pub(super) digest: String,
    /// The tenant's labelled tickets with their adapted vectors.
    pub(super) memory: TicketMemory,
    /// The pack's shared examples, embedded with the adapted encoder.
    pub(super) shared: Arc<SharedExamples>,
}

/// What [`Engine::adapt`] did.
#[derive(Debug, Clone, Serialize)]
pub struct AdaptOutcome {
    /// The tenant adapted.
    pub tenant: String,
    /// Whether the new adapter is now in use (the fold accepted it).
    pub accepted: bool,
    /// The tenant's labelled tickets the adapter learned from and was judged on.
    pub labelled_tickets: usize,
    /// The fold's verdict, the training's time and memory.
    pub summary: AdaptationSummary,
}

/// A tenant's adaptation as it stands ([`Engine::adaptation`]).
#[derive(Debug, Clone, Serialize)]
pub struct AdaptationStatus {
    /// The digest of the adapter in use, if the tenant's decisions use one.
    pub active: Option<String>,
    /// The last adaptation's verdict, accepted or not.
    pub last: Option<AdaptationSummary>,
}

/// The examples an adaptation of `tenant` learns from: its labelled tickets
/// (task 0 by category, the only ones judged), the pack's tickets for other
/// tenants, the pack's phrasings and out-of-scope requests (task 0, as the
/// category head learns them), and each pack article's phrasings (task 1,
/// by article).
fn examples(
    pack: &Pack,
    memory: &TicketMemory,
    tenant: &str,
) -> (Vec<AdaptExample>, Vec<bool>, Vec<String>) {
    let leaves: std::collections::HashSet<&str> = pack
        .leaf_categories()
        .iter()
        .map(|c| c.id.as_str())
        .collect();
    let mut groups: BTreeMap<String, usize> = BTreeMap::new();
    let mut group = |label: &str| {
        let n = groups.len();
        *groups.entry(label.to_string()).or_insert(n)
    };
    let (mut out, mut judged, mut ids) = (Vec::new(), Vec::new(), Vec::new());
    let mut own: Vec<&Ticket> = memory
        .iter()
        .map(|(e, _)| &e.ticket)
        .filter(|t| t.tenant == tenant && leaves.contains(t.category.as_str()))
        .collect();
    own.sort_by(|a, b| a.id.cmp(&b.id));
    for t in own {
        out.push(AdaptExample {
            text: ticket_text(&t.title, &t.body),
            kind: EmbedKind::Passage,
            task: 0,
            group: group(&t.category),
        });
        judged.push(true);
        ids.push(t.id.clone());
    }
    let mut teach = |text: &str, task: usize, g: usize| {
        out.push(AdaptExample {
            text: text.to_string(),
            kind: EmbedKind::Passage,
            task,
            group: g,
        });
        judged.push(false);
    };
    if !tenant.is_empty() {
        for t in pack
            .tickets
            .iter()
            .filter(|t| t.tenant.is_empty() && leaves.contains(t.category.as_str()))
        {
            let g = group(&t.category);
            teach(&ticket_text(&t.title, &t.body), 0, g);
        }
    }
    let mut article = 0;
    for a in pack
        .articles
        .iter()
        .filter(|a| leaves.contains(a.category.as_str()))
    {
        let phrasings = FaqBank::phrasings(a);
        let g = group(&a.category);
        for p in &phrasings {
            teach(p, 0, g);
        }
        if phrasings.len() > 1 {
            for p in &phrasings {
                teach(p, 1, article);
            }
            article += 1;
        }
    }
    for t in &pack.out_of_scope {
        let g = group(OUT_OF_SCOPE);
        teach(t, 0, g);
    }
    (out, judged, ids)
}

/// Builds `tenant`'s space for `adapter`: the tenant's labelled tickets of
/// `memory` and the pack's shared examples, embedded with the adapted
/// encoder. `known` gives vectors already computed (ticket id → vector).
pub(super) fn build_space(
    encoder: &Embedder,
    adapter: &Adapter,
    pack: &Pack,
    memory: &TicketMemory,
    tenant: &str,
    known: &HashMap<String, Vec<f32>>,
) -> Result<Space> {
    let adapted: Arc<dyn TextEmbedder> = Arc::new(encoder.adapted(adapter)?);
    let mut space = TicketMemory::new(adapted.dim());
    let labelled: Vec<&crate::store::memory::Example> = memory
        .iter()
        .map(|(e, _)| e)
        .filter(|e| e.ticket.tenant == tenant && is_labelled(&e.ticket))
        .collect();
    let missing: Vec<String> = labelled
        .iter()
        .filter(|e| !known.contains_key(&e.ticket.id))
        .map(|e| ticket_text(&e.ticket.title, &e.ticket.body))
        .collect();
    let refs: Vec<&str> = missing.iter().map(String::as_str).collect();
    let mut fresh = Vec::with_capacity(refs.len());
    for chunk in refs.chunks(256) {
        fresh.extend(adapted.embed(chunk, EmbedKind::Passage)?);
    }
    let mut fresh = fresh.into_iter();
    for e in labelled {
        let v = match known.get(&e.ticket.id) {
            Some(v) => v.clone(),
            None => fresh.next().ok_or_else(|| {
                Error::Numeric("the embedder returned fewer vectors than texts".into())
            })?,
        };
        space.upsert(e.ticket.clone(), &v, Some(e.corrected))?;
    }
    // The pack's tickets are the default tenant's own: take their adapted
    // vectors from its space, as the shipped space does from the memory.
    let shared = SharedExamples::embed(pack, &space, adapted.as_ref())?;
    Ok(Space {
        encoder: adapted,
        digest: adapter.digest(),
        memory: space,
        shared: Arc::new(shared),
    })
}

impl Engine {
    /// Adapts the encoder to `tenant`'s labelled tickets (see the module
    /// docs), blocking for the whole training (minutes at 10,000 tickets:
    /// run it off the request path, with `settings.options.threads` leaving
    /// cores to requests). The adapter is judged on a held-out fold of the
    /// tenant's tickets; when it decides more of them right than the shipped
    /// encoder, it is stored and the tenant's decisions use it at once (its
    /// heads retrained in the adapted space); otherwise the tenant keeps what
    /// it had and only the verdict is recorded.
    pub fn adapt(&self, tenant: &str, settings: &AdaptSettings) -> Result<AdaptOutcome> {
        let encoder = self
            .embedder
            .encoder()
            .ok_or_else(|| Error::InvalidInput("adaptation needs the built-in encoder".into()))?;
        let (examples, judged, ids) = {
            let state = self.read();
            examples(&self.pack, &state.memory, tenant)
        };
        let labelled_tickets = ids.len();
        // A model with fewer layers than asked for (a small test model) adapts all of them.
        let mut settings = settings.clone();
        settings.options.layers = settings.options.layers.min(encoder.layers());
        let settings = &settings;
        let opts = &settings.options;
        let set = TrainingSet::prepare(
            encoder,
            &examples,
            opts.layers,
            opts.max_tokens,
            opts.threads,
        )?;
        let adaptation = adapt(encoder, &set, &examples, &judged, settings)?;
        let summary = adaptation.summary.clone();
        let accepted = summary.fold.accepted;
        if !accepted {
            self.adapters.store(tenant, None, &summary)?;
            return Ok(AdaptOutcome {
                tenant: tenant.to_string(),
                accepted,
                labelled_tickets,
                summary,
            });
        }
        // The tickets' adapted vectors from the kept states (texts cut to the
        // training window are embedded whole by build_space).
        let adapted = encoder.adapted(&adaptation.adapter)?;
        let whole: Vec<usize> = (0..ids.len()).filter(|&i| !set.was_cut(i)).collect();
        let known: HashMap<String, Vec<f32>> = whole
            .iter()
            .map(|&i| ids[i].clone())
            .zip(set.vectors(&adapted, &whole)?)
            .collect();
        self.adapters
            .store(tenant, Some(&adaptation.adapter), &summary)?;
        // Writes that landed while training joined the memory: the space is
        // built under the write mutex so none is missed.
        let held = self.lock_writes();
        let space = {
            let state = self.read();
            build_space(
                encoder,
                &adaptation.adapter,
                &self.pack,
                &state.memory,
                tenant,
                &known,
            )?
        };
        self.install_space(&held, tenant, space)?;
        Ok(AdaptOutcome {
            tenant: tenant.to_string(),
            accepted,
            labelled_tickets,
            summary,
        })
    }

    /// Trains `tenant`'s heads in `space` and puts both in use.
    fn install_space(&self, _held: &WriteLock<'_>, tenant: &str, space: Space) -> Result<()> {
        let (heads, own, _) = train_owner(
            &self.pack,
            &space.memory,
            &space.shared,
            &self.heads,
            Owner::Tenant(tenant),
        )?;
        let mut state = self.write();
        if own.iter().sum::<usize>() > 0 {
            state.heads.insert(tenant.to_string(), heads);
        } else {
            state.heads.remove(tenant);
        }
        state.spaces.insert(tenant.to_string(), space);
        Ok(())
    }

    /// Drops `tenant`'s adaptation: deletes its adapter and verdict, and its
    /// decisions go back to the shipped encoder (heads retrained there).
    /// Returns whether an adapter was stored or in use.
    pub fn drop_adaptation(&self, tenant: &str) -> Result<bool> {
        let _held = self.lock_writes();
        let stored = self.adapters.remove(tenant)?;
        if !self.read().spaces.contains_key(tenant) {
            return Ok(stored);
        }
        // Heads for the shipped space first, then both swapped at once: no
        // request sees adapted heads with shipped vectors.
        let (heads, own, _) = self.train_tenant(tenant, false)?;
        let mut state = self.write();
        state.spaces.remove(tenant);
        if own.iter().sum::<usize>() > 0 {
            state.heads.insert(tenant.to_string(), heads);
        } else {
            state.heads.remove(tenant);
        }
        Ok(true)
    }

    /// `tenant`'s adaptation as it stands.
    pub fn adaptation(&self, tenant: &str) -> AdaptationStatus {
        AdaptationStatus {
            active: self.read().spaces.get(tenant).map(|s| s.digest.clone()),
            last: self.adapters.verdict(tenant),
        }
    }

    /// `text`'s vector in `tenant`'s adapted space, if it has one.
    pub(super) fn adapted_vector(&self, tenant: &str, text: &str) -> Result<Option<Vec<f32>>> {
        let Some(encoder) = self.read().spaces.get(tenant).map(|s| s.encoder.clone()) else {
            return Ok(None);
        };
        let v = encoder
            .embed(&[text], EmbedKind::Passage)?
            .into_iter()
            .next()
            .ok_or_else(|| Error::Numeric("the embedder returned no vector".into()))?;
        Ok(Some(v))
    }

    /// Keeps `t`'s tenant's space in step with a ticket write (the caller
    /// holds the write mutex and has just stored `t` in the memory):
    /// labelled tickets get their adapted vector (reused when the text is
    /// unchanged), unlabelled ones leave the space.
    pub(super) fn space_upsert(&self, _held: &WriteLock<'_>, t: &Ticket) -> Result<()> {
        let (encoder, known) = {
            let state = self.read();
            let Some(space) = state.spaces.get(&t.tenant) else {
                return Ok(());
            };
            let known = space
                .memory
                .get(&t.tenant, &t.id)
                .filter(|e| {
                    ticket_text(&e.ticket.title, &e.ticket.body) == ticket_text(&t.title, &t.body)
                })
                .and_then(|_| space.memory.vector(&t.tenant, &t.id).map(<[f32]>::to_vec));
            (space.encoder.clone(), known)
        };
        if !is_labelled(t) {
            if let Some(space) = self.write().spaces.get_mut(&t.tenant) {
                space.memory.remove(&t.tenant, &t.id);
            }
            return Ok(());
        }
        let v = match known {
            Some(v) => v,
            None => encoder
                .embed(&[&ticket_text(&t.title, &t.body)], EmbedKind::Passage)?
                .into_iter()
                .next()
                .ok_or_else(|| Error::Numeric("the embedder returned no vector".into()))?,
        };
        let mut state = self.write();
        let corrected = state.memory.get(&t.tenant, &t.id).map(|e| e.corrected);
        if let Some(space) = state.spaces.get_mut(&t.tenant) {
            space.memory.upsert(t.clone(), &v, corrected)?;
        }
        Ok(())
    }

    /// Removes a deleted ticket from its tenant's space.
    pub(super) fn space_remove(&self, _held: &WriteLock<'_>, tenant: &str, id: &str) {
        if let Some(space) = self.write().spaces.get_mut(tenant) {
            space.memory.remove(tenant, id);
        }
    }
}
