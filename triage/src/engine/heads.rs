//! What each tenant's category and priority heads learn from, and training
//! them.
//!
//! Each tenant with labelled tickets of its own gets heads trained on those
//! tickets and what the pack teaches everyone ([`SharedExamples`]), and
//! nothing of any other tenant; tenants without labelled tickets share the
//! pack's heads. Heads are kept in the [`HeadCache`], so a start whose
//! training data is unchanged loads them instead of training. Nothing here
//! knows the engine: it opens with [`train_all`] and retrains one tenant with
//! [`train_owner`].

use std::collections::{HashMap, HashSet};

use indexer::{ticket_text, Ticket};
use models::{EmbedKind, TextEmbedder};

use crate::decide::labels::{Head, Pool, OUT_OF_SCOPE};
use crate::error::{Error, Result};
use crate::model::classify::{Classifier, ClassifierOptions};
use crate::model::knn::VectorSet;
use crate::pack::{priority_rank, Pack};
use crate::store::faqbank::FaqBank;
use crate::store::headcache::{tenant_prefix, training_key, HeadCache};
use crate::store::memory::TicketMemory;

/// The two trained heads of one tenant (either may be missing when there is
/// too little labelled data).
#[derive(Debug, Clone, Default)]
pub(super) struct Heads {
    pub(super) category: Option<Classifier>,
    pub(super) priority: Option<Classifier>,
}

/// Whether a ticket carries a label a head learns from.
pub(super) fn is_labelled(t: &Ticket) -> bool {
    !t.category.is_empty() || !t.priority.is_empty()
}

/// What the pack teaches every tenant besides the tenant's own tickets.
///
/// * Each article's phrasings under the article's category, and the
///   out-of-scope requests under [`OUT_OF_SCOPE`]: requests are often one
///   short sentence, tickets a title and a body, and without the phrasings
///   "short" would look like "out of scope". Every tenant's category head
///   learns them, the default tenant's too.
/// * The pack's tickets (the default tenant's, `tenant = ""`) with the pack's
///   labels: the base every *other* tenant learns from besides its own
///   tickets. The default tenant holds them as its own tickets already (with
///   its agents' corrections); no other tenant sees those corrections.
pub(super) struct SharedExamples {
    phrasings: VectorSet,
    phrasing_labels: Vec<String>,
    tickets: VectorSet,
    ticket_ids: Vec<String>,
    ticket_category: Vec<String>,
    ticket_priority: Vec<String>,
}

impl SharedExamples {
    /// Embeds the pack's article phrasings (leaf categories only) and
    /// out-of-scope texts; takes the pack tickets' vectors from `memory`
    /// where the stored copy has the pack's text (embeds them otherwise).
    pub(super) fn embed(
        pack: &Pack,
        memory: &TicketMemory,
        embedder: &dyn TextEmbedder,
    ) -> Result<SharedExamples> {
        let leaves: HashSet<&str> = pack
            .leaf_categories()
            .iter()
            .map(|c| c.id.as_str())
            .collect();
        let mut texts: Vec<&str> = Vec::new();
        let mut phrasing_labels: Vec<String> = Vec::new();
        for a in pack
            .articles
            .iter()
            .filter(|a| leaves.contains(a.category.as_str()))
        {
            for p in FaqBank::phrasings(a) {
                texts.push(p);
                phrasing_labels.push(a.category.clone());
            }
        }
        for t in &pack.out_of_scope {
            texts.push(t);
            phrasing_labels.push(OUT_OF_SCOPE.to_string());
        }
        let mut phrasings = VectorSet::new(embedder.dim());
        for v in embedder.embed(&texts, EmbedKind::Passage)? {
            phrasings.push(&v)?;
        }

        let mut pack_tickets: Vec<&Ticket> = pack
            .tickets
            .iter()
            .filter(|t| t.tenant.is_empty() && is_labelled(t))
            .collect();
        pack_tickets.sort_by(|a, b| a.id.cmp(&b.id));
        let text_of = |t: &Ticket| ticket_text(&t.title, &t.body);
        let stored: Vec<Option<Vec<f32>>> = pack_tickets
            .iter()
            .map(|t| {
                memory
                    .get("", &t.id)
                    .filter(|e| text_of(&e.ticket) == text_of(t))
                    .and_then(|_| memory.vector("", &t.id).map(<[f32]>::to_vec))
            })
            .collect();
        let missing: Vec<String> = pack_tickets
            .iter()
            .zip(&stored)
            .filter(|(_, v)| v.is_none())
            .map(|(t, _)| text_of(t))
            .collect();
        let missing_refs: Vec<&str> = missing.iter().map(String::as_str).collect();
        let mut fresh = embedder
            .embed(&missing_refs, EmbedKind::Passage)?
            .into_iter();
        let mut tickets = VectorSet::new(embedder.dim());
        for v in stored {
            let v = v.or_else(|| fresh.next()).ok_or_else(|| {
                Error::Numeric("the embedder returned fewer vectors than texts".into())
            })?;
            tickets.push(&v)?;
        }
        let category = |t: &&Ticket| {
            if leaves.contains(t.category.as_str()) {
                t.category.clone()
            } else {
                String::new()
            }
        };
        let priority = |t: &&Ticket| {
            if priority_rank(&t.priority).is_some() {
                t.priority.clone()
            } else {
                String::new()
            }
        };
        Ok(SharedExamples {
            phrasings,
            phrasing_labels,
            ticket_category: pack_tickets.iter().map(category).collect(),
            ticket_priority: pack_tickets.iter().map(priority).collect(),
            ticket_ids: pack_tickets.iter().map(|t| t.id.clone()).collect(),
            tickets,
        })
    }

