//! The [`Index`]: opening a data directory, writes (upsert, delete), lookups
//! and statistics. Search lives in `search.rs`, bulk ingest in `ingest.rs`.
//!
//! Layout of a data directory: `manifest.json` (model name and dimension),
//! `tantivy/` (every document with its vector: the source of truth, written
//! by one atomic commit per call) and `graph/` (the HNSW graph, a cache that
//! is caught up or rebuilt from tantivy when stale or damaged).

use std::collections::HashMap;
use std::fs;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use models::{EmbedKind, TextEmbedder};
use serde::{Deserialize, Serialize};
use tantivy::collector::{DocSetCollector, TopDocs};
use tantivy::directory::MmapDirectory;
use tantivy::query::{BooleanQuery, Occur, TermQuery};
use tantivy::schema::IndexRecordOption;
use tantivy::{
    DocAddress, IndexReader, IndexSettings, IndexWriter, ReloadPolicy, Searcher, TantivyDocument,
    TantivyError, Term,
};

use crate::doc::{Article, DocKind, Document, Ticket};
use crate::schema::{self, Fields, Meta};
use crate::store::DocRow;
use crate::text::{self, stable_hash, ANALYZER};
use crate::vectors::{self, new_graph, Slot, VectorState};
use crate::{graph_store, manifest, verify, Error};

/// Sub-directory holding the tantivy index.
const TANTIVY_DIR: &str = "tantivy";
/// Memory budget of the tantivy writer.
const WRITER_HEAP: usize = 64 << 20;
/// Texts per embedding call.
pub(crate) const EMBED_BATCH: usize = 64;

/// Counts and sizes, for `/metrics`, `stats` and benchmarks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexStats {
    /// Live tickets.
    pub tickets: usize,
    /// Live articles.
    pub articles: usize,
    /// Points in the HNSW graph (live documents plus tombstones).
    pub graph_points: usize,
    /// Graph points of replaced or deleted documents, skipped by search until the next rebuild.
    pub tombstones: usize,
    /// Size of the data directory.
    pub bytes_on_disk: u64,
    /// Embedding model the index was built with.
    pub model: String,
    /// Embedding dimension.
    pub dim: usize,
}

/// What the commit payload records: the next unused vector id, so ids are
/// never reused (a stale graph dump can then never map an id to the wrong vector).
#[derive(Serialize, Deserialize)]
struct Payload {
    next_vid: u64,
}

/// The tantivy writer and the vector id counter, behind one lock: writes are serialised.
pub(crate) struct Writer {
    writer: IndexWriter,
    next_vid: u64,
}

/// A document ready to be written: validated, hashed and embedded.
pub(crate) struct Ready {
    pub doc: Document,
    pub meta: Meta,
    pub thash: u64,
    pub vector: Vec<f32>,
    /// The live vector id to keep when the embedded text is unchanged.
    pub reuse_vid: Option<u64>,
}

/// A hybrid BM25 + vector index of tickets and articles in one data directory.
///
/// `Send + Sync`: searches run concurrently; writes are serialised internally
/// and are durable and searchable when they return.
pub struct Index {
    pub(crate) dir: PathBuf,
    pub(crate) embedder: Arc<dyn TextEmbedder>,
    pub(crate) dim: usize,
    pub(crate) fields: Fields,
    pub(crate) reader: IndexReader,
    pub(crate) writer: Mutex<Writer>,
    pub(crate) state: Arc<RwLock<VectorState>>,
    /// The background graph rebuild, while one runs.
    rebuild: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// HNSW candidate list width for searches.
    pub(crate) ef_search: AtomicUsize,
    /// Candidate sets up to this size are searched exactly.
    pub(crate) exact_max: AtomicUsize,
}

impl std::fmt::Debug for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Index")
            .field("dir", &self.dir)
            .field("model", &self.embedder.name())
            .field("dim", &self.dim)
            .finish_non_exhaustive()
    }
}

