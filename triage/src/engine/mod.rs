//! The triage engine: one object the server and CLI drive.
//!
//! It owns the pack, the hybrid index, an in-memory copy of every ticket with
//! its passage vector (for kNN evidence, duplicates and recommendations), the
//! FAQ bank for deflection, and the trained classifiers. Reads take a shared
//! lock; upserts and feedback take it briefly for writing, after the slow
//! embedding work is done, so a change is visible to the very next call.
//!
//! Document writes (upserts, deletes, feedback) are also serialised by one
//! write mutex, taken before the state lock and held across the index write and
//! the memory/bank update (and across feedback's read-modify-write), so the
//! index, the ticket memory and the FAQ bank always agree and no concurrent
//! update is lost. Reads never take it.
//!
//! The engine is split by what it serves: opening and the locks (here),
//! [`triage`] (decisions about a request, suggestions, search), [`chat`] (the
//! self-service chat), [`documents`] (ticket, article and learned-phrasing
//! writes and reads), [`feedback`] (agents' corrections) and [`training`] (the
//! retraining; [`heads`] is what each tenant's heads learn from). The decisions themselves are pure functions in
//! [`crate::decide`]; the engine gathers their evidence under the right lock.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use indexer::{ticket_text, Article, DocKind, Document, Index};
use models::{EmbedKind, TextEmbedder};

mod adapt;
mod chat;
mod documents;
mod feedback;
mod heads;
mod training;
mod triage;

use self::adapt::{build_space, Space};
pub use self::adapt::{AdaptOutcome, AdaptationStatus};
use self::heads::{train_all, train_owner, Heads, Owner, SharedExamples};
use crate::api::EngineStats;
use crate::clock::now_rfc3339;
use crate::decide::deflect::Deflector;
use crate::decide::escalation::EscalationRules;
use crate::decide::fields::FieldExtractor;
use crate::decide::priority::PriorityRules;
use crate::decide::privacy::Masker;
use crate::error::{Error, Result};
use crate::model::verifier::Verifier;
use crate::pack::Pack;
use crate::store::adapters::AdapterStore;
use crate::store::faqbank::FaqBank;
use crate::store::feedback::FeedbackLog;
use crate::store::headcache::HeadCache;
use crate::store::learned::{LearnPolicy, LearnedStore};
use crate::store::memory::TicketMemory;
use crate::store::sessions::Sessions;

/// Pack documents are upserted in batches of this many (progress is logged per batch).
const INGEST_BATCH: usize = 256;

/// Where the engine finds its pack and keeps its data.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// The tenant pack directory (`pack.toml`, `articles.jsonl`, `tickets.jsonl`).
    pub pack_dir: PathBuf,
    /// The data directory (index, feedback log); created if missing.
    pub data_dir: PathBuf,
    /// When customers' "this helped" makes a learned phrasing answer others.
    pub learn: LearnPolicy,
}

impl EngineConfig {
    /// A configuration with the default learning policy.
    pub fn new(pack_dir: PathBuf, data_dir: PathBuf) -> EngineConfig {
        EngineConfig {
            pack_dir,
            data_dir,
            learn: LearnPolicy::default(),
        }
    }
}

/// Everything that changes while the engine runs.
struct State {
    memory: TicketMemory,
    bank: FaqBank,
    /// Heads of each tenant that has labelled tickets of its own: trained on
    /// that tenant's tickets and the shared pack only, so one tenant's data
    /// never moves another's decisions.
    heads: HashMap<String, Heads>,
    /// Heads of tenants without labelled tickets of their own: the pack only.
    base: Heads,
    /// Adapted spaces of the tenants whose adaptation was accepted (their
    /// heads above live there); see [`adapt`].
    spaces: HashMap<String, Space>,
    corrections: usize,
}

impl State {
    /// The heads that decide for `tenant`.
    fn heads(&self, tenant: &str) -> &Heads {
        self.heads.get(tenant).unwrap_or(&self.base)
    }
}

/// The triage engine (`Send + Sync`; share it behind an `Arc`).
pub struct Engine {
    pack: Pack,
    embedder: Arc<dyn TextEmbedder>,
    index: Index,
    extractor: FieldExtractor,
    /// Masks personal data in texts kept for others (learned phrasings).
    masker: Masker,
    rules: PriorityRules,
    escalation: EscalationRules,
    deflector: Deflector,
    /// What the pack teaches every tenant, embedded like tickets.
    shared: Arc<SharedExamples>,
    state: RwLock<State>,
    /// Serialises document writes (see the module docs): held across the index
    /// write and the memory/bank update of every upsert and delete, and across
    /// the whole read-modify-write of feedback. Lock order: this mutex first,
    /// then `state`; reads take only `state`.
    writes: Mutex<()>,
    log: FeedbackLog,
    /// Trained heads kept across restarts (see [`HeadCache`]).
    heads: HeadCache,
    /// Each tenant's accepted encoder adapter, beside its heads.
    adapters: AdapterStore,
    /// Phrasings learned from chats and agents (see [`crate::store::learned`]).
    learned: LearnedStore,
    /// Chat sessions: their turns and the articles each turn showed.
    sessions: Mutex<Sessions>,
    /// Labelled changes per tenant that its heads have not learned yet.
    pending: Mutex<HashMap<String, u64>>,
}