    /// Whether `tenant` learns from the pack's tickets as shared examples (every
    /// tenant but the default one, which holds them as its own).
    fn shares_tickets(tenant: &str) -> bool {
        !tenant.is_empty()
    }

    /// The pools the category vote of `tenant` consults.
    pub(super) fn category_pools(&self, tenant: &str) -> Vec<Pool<'_>> {
        let mut pools = vec![Pool {
            vectors: &self.phrasings,
            labels: &self.phrasing_labels,
        }];
        if Self::shares_tickets(tenant) {
            pools.push(Pool {
                vectors: &self.tickets,
                labels: &self.ticket_category,
            });
        }
        pools
    }

    /// The pools the priority vote of `tenant` consults.
    pub(super) fn priority_pools(&self, tenant: &str) -> Vec<Pool<'_>> {
        if Self::shares_tickets(tenant) {
            vec![Pool {
                vectors: &self.tickets,
                labels: &self.ticket_priority,
            }]
        } else {
            Vec::new()
        }
    }
}

/// Whose heads are trained: one tenant's (its tickets plus the shared pack),
/// or the pack's own (for tenants without labelled tickets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Owner<'a> {
    Tenant(&'a str),
    Pack,
}

/// One head's training rows: vectors row-major, one label per row, and how
/// many rows are the owner's own tickets.
struct TrainingSet {
    x: Vec<f32>,
    y: Vec<String>,
    own: usize,
    out_of_scope: bool,
}

/// The rows `owner`'s `head` learns from: the owner's labelled tickets in
/// (tenant, id) order, so the same tickets train the same head (and find its
/// stored copy) whatever order the index returned them in; then the pack's
/// tickets (every owner but the default tenant); then, for the category head,
/// the pack's phrasings and out-of-scope examples.
fn training_set(
    pack: &Pack,
    memory: &TicketMemory,
    shared: &SharedExamples,
    owner: Owner<'_>,
    head: Head,
) -> TrainingSet {
    let leaves: HashSet<&str> = pack
        .leaf_categories()
        .iter()
        .map(|c| c.id.as_str())
        .collect();
    let label = |t: &Ticket| -> Option<String> {
        match head {
            Head::Category => leaves
                .contains(t.category.as_str())
                .then(|| t.category.clone()),
            Head::Priority => priority_rank(&t.priority).map(|_| t.priority.clone()),
        }
    };
    let mut rows: Vec<(&Ticket, &[f32], String)> = match owner {
        Owner::Tenant(tenant) => memory
            .iter()
            .filter(|(e, _)| e.ticket.tenant == tenant)
            .filter_map(|(e, v)| label(&e.ticket).map(|l| (&e.ticket, v, l)))
            .collect(),
        Owner::Pack => Vec::new(),
    };
    rows.sort_by(|a, b| (&a.0.tenant, &a.0.id).cmp(&(&b.0.tenant, &b.0.id)));
    let own = rows.len();
    let mut x = Vec::with_capacity((own + shared.ticket_ids.len()) * shared.tickets.dim());
    let mut y = Vec::with_capacity(own + shared.ticket_ids.len());
    for (_, v, l) in rows {
        x.extend_from_slice(v);
        y.push(l);
    }
    let shares = match owner {
        Owner::Tenant(t) => SharedExamples::shares_tickets(t),
        Owner::Pack => true,
    };
    if shares {
        let labels = match head {
            Head::Category => &shared.ticket_category,
            Head::Priority => &shared.ticket_priority,
        };
        for (i, l) in labels.iter().enumerate() {
            if let (false, Some(v)) = (l.is_empty(), shared.tickets.get(i)) {
                x.extend_from_slice(v);
                y.push(l.clone());
            }
        }
    }
    let mut out_of_scope = false;
    if head == Head::Category && !y.is_empty() {
        x.extend_from_slice(shared.phrasings.as_flat());
        y.extend(shared.phrasing_labels.iter().cloned());
        out_of_scope = y.iter().any(|l| l == OUT_OF_SCOPE);
    }
    TrainingSet {
        x,
        y,
        own,
        out_of_scope,
    }
}