fn lock_err(path: &Path, e: TantivyError) -> Error {
    match e {
        TantivyError::LockFailure(..) => Error::Locked {
            path: path.to_path_buf(),
        },
        e => Error::Tantivy(e),
    }
}

/// Whether tantivy's directory holds anything besides its lock and
/// bookkeeping files (i.e. documents that an empty index would delete).
fn has_segment_files(tdir: &Path) -> bool {
    fs::read_dir(tdir).is_ok_and(|entries| {
        entries.filter_map(|e| e.ok()).any(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            !name.starts_with('.') && name != "meta.json"
        })
    })
}

impl Index {
    /// Opens the index in `dir`, creating it if absent. Refuses an index built
    /// with another model ([`Error::ModelMismatch`]). Every file the last
    /// commit needs is checked to exist and match its checksum: a missing or
    /// damaged one gives [`Error::Damaged`] naming them all; an unreadable
    /// manifest or `meta.json` gives [`Error::Corrupt`]. A damaged or stale
    /// graph is only a cache: it is rebuilt from the documents (logged).
    pub fn open(dir: &Path, embedder: Arc<dyn TextEmbedder>) -> Result<Index, Error> {
        let dim = embedder.dim();
        if dim == 0 {
            return Err(Error::InvalidRequest(format!(
                "embedder {:?} reports dimension 0",
                embedder.name()
            )));
        }
        fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let tdir = dir.join(TANTIVY_DIR);
        let has_tantivy = tdir.join("meta.json").exists();
        if !has_tantivy && has_segment_files(&tdir) {
            // Creating a fresh index here would garbage-collect the old segments.
            return Err(Error::corrupt(
                tdir.join("meta.json"),
                "missing, but segment files are present; restore it from a backup (refusing to start an empty index over them)",
            ));
        }
        if has_tantivy && !dir.join(manifest::FILE).exists() {
            return Err(Error::corrupt(
                dir.join(manifest::FILE),
                "manifest missing but an index is present; cannot tell which model built it",
            ));
        }
        manifest::check_or_create(dir, embedder.name(), dim)?;
        graph_store::clean_temporaries(dir);
        fs::create_dir_all(&tdir).map_err(|e| Error::io(&tdir, e))?;
        match catch_unwind(AssertUnwindSafe(|| {
            Self::open_inner(dir, &tdir, has_tantivy, embedder, dim)
        })) {
            Ok(r) => r,
            Err(_) => Err(Error::corrupt(
                &tdir,
                "index files are unreadable (reader panicked)",
            )),
        }
    }