/// Proof that the caller holds the engine's document write mutex
/// ([`Engine::lock_writes`]); functions that write documents take it so they
/// cannot be called without the lock.
type WriteLock<'a> = MutexGuard<'a, ()>;

/// The text a request is embedded as ([`ticket_text`], the indexer's rule for
/// stored tickets), refusing a request with neither title nor body.
fn request_text(title: &str, body: &str) -> Result<String> {
    let text = ticket_text(title, body);
    if text.is_empty() {
        return Err(Error::InvalidInput(
            "a request needs a non-empty title or body".into(),
        ));
    }
    Ok(text)
}

impl Engine {
    /// Loads the pack, opens (or creates) the index in `data_dir`, ingests the
    /// pack's tickets and articles on first start, and trains the classifiers
    /// from the labelled tickets.
    pub fn open(cfg: EngineConfig, embedder: Arc<dyn TextEmbedder>) -> Result<Engine> {
        let pack = Pack::load(&cfg.pack_dir)?;
        std::fs::create_dir_all(&cfg.data_dir).map_err(|source| Error::Io {
            path: cfg.data_dir.clone(),
            source,
        })?;
        let index = Index::open(&cfg.data_dir.join("index"), embedder.clone())?;
        let (log, records) = FeedbackLog::open(&cfg.data_dir.join("feedback.jsonl"))?;
        // Refuses another pack's data dir; re-ingests the pack when its documents changed.
        crate::pack::sync::sync_pack(&cfg.data_dir, &pack, &index, &records, |p| {
            ingest_pack(&index, p)
        })?;
        let verifier_path = cfg.pack_dir.join("verifier.json");
        let verifier = if verifier_path.exists() {
            Verifier::load(&verifier_path)?
        } else {
            Verifier::builtin()?
        };
        let corrected: HashSet<(String, String)> = records
            .iter()
            .map(|r| (r.tenant.clone(), r.ticket_id.clone()))
            .collect();

        let dim = embedder.dim();
        let mut memory = TicketMemory::new(dim);
        for (doc, v) in index.all(DocKind::Ticket, None)? {
            if let Document::Ticket(t) = doc {
                let c = corrected.contains(&(t.tenant.clone(), t.id.clone()));
                memory.upsert(t, &v, Some(c))?;
            }
        }
        let learned = LearnedStore::open(&cfg.data_dir.join("learned.jsonl"), cfg.learn)?;
        let mut bank = FaqBank::new(dim);
        let articles: Vec<(Article, Vec<String>)> = index
            .all(DocKind::Article, None)?
            .into_iter()
            .filter_map(|(d, _)| match d {
                Document::Article(a) => {
                    let extra = learned.active_texts(&a.tenant, &a.id);
                    Some((a, extra))
                }
                Document::Ticket(_) => None,
            })
            .collect();
        let phrasings: Vec<&str> = articles
            .iter()
            .flat_map(|(a, extra)| FaqBank::texts(a, extra))
            .collect();
        let mut vectors = embedder.embed(&phrasings, EmbedKind::Query)?.into_iter();
        for (a, extra) in &articles {
            let n = FaqBank::texts(a, extra).len();
            let vs: Vec<Vec<f32>> = vectors.by_ref().take(n).collect();
            bank.upsert_with_learned(a.clone(), extra, &vs)?;
        }
        let mut deflector = Deflector::new(verifier);
        let oos_texts: Vec<&str> = pack.out_of_scope.iter().map(String::as_str).collect();
        let oos: Vec<(String, Vec<f32>)> = if oos_texts.is_empty() {
            Vec::new()
        } else {
            pack.out_of_scope
                .iter()
                .cloned()
                .zip(embedder.embed(&oos_texts, EmbedKind::Query)?)
                .collect()
        };
        match deflector.calibrate(&bank, "", &oos)? {
            Some(c) => tracing::info!(weights = ?c.w, bias = c.b, "answer probability calibrated on the pack's articles"),
            None => tracing::info!("too few phrasings or out-of-scope examples to calibrate on: the verifier's probability is used as fitted"),
        }
        let shared = SharedExamples::embed(&pack, &memory, embedder.as_ref())?;
        let heads = HeadCache::new(&cfg.data_dir.join("heads"));
        let adapters = AdapterStore::new(&cfg.data_dir.join("heads"));
        let spaces = open_spaces(&pack, &memory, &adapters, embedder.as_ref());
        let (mut tenant_heads, base) =
            train_all(&pack, &memory, &shared, &heads, |t| spaces.contains_key(t))?;
        for (tenant, space) in &spaces {
            let (trained, own, _) = train_owner(
                &pack,
                &space.memory,
                &space.shared,
                &heads,
                Owner::Tenant(tenant),
            )?;
            if own.iter().sum::<usize>() > 0 {
                tenant_heads.insert(tenant.clone(), trained);
            }
        }
        tracing::info!(
            tickets = memory.len(),
            articles = bank.len(),
            corrections = records.len(),
            tenants_with_heads = tenant_heads.len(),
            adapted_tenants = spaces.len(),
            "engine ready"
        );
        Ok(Engine {
            extractor: FieldExtractor::new(&pack.fields)?,
            masker: Masker::new(&pack.fields)?,
            rules: PriorityRules::new(&pack),
            escalation: EscalationRules::new(&pack.escalation),
            deflector,
            shared: Arc::new(shared),
            pack,
            embedder,
            index,
            state: RwLock::new(State {
                memory,
                bank,
                heads: tenant_heads,
                base,
                spaces,
                corrections: records.len(),
            }),
            writes: Mutex::new(()),
            log,
            heads,
            adapters,
            learned,
            sessions: Mutex::new(Sessions::default()),
            pending: Mutex::new(HashMap::new()),
        })
    }