/// The file name a head is kept under in the [`HeadCache`]: the default
/// tenant's heads keep the names they always had; other tenants' names carry
/// a digest of the tenant (any string is a valid tenant).
fn head_name(owner: Owner<'_>, head: Head) -> String {
    let head = head.name();
    match owner {
        Owner::Tenant(t) => format!("{}{head}", tenant_prefix(t)),
        Owner::Pack => format!("pack-{head}"),
    }
}

/// The options and digest a head of `set` is trained with.
fn head_options(set: &TrainingSet) -> (ClassifierOptions, String) {
    let mut opts = ClassifierOptions::for_size(set.y.len());
    if set.out_of_scope {
        opts.out_of_scope_label = Some(OUT_OF_SCOPE.into());
    }
    let key = training_key(&set.x, &set.y, &opts);
    (opts, key)
}

/// Trains (or loads from `cache`, when it was trained on exactly this data)
/// one head; `None` when there is too little labelled data. Also returns the
/// digest of the training data.
fn train_head(
    name: &str,
    set: TrainingSet,
    cache: &HeadCache,
) -> Result<(Option<Classifier>, String)> {
    let (opts, key) = head_options(&set);
    let TrainingSet { x, y, .. } = set;
    let distinct: HashSet<&String> = y.iter().collect();
    if distinct.len() < 2 || y.len() < 4 {
        tracing::debug!(
            head = name,
            examples = y.len(),
            "too few labelled tickets to train a classifier; using neighbours only"
        );
        return Ok((None, key));
    }
    let dim = x.len() / y.len();
    if let Some(clf) = cache.load(name, &key) {
        tracing::info!(
            head = name,
            examples = y.len(),
            "loaded the stored head trained on the same data"
        );
        return Ok((Some(clf), key));
    }
    let clf = Classifier::train(&x, dim, &y, &opts)?;
    cache.store(name, &key, &clf);
    Ok((Some(clf), key))
}

/// Trains both heads of `owner`; returns them, how many of their rows are the
/// owner's own tickets (category, priority) and their data digests.
pub(super) fn train_owner(
    pack: &Pack,
    memory: &TicketMemory,
    shared: &SharedExamples,
    cache: &HeadCache,
    owner: Owner<'_>,
) -> Result<(Heads, [usize; 2], [String; 2])> {
    let cat = training_set(pack, memory, shared, owner, Head::Category);
    let pri = training_set(pack, memory, shared, owner, Head::Priority);
    let own = [cat.own, pri.own];
    let (category, cat_key) = train_head(&head_name(owner, Head::Category), cat, cache)?;
    let (priority, pri_key) = train_head(&head_name(owner, Head::Priority), pri, cache)?;
    Ok((Heads { category, priority }, own, [cat_key, pri_key]))
}

/// Trains the heads of every tenant with labelled tickets of its own (but
/// those `elsewhere` says are trained in an adapted space), and the pack's
/// heads for the others (the default tenant's, when its training data is
/// exactly the pack's: the same data trains the same heads).
pub(super) fn train_all(
    pack: &Pack,
    memory: &TicketMemory,
    shared: &SharedExamples,
    cache: &HeadCache,
    elsewhere: impl Fn(&str) -> bool,
) -> Result<(HashMap<String, Heads>, Heads)> {
    let mut tenants: Vec<&str> = memory
        .iter()
        .filter(|(e, _)| is_labelled(&e.ticket) && !elsewhere(&e.ticket.tenant))
        .map(|(e, _)| e.ticket.tenant.as_str())
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    tenants.sort_unstable();
    let mut heads = HashMap::new();
    let mut default_keys = None;
    for tenant in tenants {
        let (trained, _, keys) = train_owner(pack, memory, shared, cache, Owner::Tenant(tenant))?;
        if tenant.is_empty() {
            default_keys = Some(keys);
        }
        heads.insert(tenant.to_string(), trained);
    }
    let pack_keys = [Head::Category, Head::Priority]
        .map(|h| head_options(&training_set(pack, memory, shared, Owner::Pack, h)).1);
    let base = match (heads.get(""), default_keys) {
        (Some(default), Some(keys)) if keys == pack_keys => default.clone(),
        _ => train_owner(pack, memory, shared, cache, Owner::Pack)?.0,
    };
    Ok((heads, base))
}
