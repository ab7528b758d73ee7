//! What each tenant's category and priority heads learn from, and training
//! them.
//!
//! Each tenant with labelled tickets of its own gets heads trained on those
//! tickets and what the pack teaches everyone ([`SharedExamples`]), and
//! nothing of any other tenant; tenants without labelled tickets share the
//! pack's heads. Heads are kept in the [`HeadCache`], so a start whose
//! training data is unchanged loads them instead of training: whether it is
//! unchanged is decided from the rows' ids, text hashes and labels, without
//! reading a vector. A tenant with more than [`MAX_OWN_ROWS`] labelled
//! tickets trains on a fixed, stratified sample of them (every agent
//! correction kept), so training time stays bounded however large the
//! history grows; the kNN evidence still sees every ticket. Nothing here
//! knows the engine: it opens with [`train_all`] and retrains one tenant with
//! [`train_owner`].

use std::collections::{HashMap, HashSet};

use indexer::{ticket_text, DocKind, DocRow, Document, Store, Ticket};
use models::{EmbedKind, TextEmbedder};
use sha2::{Digest, Sha256};

use crate::decide::labels::{Head, Pool, OUT_OF_SCOPE};
use crate::error::{Error, Result};
use crate::model::classify::{sample_rows, Classifier, ClassifierOptions};
use crate::model::knn::VectorSet;
use crate::pack::{priority_rank, Pack};
use crate::store::faqbank::FaqBank;
use crate::store::headcache::HeadCache;

/// The most labelled tickets of its own a head trains on (a stratified
/// sample beyond; see the module docs). Training at this size takes tens of
/// seconds on a 2-core machine; `docs/BENCHMARKS.md` has the accuracy cost.
pub(super) const MAX_OWN_ROWS: usize = 20_000;

/// Bumped when what a head's digest covers changes meaning.
const KEY_FORMAT: &str = "heads-rows-v1";

/// Corrected (tenant, id) pairs.
pub(super) type Corrected = HashSet<(String, String)>;

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
    /// Whether every pack ticket's stored copy (default tenant) has the
    /// pack's text: then its vectors are the shared tickets' vectors.
    stored_as_packed: bool,
}

