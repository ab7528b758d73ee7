//! Evaluation: the numbers behind `triage eval classify` and `triage eval deflect`.
//!
//! `classify` and `deflect` take plain labelled data (no pack, no index) and
//! an embedder; `deflect_pack` measures the chat of an engine opened on a pack,
//! as it ships. Each returns a serialisable report whose JSON keys are the
//! CLI's contract.

mod cache;
mod chat;
mod classify;
mod deflect;

pub use crate::model::adaptation::{AdaptSettings, AdaptationSummary, FoldCheck};
pub use crate::model::classify::TrainSummary;
pub use cache::CachedEmbedder;
pub use chat::{deflect_pack, ChatOutcomes, ChatReport};
pub use classify::{
    classify, classify_as, classify_with, macro_f1, ClassifyReport, CoveragePoint, OosPoint,
};
pub use deflect::{
    deflect, deflect_adapted, deflect_with, fit_verifier, CosinePoint, DeflectCase, DeflectPoint,
    DeflectReport, FaqEntry, FitReport, QuestionPair,
};
