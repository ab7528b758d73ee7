//! The decisions: pure functions from evidence and the pack's rules to an
//! answer with its reasons.
//!
//! Each takes what a decision is made from (probabilities, neighbours, a
//! text, the pack's rules and thresholds) and returns the decision together
//! with the evidence for it, so each is unit-tested on small hand-made inputs
//! without opening an engine:
//!
//! * [`labels`]: category, priority and queue, from a trained head's
//!   probabilities or the neighbours' vote;
//! * [`priority`]: the urgency lexicon's floor under the priority;
//! * [`fields`]: order numbers, phones, ... found in a text;
//! * [`privacy`]: masking personal data in texts kept for others;
//! * [`recommend`]: duplicates, a predicted resolution, inferred fields;
//! * [`deflect`]: answer, clarify or hand off a chat message;
//! * [`escalation`]: the risk that a request turns into a complaint.

pub mod deflect;
pub mod escalation;
pub mod fields;
pub mod labels;
pub mod priority;
pub mod privacy;
pub mod recommend;
