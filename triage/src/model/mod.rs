//! The learned models, and the text and vector maths they stand on.
//!
//! Nothing here holds state or knows about tenants, tickets or packs: each
//! module takes vectors, units or rows and returns scores, so each can be
//! tested and evaluated on plain data (see [`crate::eval`]). Not to be
//! confused with the embedding model, which is the `models` crate.
//!
//! In dependency order: [`textsim`] (texts cut into units), [`knn`] (exact
//! nearest neighbours and the one neighbour vote), [`logreg`] (the linear
//! head), [`calibrate`] (scores to probabilities), [`domain`] (the
//! out-of-scope guard), [`classify`] (all of them as one calibrated
//! classifier), [`keyunits`] (words that change a question) and [`verifier`]
//! (is this FAQ phrasing what the message asks?), with [`bankcal`] reading
//! its answer probability against a pack's own knowledge base.

pub mod adaptation;
pub mod bankcal;
pub mod calibrate;
pub mod classify;
pub mod domain;
pub mod keyunits;
pub mod knn;
pub mod logreg;
pub mod textsim;
pub mod verifier;