    /// The loaded pack.
    pub fn pack(&self) -> &Pack {
        &self.pack
    }

    fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes the document write mutex (see the module docs); take it before
    /// [`Engine::read`]/[`Engine::write`], never while holding those. A writer
    /// that panicked leaves nothing half-locked, so a poisoned mutex is reused.
    fn lock_writes(&self) -> WriteLock<'_> {
        self.writes.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn embed_one(&self, text: &str, kind: EmbedKind) -> Result<Vec<f32>> {
        self.embedder
            .embed(&[text], kind)?
            .into_iter()
            .next()
            .ok_or_else(|| Error::Numeric("the embedder returned no vector".into()))
    }

    /// Counts for health and metrics: of one tenant, or (`None`) of all.
    pub fn stats(&self, tenant: Option<&str>) -> EngineStats {
        let state = self.read();
        let leaves: HashSet<String> = self
            .pack
            .leaf_categories()
            .iter()
            .map(|c| c.id.clone())
            .collect();
        let mine = |t: &str| tenant.is_none_or(|x| x == t);
        let (learned_candidates, learned_active) = self.learned.counts(tenant);
        EngineStats {
            tickets: state
                .memory
                .iter()
                .filter(|(e, _)| mine(&e.ticket.tenant))
                .count(),
            articles: state.bank.count(tenant),
            labelled_examples: state
                .memory
                .iter()
                .filter(|(e, _)| mine(&e.ticket.tenant) && leaves.contains(&e.ticket.category))
                .count(),
            categories: leaves.len(),
            corrections: match tenant {
                None => state.corrections,
                Some(t) => state
                    .memory
                    .iter()
                    .filter(|(e, _)| e.corrected && e.ticket.tenant == t)
                    .count(),
            },
            learned_candidates,
            learned_active,
            model: self.embedder.name().to_string(),
            pack: self.pack.name.clone(),
        }
    }
}

/// The adapted spaces of the tenants with labelled tickets and a stored
/// adapter; an adapter that cannot be read or used is logged and skipped
/// (that tenant decides with the shipped encoder), never fatal.
fn open_spaces(
    pack: &Pack,
    memory: &TicketMemory,
    adapters: &AdapterStore,
    embedder: &dyn TextEmbedder,
) -> HashMap<String, Space> {
    let mut spaces = HashMap::new();
    let Some(encoder) = embedder.encoder() else {
        return spaces;
    };
    let tenants: HashSet<&str> = memory
        .iter()
        .filter(|(e, _)| heads::is_labelled(&e.ticket))
        .map(|(e, _)| e.ticket.tenant.as_str())
        .collect();
    for tenant in tenants {
        let Some(adapter) = adapters.load(tenant) else {
            continue;
        };
        match build_space(encoder, &adapter, pack, memory, tenant, &HashMap::new()) {
            Ok(space) => {
                spaces.insert(tenant.to_string(), space);
            }
            Err(e) => tracing::warn!(tenant, error = %e,
                "stored adapter not used; the tenant decides with the shipped encoder"),
        }
    }
    spaces
}

/// Upserts the pack's tickets and articles into the index: all of them on first
/// start, the new or changed ones when [`crate::pack::sync::sync_pack`] finds the
/// pack edited. Runs inside [`Engine::open`], before any request can write.
fn ingest_pack(index: &Index, pack: &Pack) -> Result<()> {
    tracing::info!(
        tickets = pack.tickets.len(),
        articles = pack.articles.len(),
        "ingesting {} tickets and {} articles of pack {}",
        pack.tickets.len(),
        pack.articles.len(),
        pack.name
    );
    for (n, chunk) in pack.tickets.chunks(INGEST_BATCH).enumerate() {
        let mut batch = chunk.to_vec();
        for t in batch.iter_mut().filter(|t| t.created_at.is_empty()) {
            t.created_at = now_rfc3339();
        }
        index.upsert_tickets(batch)?;
        tracing::info!(
            done = (n * INGEST_BATCH + chunk.len()),
            total = pack.tickets.len(),
            "ingesting tickets"
        );
    }
    for chunk in pack.articles.chunks(INGEST_BATCH) {
        index.upsert_articles(chunk.to_vec())?;
    }
    Ok(())
}
