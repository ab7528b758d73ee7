//! Evaluation: the numbers behind `triage eval classify` and `triage eval deflect`.
//!
//! Both take plain labelled data (no pack, no index) and an embedder, and
//! return a serialisable report whose JSON keys are the CLI's contract.

mod cache;
mod classify;
mod deflect;

pub use crate::model::classify::TrainSummary;
pub use cache::CachedEmbedder;
pub use classify::{classify, classify_as, macro_f1, ClassifyReport, CoveragePoint, OosPoint};
pub use deflect::{
    deflect, deflect_with, fit_verifier, CosinePoint, DeflectCase, DeflectPoint, DeflectReport,
    FaqEntry, FitReport, QuestionPair,
};
