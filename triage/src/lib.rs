//! The triage domain: what the service decides about a support request.
//!
//! A tenant [`Pack`] configures the taxonomy, priorities, urgency lexicon,
//! queues, field patterns and thresholds. The [`Engine`] combines the
//! embedding model and the hybrid index with those rules to classify,
//! prioritise, prefill fields, deflect FAQs, recommend similar tickets and
//! learn from agent corrections; its requests and responses are the types in
//! [`api`], which the server serialises. [`eval`] measures the models on
//! plain labelled data.
//!
//! This crate knows nothing of HTTP. Inside, the modules depend one way,
//! from the bottom up: [`api`] and the pack types; the learned models
//! (`model`); the stores (`store`); the pack sync; the decisions
//! (`decide`); the engine that wires them together (`engine`); the
//! evaluation.
//!
//! With the `openapi` feature, the [`api`] types (and the pack types the
//! server shows) derive utoipa's `ToSchema`: the server generates its OpenAPI
//! document from them, and the engine itself stays free of HTTP.
//!
//! With the `test-embedder` feature, `hashembed` is a model-free embedder
//! for tests (lexical overlap only, microseconds per text, no model file).

#![warn(missing_docs)]

pub mod api;
mod clock;
mod decide;
mod engine;
mod error;
pub mod eval;
#[cfg(feature = "test-embedder")]
pub mod hashembed;
mod model;
mod pack;
mod store;

pub use crate::{
    decide::{
        fields::FieldExtractor,
        priority::{LexiconHit, PriorityRules},
    },
    engine::{AdaptOutcome, AdaptationStatus, Engine, EngineConfig},
    error::{Error, Result},
    model::{adaptation::AdaptSettings, keyunits::KeyUnits, verifier::Verifier},
    pack::{
        sync::{sync_pack, SyncReport},
        Category, FieldSpec, Pack, Priority, Queue, Thresholds, DEFAULT_CLASSIFY_ABSTAIN,
    },
    store::learned::LearnPolicy,
};
