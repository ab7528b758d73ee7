//! Evaluation: the numbers behind `triage eval classify`, `deflect`,
//! `emerging`, `gaps` and `escalation`.
//!
//! `classify` and `deflect` take plain labelled data (no pack, no index) and
//! an embedder; `deflect_pack` measures the chat of an engine opened on a pack,
//! as it ships. Each returns a serialisable report whose JSON keys are the
//! CLI's contract.

mod cache;
mod chat;
mod classify;
mod deflect;
mod emerging;
mod escalation;
mod gaps;

pub use crate::model::classify::TrainSummary;
pub use cache::CachedEmbedder;
pub use chat::{deflect_pack, ChatOutcomes, ChatReport};
pub use classify::{classify, classify_as, macro_f1, ClassifyReport, CoveragePoint, OosPoint};
pub use deflect::{
    deflect, deflect_with, fit_verifier, CosinePoint, DeflectCase, DeflectPoint, DeflectReport,
    FaqEntry, FitReport, QuestionPair,
};
pub use emerging::{
    replay as replay_emerging, Burst, BurstOutcome, EmergingEvalReport, FalseAlert, ReplayMeta,
    ReplayTicket, SplitFigures, Tuning,
};
pub use escalation::{
    auroc, escalation, EscalationCase, EscalationFigures, EscalationReport, ScoredCase,
};
pub use gaps::{gaps as gaps_clinc, GapEvalReport, JudgedGap};
