//! The triage domain: what the service decides about a support request.
//!
//! A tenant [`pack`] configures the taxonomy, priorities, urgency lexicon,
//! queues, field patterns and thresholds. The [`engine::Engine`] combines the
//! embedding model and the hybrid index with those rules to classify,
//! prioritise, prefill fields, deflect FAQs, recommend similar tickets and
//! learn from agent corrections. [`eval`] measures all of it.
//!
//! This crate knows nothing of HTTP; the request/response types in [`api`]
//! are what the server serialises.

pub mod api;
pub mod calibrate;
pub mod chat;
pub mod classify;
pub mod deflect;
pub mod domain;
pub mod engine;
pub mod error;
pub mod eval;
pub mod faqbank;
pub mod feedback;
pub mod fields;
pub mod hashembed;
pub mod headcache;
pub mod keyunits;
pub mod knn;
pub mod learned;
pub mod logreg;
pub mod memory;
pub mod pack;
pub mod packsync;
pub mod priority;
pub mod privacy;
pub mod recommend;
pub mod textsim;
pub mod verifier;

pub use error::{Error, Result};