    fn open_inner(
        dir: &Path,
        tdir: &Path,
        has_tantivy: bool,
        embedder: Arc<dyn TextEmbedder>,
        dim: usize,
    ) -> Result<Index, Error> {
        let corrupt = |e: &dyn std::fmt::Display| Error::corrupt(tdir, e.to_string());
        let mmap = MmapDirectory::open(tdir).map_err(|e| corrupt(&e))?;
        let index = if has_tantivy {
            let index = tantivy::Index::open(mmap).map_err(|e| corrupt(&e))?;
            verify::check_tantivy(dir, tdir, &index)?;
            index
        } else {
            tantivy::Index::create(mmap, schema::build(), IndexSettings::default())?
        };
        let fields = Fields::from_schema(&index.schema()).map_err(|e| corrupt(&e))?;
        index.tokenizers().register(ANALYZER, text::analyzer());
        let writer = index
            .writer_with_num_threads(1, WRITER_HEAP)
            .map_err(|e| lock_err(dir, e))?;
        let reader: IndexReader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()
            .map_err(|e: TantivyError| corrupt(&e))?;
        let payload: Option<Payload> = index
            .load_metas()
            .map_err(|e| corrupt(&e))?
            .payload
            .and_then(|p| serde_json::from_str(&p).ok());

        let searcher = reader.searcher();
        let mut rows = Vec::new();
        for (ord, seg) in searcher.segment_readers().iter().enumerate() {
            for doc_id in seg.doc_ids_alive() {
                let d: TantivyDocument = searcher
                    .doc(DocAddress::new(ord as u32, doc_id))
                    .map_err(|e| corrupt(&e))?;
                rows.push(schema::read_row(&fields, &d, dim).map_err(|e| corrupt(&e))?);
            }
        }
        let max_vid = rows.iter().map(|r| r.vid + 1).max().unwrap_or(0);
        let next_vid = payload.map_or(0, |p| p.next_vid).max(max_vid);

        let (graph, graph_vids) = match graph_store::load(dir, dim) {
            Ok(Some((g, vids))) if vids.iter().all(|&v| v < next_vid) => (g, vids),
            Ok(Some(_)) => {
                tracing::warn!(
                    "graph dump refers to unknown vectors; rebuilding it from the documents \
                     (it is a cache: nothing is lost)"
                );
                (new_graph(rows.len()), Vec::new())
            }
            Ok(None) => (new_graph(rows.len()), Vec::new()),
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    "graph dump unusable; rebuilding it from the documents (it is a cache: nothing is lost)"
                );
                (new_graph(rows.len()), Vec::new())
            }
        };
        let mut state = VectorState::new(graph, &graph_vids);
        for row in rows {
            state.put(
                row.vid,
                Slot {
                    meta: row.meta,
                    thash: row.thash,
                    vector: row.vector.into_boxed_slice(),
                },
            );
        }
        let idx = Index {
            dir: dir.to_path_buf(),
            embedder,
            dim,
            fields,
            reader,
            writer: Mutex::new(Writer { writer, next_vid }),
            state: Arc::new(RwLock::new(state)),
            rebuild: Mutex::new(None),
            ef_search: AtomicUsize::new(vectors::EF_SEARCH),
            exact_max: AtomicUsize::new(vectors::EXACT_MAX),
        };
        let backlog = idx.read_state().graph_backlog();
        if !backlog.is_empty() {
            tracing::info!(
                points = backlog.len(),
                "adding vectors missing from the graph"
            );
            idx.insert_into_graph(&backlog);
        }
        if idx.read_state().needs_rebuild() {
            idx.rebuild_graph();
        }
        Ok(idx)
    }

    pub(crate) fn read_state(&self) -> RwLockReadGuard<'_, VectorState> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write_state(&self) -> RwLockWriteGuard<'_, VectorState> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_writer(&self) -> MutexGuard<'_, Writer> {
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets the HNSW search width (default [`crate::DEFAULT_EF_SEARCH`]):
    /// larger is slower and closer to exact search.
    pub fn set_ef_search(&self, ef: usize) {
        self.ef_search.store(ef.max(2), Ordering::Relaxed);
    }

    /// Sets the largest number of candidate documents (after filters) that
    /// vector search scans exactly instead of using the HNSW graph (default
    /// [`crate::DEFAULT_EXACT_MAX`]; 0 always uses the graph).
    pub fn set_exact_threshold(&self, max_docs: usize) {
        self.exact_max.store(max_docs, Ordering::Relaxed);
    }

    /// The embedding model this index uses.
    pub fn embedder(&self) -> &Arc<dyn TextEmbedder> {
        &self.embedder
    }

    /// Adds or replaces tickets (by tenant and id). Durable and searchable on return.
    pub fn upsert_tickets(&self, docs: Vec<Ticket>) -> Result<(), Error> {
        self.upsert(docs.into_iter().map(Document::Ticket).collect())
            .map(|_| ())
    }

    /// Adds or replaces articles (by tenant and id). Durable and searchable on return.
    pub fn upsert_articles(&self, docs: Vec<Article>) -> Result<(), Error> {
        self.upsert(docs.into_iter().map(Document::Article).collect())
            .map(|_| ())
    }

    /// Validates, embeds (only texts that changed) and writes documents;
    /// returns how many were embedded and the embedding time.
    pub(crate) fn upsert(&self, docs: Vec<Document>) -> Result<(usize, f64), Error> {
        // Validate everything first, keeping the last of duplicate keys.
        let mut order: Vec<String> = Vec::new();
        let mut by_key: HashMap<String, (Document, Meta)> = HashMap::new();
        for doc in docs {
            let meta = Meta::of(&doc)?;
            let key = meta.key();
            if by_key.insert(key.clone(), (doc, meta)).is_none() {
                order.push(key);
            }
        }
        let mut ready: Vec<Ready> = Vec::with_capacity(order.len());
        let mut to_embed: Vec<(usize, String)> = Vec::new();
        {
            let state = self.read_state();
            for key in &order {
                let Some((doc, meta)) = by_key.remove(key) else {
                    continue;
                };
                let embed_text = match &doc {
                    Document::Ticket(t) => text::ticket_text(&t.title, &t.body),
                    Document::Article(a) => text::article_embed_text(a),
                };
                let thash = stable_hash(&embed_text);
                let reuse = state
                    .lookup(key)
                    .filter(|&(_, h)| h == thash)
                    .and_then(|(vid, _)| Some((vid, state.slot(vid)?.vector.to_vec())));
                let (reuse_vid, vector) = match reuse {
                    Some((vid, v)) => (Some(vid), v),
                    None => {
                        to_embed.push((ready.len(), embed_text));
                        (None, Vec::new())
                    }
                };
                ready.push(Ready {
                    doc,
                    meta,
                    thash,
                    vector,
                    reuse_vid,
                });
            }
        }
        let started = std::time::Instant::now();
        for batch in to_embed.chunks(EMBED_BATCH) {
            let texts: Vec<&str> = batch.iter().map(|(_, t)| t.as_str()).collect();
            let vectors = self.embed(&texts, EmbedKind::Passage)?;
            for ((i, _), v) in batch.iter().zip(vectors) {
                ready[*i].vector = v;
            }
        }
        let embed_secs = started.elapsed().as_secs_f64();
        self.write(ready)?;
        Ok((to_embed.len(), embed_secs))
    }

    /// Embeds texts and checks what the model returned: one finite vector of
    /// the index dimension per text, normalised to unit length.
    pub(crate) fn embed(&self, texts: &[&str], kind: EmbedKind) -> Result<Vec<Vec<f32>>, Error> {
        let vectors = self.embedder.embed(texts, kind)?;
        if vectors.len() != texts.len() {
            return Err(Error::InvalidRequest(format!(
                "embedder returned {} vectors for {} texts",
                vectors.len(),
                texts.len()
            )));
        }
        vectors
            .into_iter()
            .map(|mut v| {
                self.check_vector(&mut v)?;
                Ok(v)
            })
            .collect()
    }

    /// Checks the dimension of a vector and normalises it.
    pub(crate) fn check_vector(&self, v: &mut [f32]) -> Result<(), Error> {
        if v.len() != self.dim {
            return Err(Error::InvalidRequest(format!(
                "vector has dimension {}, index expects {}",
                v.len(),
                self.dim
            )));
        }
        vectors::normalise(v).map_err(Error::InvalidRequest)
    }

    /// Writes prepared documents in one tantivy commit, then updates the
    /// vector state.
    fn write(&self, ready: Vec<Ready>) -> Result<(), Error> {
        if ready.is_empty() {
            return Ok(());
        }
        let mut w = self.lock_writer();
        let f = self.fields;
        let mut vids = Vec::with_capacity(ready.len());
        for r in &ready {
            let vid = match r.reuse_vid {
                Some(v) => v,
                None => {
                    w.next_vid += 1;
                    w.next_vid - 1
                }
            };
            vids.push(vid);
            w.writer
                .delete_term(Term::from_field_text(f.key, &r.meta.key()));
            let row = schema::to_row(&f, &r.doc, &r.meta, vid, r.thash, &r.vector)?;
            w.writer.add_document(row)?;
        }
        self.commit(&mut w)?;
        // Graph first (points are invisible until their slot is live), then slots.
        let missing: Vec<(u64, Box<[f32]>)> = {
            let state = self.read_state();
            ready
                .iter()
                .zip(&vids)
                .filter(|(_, &vid)| !state.in_graph(vid))
                .map(|(r, &vid)| (vid, r.vector.clone().into_boxed_slice()))
                .collect()
        };
        let graph = self.read_state().graph();
        let items: Vec<(&[f32], usize)> =
            missing.iter().map(|(v, x)| (&x[..], *v as usize)).collect();
        vectors::insert_all(&graph, &items);
        {
            let mut state = self.write_state();
            for (r, vid) in ready.into_iter().zip(vids) {
                state.put(
                    vid,
                    Slot {
                        meta: r.meta,
                        thash: r.thash,
                        vector: r.vector.into_boxed_slice(),
                    },
                );
            }
            state.graph_added(&graph, &items);
        }
        self.maintain(&w);
        Ok(())
    }

    /// Commits pending tantivy operations with the vector id counter as
    /// payload, and makes them visible to searches. On failure the pending
    /// operations are rolled back.
    fn commit(&self, w: &mut Writer) -> Result<(), Error> {
        let payload = serde_json::to_string(&Payload {
            next_vid: w.next_vid,
        })
        .map_err(|e| Error::InvalidRequest(e.to_string()))?;
        let result = w.writer.prepare_commit().and_then(|mut p| {
            p.set_payload(&payload);
            p.commit()
        });
        if let Err(e) = result {
            if let Err(re) = w.writer.rollback() {
                tracing::error!(error = %re, "rollback after failed commit failed");
            }
            return Err(e.into());
        }
        self.reader.reload()?;
        Ok(())
    }

    /// After a write: rebuilds the graph when tombstones dominate, and saves
    /// it when enough has changed since the last save. Failures are logged:
    /// the graph is a cache and the write itself is already durable.
    fn maintain(&self, _w: &Writer) {
        if self.read_state().needs_rebuild() {
            self.start_rebuild();
        }
        let (dirty, points) = {
            let s = self.read_state();
            (s.dirty, s.graph_points())
        };
        if dirty > 0 && dirty >= (points / 5).max(2000) {
            if let Err(e) = self.save_graph() {
                tracing::warn!(error = %e, "could not save the vector graph");
            }
        }
    }

    fn insert_into_graph(&self, items: &[(u64, Box<[f32]>)]) {
        let graph = self.read_state().graph();
        let refs: Vec<(&[f32], usize)> = items.iter().map(|(v, x)| (&x[..], *v as usize)).collect();
        vectors::insert_all(&graph, &refs);
        self.write_state().graph_added(&graph, &refs);
    }

    /// Builds a fresh graph from the live vectors and swaps it in, while
    /// opening (nothing else runs yet).
    fn rebuild_graph(&self) {
        let Some(live) = self.write_state().begin_rebuild() else {
            return;
        };
        let (graph, vids) = build_graph(&live);
        self.write_state().finish_rebuild(graph, &vids);
    }

    /// Rebuilds the graph on a background thread: searches keep using the old
    /// graph and writes keep going (into the old graph, and whatever they add
    /// is carried over at the swap), so a rebuild of minutes blocks nobody.
    fn start_rebuild(&self) {
        let Some(live) = self.write_state().begin_rebuild() else {
            return;
        };
        let state = Arc::clone(&self.state);
        let job = move || {
            let (graph, vids) = build_graph(&live);
            state
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .finish_rebuild(graph, &vids);
            tracing::info!(points = vids.len(), "vector graph rebuilt");
        };
        let spawned = std::thread::Builder::new()
            .name("graph-rebuild".into())
            .spawn(job);
        match spawned {
            Ok(handle) => {
                *self.rebuild.lock().unwrap_or_else(|p| p.into_inner()) = Some(handle);
            }
            Err(e) => {
                // No thread to be had: rebuild on this one rather than never.
                tracing::warn!(error = %e, "could not start a rebuild thread; rebuilding inline");
                self.write_state().abort_rebuild();
                self.rebuild_graph();
            }
        }
    }

    /// Waits for a background graph rebuild, if one is running.
    fn wait_for_rebuild(&self) {
        let handle = self
            .rebuild
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(h) = handle {
            if h.join().is_err() {
                tracing::error!("the graph rebuild thread panicked; the old graph stays");
                self.write_state().abort_rebuild();
            }
        }
    }

    /// Finishes a background graph rebuild, if one is running, and saves the
    /// vector graph if it changed since the last save, so the next open does
    /// not have to rebuild or catch it up. Called after bulk ingest; cheap
    /// when nothing changed. (Dropping the index saves without waiting.)
    pub fn flush(&self) -> Result<(), Error> {
        self.wait_for_rebuild();
        let _w = self.lock_writer();
        self.save_graph()
    }

    fn save_graph(&self) -> Result<(), Error> {
        let (graph, points, dirty) = {
            let s = self.read_state();
            (s.graph(), s.graph_points(), s.dirty)
        };
        if dirty == 0 {
            return Ok(());
        }
        if points == 0 {
            let dest = self.dir.join(graph_store::GRAPH_DIR);
            if dest.exists() {
                fs::remove_dir_all(&dest).map_err(|e| Error::io(&dest, e))?;
            }
        } else {
            graph_store::save(&self.dir, &graph, self.dim, points)?;
        }
        // Changes made while saving stay counted, and a graph swapped in by a
        // background rebuild meanwhile is still unsaved.
        let mut s = self.write_state();
        if Arc::ptr_eq(&s.graph(), &graph) {
            s.dirty = s.dirty.saturating_sub(dirty);
        }
        Ok(())
    }

    /// Deletes a document; `true` if it existed. Durable on return.
    pub fn delete(&self, kind: DocKind, tenant: &str, id: &str) -> Result<bool, Error> {
        let key = schema::key(kind, tenant, id);
        let mut w = self.lock_writer();
        if self.read_state().lookup(&key).is_none() {
            return Ok(false);
        }
        w.writer
            .delete_term(Term::from_field_text(self.fields.key, &key));
        self.commit(&mut w)?;
        self.write_state().remove(&key);
        self.maintain(&w);
        Ok(true)
    }

    /// Finds the address of a live document by key in a searcher snapshot.
    pub(crate) fn address(
        &self,
        searcher: &Searcher,
        key: &str,
    ) -> Result<Option<DocAddress>, Error> {
        let q = TermQuery::new(
            Term::from_field_text(self.fields.key, key),
            IndexRecordOption::Basic,
        );
        let top = searcher.search(&q, &TopDocs::with_limit(1).order_by_score())?;
        Ok(top.first().map(|(_, a)| *a))
    }

    /// Reads the stored document at an address.
    pub(crate) fn load_doc(
        &self,
        searcher: &Searcher,
        addr: DocAddress,
    ) -> Result<Document, Error> {
        let d: TantivyDocument = searcher.doc(addr)?;
        schema::read_doc(&self.fields, &d)
            .map_err(|e| Error::corrupt(self.dir.join(TANTIVY_DIR), e))
    }

    /// The stored document, if it exists.
    pub fn get(&self, kind: DocKind, tenant: &str, id: &str) -> Result<Option<Document>, Error> {
        let searcher = self.reader.searcher();
        match self.address(&searcher, &schema::key(kind, tenant, id))? {
            Some(addr) => self.load_doc(&searcher, addr).map(Some),
            None => Ok(None),
        }
    }

    /// The stored (unit) passage vector of a document.
    pub fn vector(&self, kind: DocKind, tenant: &str, id: &str) -> Option<Vec<f32>> {
        let state = self.read_state();
        let (vid, _) = state.lookup(&schema::key(kind, tenant, id))?;
        Some(state.slot(vid)?.vector.to_vec())
    }

    /// Every document of `kind` (of one tenant, or of all with `None`) with
    /// its vector, e.g. to train classifiers. Reads only the matching
    /// documents (found through the kind and tenant terms).
    pub fn all(
        &self,
        kind: DocKind,
        tenant: Option<&str>,
    ) -> Result<Vec<(Document, Vec<f32>)>, Error> {
        let searcher = self.reader.searcher();
        let f = self.fields;
        let tdir = self.dir.join(TANTIVY_DIR);
        let term = |field, value: &str| -> Box<dyn tantivy::query::Query> {
            Box::new(TermQuery::new(
                Term::from_field_text(field, value),
                IndexRecordOption::Basic,
            ))
        };
        let mut clauses = vec![(Occur::Must, term(f.kind, schema::kind_str(kind)))];
        if let Some(t) = tenant {
            clauses.push((Occur::Must, term(f.tenant, t)));
        }
        let mut addrs: Vec<DocAddress> = searcher
            .search(&BooleanQuery::new(clauses), &DocSetCollector)?
            .into_iter()
            .collect();
        addrs.sort();
        let mut out = Vec::with_capacity(addrs.len());
        for addr in addrs {
            let d: TantivyDocument = searcher.doc(addr)?;
            let doc = schema::read_doc(&f, &d).map_err(|e| Error::corrupt(&tdir, e))?;
            let vector =
                schema::read_vector(&f, &d, self.dim).map_err(|e| Error::corrupt(&tdir, e))?;
            out.push((doc, vector));
        }
        Ok(out)
    }

    /// The attributes of every live document of `kind` in `tenant`, in id
    /// order, from memory (no document is read).
    pub fn rows(&self, kind: DocKind, tenant: &str) -> Vec<DocRow> {
        let state = self.read_state();
        let mut rows: Vec<DocRow> = state
            .partition_slots(kind, tenant)
            .map(|(_, s)| DocRow {
                id: s.meta.id.clone(),
                category: s.meta.category.clone(),
                priority: s.meta.priority.clone(),
                status: s.meta.status.clone(),
                resolved: s.meta.resolved,
                created: s.meta.created,
                text_hash: s.thash,
            })
            .collect();
        rows.sort_by(|a, b| a.id.cmp(&b.id));
        rows
    }

    /// Number of live documents of a kind.
    pub fn len(&self, kind: DocKind) -> usize {
        self.read_state().count(kind)
    }

    /// Whether the index holds no documents at all.
    pub fn is_empty(&self) -> bool {
        self.read_state().live() == 0
    }

    /// Document counts, graph size and bytes on disk.
    pub fn stats(&self) -> IndexStats {
        let s = self.read_state();
        IndexStats {
            tickets: s.count(DocKind::Ticket),
            articles: s.count(DocKind::Article),
            graph_points: s.graph_points(),
            tombstones: s.tombstones(),
            bytes_on_disk: dir_size(&self.dir),
            model: self.embedder.name().to_string(),
            dim: self.dim,
        }
    }
}

fn dir_size(path: &Path) -> u64 {
    let Ok(entries) = fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// A graph over `live` (vector id, vector) and the ids it holds.
fn build_graph(live: &[(u64, Box<[f32]>)]) -> (vectors::Graph, Vec<u64>) {
    tracing::info!(points = live.len(), "rebuilding the vector graph");
    let graph = new_graph(live.len());
    let refs: Vec<(&[f32], usize)> = live.iter().map(|(v, x)| (&x[..], *v as usize)).collect();
    vectors::insert_all(&graph, &refs);
    (graph, live.iter().map(|(v, _)| *v).collect())
}

impl Drop for Index {
    fn drop(&mut self) {
        if let Err(e) = self.save_graph() {
            tracing::warn!(error = %e, "could not save the vector graph on close");
        }
    }
}