impl SharedExamples {
    /// Embeds the pack's article phrasings (leaf categories only) and
    /// out-of-scope texts; takes the pack tickets' vectors from `store`
    /// where the stored copy has the pack's text (embeds them otherwise).
    pub(super) fn embed(
        pack: &Pack,
        store: &dyn Store,
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
        let mut stored: Vec<Option<Vec<f32>>> = Vec::with_capacity(pack_tickets.len());
        for t in &pack_tickets {
            let same = matches!(
                store.get(DocKind::Ticket, "", &t.id)?,
                Some(Document::Ticket(s)) if text_of(&s) == text_of(t)
            );
            stored.push(if same {
                store.vector(DocKind::Ticket, "", &t.id)?
            } else {
                None
            });
        }
        let stored_as_packed = stored.iter().all(Option::is_some);
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
            stored_as_packed,
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

/// One head's training data before any vector is read: the owner's
/// labelled tickets (sampled beyond [`MAX_OWN_ROWS`]) as (id, text hash,
/// label) in id order, then the shared rows with their vectors.
struct TrainingSet {
    tenant: Option<String>,
    own: Vec<(String, u64, String)>,
    shared_x: Vec<f32>,
    shared_y: Vec<String>,
    out_of_scope: bool,
}

impl TrainingSet {
    fn len(&self) -> usize {
        self.own.len() + self.shared_y.len()
    }

    /// Digest of exactly what the head learns from (see the module docs):
    /// the rows' ids, text hashes and labels, the shared vectors, the options
    /// and the embedding model.
    fn key(&self, opts: &ClassifierOptions, model: &str) -> String {
        let mut h = Sha256::new();
        h.update(KEY_FORMAT);
        h.update(env!("CARGO_PKG_VERSION"));
        h.update(format!("{opts:?}"));
        h.update(model);
        h.update((self.own.len() as u64).to_le_bytes());
        for (id, hash, label) in &self.own {
            for part in [id.as_bytes(), label.as_bytes()] {
                h.update((part.len() as u64).to_le_bytes());
                h.update(part);
            }
            h.update(hash.to_le_bytes());
        }
        h.update((self.shared_y.len() as u64).to_le_bytes());
        for l in &self.shared_y {
            h.update((l.len() as u64).to_le_bytes());
            h.update(l.as_bytes());
        }
        for v in &self.shared_x {
            h.update(v.to_le_bytes());
        }
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The rows as vectors (the owner's read from `store`) and labels.
    fn materialise(self, store: &dyn Store, dim: usize) -> Result<(Vec<f32>, Vec<String>)> {
        let mut x = Vec::with_capacity(self.len() * dim);
        let mut y = Vec::with_capacity(self.len());
        let tenant = self.tenant.unwrap_or_default();
        for (id, _, label) in self.own {
            let v = store
                .vector(DocKind::Ticket, &tenant, &id)?
                .ok_or_else(|| Error::Numeric(format!("ticket {id} has no stored vector")))?;
            x.extend_from_slice(&v);
            y.push(label);
        }
        x.extend_from_slice(&self.shared_x);
        y.extend(self.shared_y);
        Ok((x, y))
    }
}

/// FNV-1a of a text: the order a tenant's rows are sampled in.
fn row_hash(id: &str) -> u64 {
    id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The rows `owner`'s `head` learns from: the owner's labelled tickets in
/// id order (`rows`, from the store; a stratified sample of
/// [`MAX_OWN_ROWS`] when there are more, corrections always in); then the
/// pack's tickets (every owner but the default tenant); then, for the
/// category head, the pack's phrasings and out-of-scope examples.
fn training_set(
    pack: &Pack,
    rows: &[DocRow],
    corrected: &Corrected,
    shared: &SharedExamples,
    owner: Owner<'_>,
    head: Head,
) -> TrainingSet {
    let leaves: HashSet<&str> = pack
        .leaf_categories()
        .iter()
        .map(|c| c.id.as_str())
        .collect();
    let label = |r: &DocRow| -> Option<String> {
        match head {
            Head::Category => leaves
                .contains(r.category.as_str())
                .then(|| r.category.clone()),
            Head::Priority => priority_rank(&r.priority).map(|_| r.priority.clone()),
        }
    };
    let (tenant, mut own): (Option<String>, Vec<(String, u64, String)>) = match owner {
        Owner::Tenant(tenant) => (
            Some(tenant.to_string()),
            rows.iter()
                .filter_map(|r| label(r).map(|l| (r.id.clone(), r.text_hash, l)))
                .collect(),
        ),
        Owner::Pack => (None, Vec::new()),
    };
    if own.len() > MAX_OWN_ROWS {
        let tenant = tenant.clone().unwrap_or_default();
        let labels: Vec<String> = own.iter().map(|r| r.2.clone()).collect();
        let keep: Vec<bool> = own
            .iter()
            .map(|r| corrected.contains(&(tenant.clone(), r.0.clone())))
            .collect();
        let order: Vec<u64> = own.iter().map(|r| row_hash(&r.0)).collect();
        let picked: HashSet<usize> = sample_rows(&labels, &keep, &order, MAX_OWN_ROWS)
            .into_iter()
            .collect();
        let all = std::mem::take(&mut own);
        own = all
            .into_iter()
            .enumerate()
            .filter(|(i, _)| picked.contains(i))
            .map(|(_, r)| r)
            .collect();
    }
    let mut shared_x = Vec::new();
    let mut shared_y = Vec::new();
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
                shared_x.extend_from_slice(v);
                shared_y.push(l.clone());
            }
        }
    }
    let mut out_of_scope = false;
    if head == Head::Category && !(own.is_empty() && shared_y.is_empty()) {
        shared_x.extend_from_slice(shared.phrasings.as_flat());
        shared_y.extend(shared.phrasing_labels.iter().cloned());
        out_of_scope = shared_y.iter().any(|l| l == OUT_OF_SCOPE);
    }
    TrainingSet {
        tenant,
        own,
        shared_x,
        shared_y,
        out_of_scope,
    }
}

/// The file name a head is kept under in the [`HeadCache`]: the default
/// tenant's heads keep the names they always had; other tenants' names carry
/// a digest of the tenant (any string is a valid tenant).
fn head_name(owner: Owner<'_>, head: Head) -> String {
    let head = head.name();
    match owner {
        Owner::Tenant("") => head.to_string(),
        Owner::Tenant(t) => {
            let digest = <sha2::Sha256 as sha2::Digest>::digest(t.as_bytes());
            let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
            format!("tenant-{hex}-{head}")
        }
        Owner::Pack => format!("pack-{head}"),
    }
}

/// The options a head of `set` is trained with.
fn head_options(set: &TrainingSet) -> ClassifierOptions {
    let mut opts = ClassifierOptions::for_size(set.len());
    if set.out_of_scope {
        opts.out_of_scope_label = Some(OUT_OF_SCOPE.into());
    }
    opts
}

/// Trains (or loads from `cache`, when it was trained on exactly this data)
/// one head; `None` when there is too little labelled data.
fn train_head(
    name: &str,
    set: TrainingSet,
    store: &dyn Store,
    cache: &HeadCache,
) -> Result<Option<Classifier>> {
    let opts = head_options(&set);
    let embedder = store.embedder();
    let key = set.key(&opts, embedder.name());
    let distinct: HashSet<&String> = set.own.iter().map(|r| &r.2).chain(&set.shared_y).collect();
    if distinct.len() < 2 || set.len() < 4 {
        tracing::debug!(
            head = name,
            examples = set.len(),
            "too few labelled tickets to train a classifier; using neighbours only"
        );
        return Ok(None);
    }
    if let Some(clf) = cache.load(name, &key) {
        tracing::info!(
            head = name,
            examples = set.len(),
            "loaded the stored head trained on the same data"
        );
        return Ok(Some(clf));
    }
    let dim = embedder.dim();
    let (x, y) = set.materialise(store, dim)?;
    let clf = Classifier::train(&x, dim, &y, &opts)?;
    cache.store(name, &key, &clf);
    Ok(Some(clf))
}

/// Trains both heads of `owner`; returns them and how many of their rows are
/// the owner's own tickets (category, priority).
pub(super) fn train_owner(
    pack: &Pack,
    store: &dyn Store,
    corrected: &Corrected,
    shared: &SharedExamples,
    cache: &HeadCache,
    owner: Owner<'_>,
) -> Result<(Heads, [usize; 2])> {
    let rows = match owner {
        Owner::Tenant(t) => store.rows(DocKind::Ticket, t)?,
        Owner::Pack => Vec::new(),
    };
    let cat = training_set(pack, &rows, corrected, shared, owner, Head::Category);
    let pri = training_set(pack, &rows, corrected, shared, owner, Head::Priority);
    let own = [cat.own.len(), pri.own.len()];
    let category = train_head(&head_name(owner, Head::Category), cat, store, cache)?;
    let priority = train_head(&head_name(owner, Head::Priority), pri, store, cache)?;
    Ok((Heads { category, priority }, own))
}

/// Trains the heads of every tenant with labelled tickets of its own, and the
/// pack's heads for the others (the default tenant's, when its labelled
/// tickets are exactly the pack's, stored with the pack's text: the same data
/// trains the same heads).
pub(super) fn train_all(
    pack: &Pack,
    store: &dyn Store,
    corrected: &Corrected,
    shared: &SharedExamples,
    cache: &HeadCache,
) -> Result<(HashMap<String, Heads>, Heads)> {
    let mut heads = HashMap::new();
    let mut default_is_pack = false;
    for tenant in store.tenants(DocKind::Ticket)? {
        let rows = store.rows(DocKind::Ticket, &tenant)?;
        if !rows
            .iter()
            .any(|r| !r.category.is_empty() || !r.priority.is_empty())
        {
            continue;
        }
        if tenant.is_empty() {
            default_is_pack = shared.stored_as_packed && same_labels(&rows, shared);
        }
        let (trained, _) = train_owner(
            pack,
            store,
            corrected,
            shared,
            cache,
            Owner::Tenant(&tenant),
        )?;
        heads.insert(tenant, trained);
    }
    let base = match heads.get("") {
        Some(default) if default_is_pack => default.clone(),
        _ => train_owner(pack, store, corrected, shared, cache, Owner::Pack)?.0,
    };
    Ok((heads, base))
}

/// Whether the default tenant's labelled tickets are exactly the pack's,
/// with the pack's labels (for both heads).
fn same_labels(rows: &[DocRow], shared: &SharedExamples) -> bool {
    let labelled: Vec<&DocRow> = rows
        .iter()
        .filter(|r| !r.category.is_empty() || !r.priority.is_empty())
        .collect();
    labelled.len() == shared.ticket_ids.len()
        && labelled.iter().zip(0..).all(|(r, i)| {
            r.id == shared.ticket_ids[i]
                && r.category == shared.ticket_category[i]
                && r.priority == shared.ticket_priority[i]
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(own: &[(&str, u64, &str)]) -> TrainingSet {
        TrainingSet {
            tenant: Some("t".into()),
            own: own
                .iter()
                .map(|(i, h, l)| (i.to_string(), *h, l.to_string()))
                .collect(),
            shared_x: vec![1.0, 0.0],
            shared_y: vec!["x".into()],
            out_of_scope: false,
        }
    }

    #[test]
    fn a_head_digest_changes_with_any_row_label_text_option_or_model() {
        let opts = ClassifierOptions::for_size(3);
        let base = set(&[("1", 7, "a"), ("2", 8, "b")]);
        let key = base.key(&opts, "m");
        assert_eq!(key, set(&[("1", 7, "a"), ("2", 8, "b")]).key(&opts, "m"));
        let mut other_opts = opts.clone();
        other_opts.k += 1;
        for other in [
            set(&[("1", 7, "a"), ("2", 8, "a")]).key(&opts, "m"),
            set(&[("1", 7, "a"), ("2", 9, "b")]).key(&opts, "m"),
            set(&[("1", 7, "a"), ("3", 8, "b")]).key(&opts, "m"),
            set(&[("1", 7, "a")]).key(&opts, "m"),
            base.key(&other_opts, "m"),
            base.key(&opts, "n"),
        ] {
            assert_ne!(other, key);
        }
        let mut shared = set(&[("1", 7, "a"), ("2", 8, "b")]);
        shared.shared_x[0] = 0.5;
        assert_ne!(shared.key(&opts, "m"), key);
    }
}
