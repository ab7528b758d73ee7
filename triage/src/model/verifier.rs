//! The deflection verifier: is this FAQ phrasing really what the message asks?
//!
//! One cosine cannot tell 花呗 from 借呗 or "30 天" from "60 天". The verifier is
//! a logistic regression over retrieval and lexical evidence for one
//! (message, phrasing) pair in the context of the other candidates: cosine
//! and its gaps, overlap, key units (learned per unit: does a difference in it
//! change the question? see [`KeyUnits`]), numbers, negation, and support from
//! the article's other phrasings. A second logistic turns the best article's
//! evidence into the probability that answering with it is right. Its
//! weights are fitted offline on question pairs (see `eval::fit_verifier`)
//! and shipped in `verifier.json`; a pack directory may carry its own.
//!
//! This module holds the evidence's names ([`BASE_FEATURES`]) and the weights;
//! the deflection computes the evidence from the FAQ bank's candidates
//! (`decide::deflect::features`), so the models know nothing of the stores.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::keyunits::KeyUnits;
use crate::model::logreg::{LogReg, TrainOptions};
use crate::model::textsim::Units;

/// The verifier shipped with the crate.
const BUILTIN: &str = include_str!("../../verifier.json");

/// Names of the base evidence, in the order the deflection computes it for
/// each candidate (`decide::deflect::features`). The
/// feature vector holds them three times: as they are; multiplied by
/// [`is_latin`], so one model keeps separate weights for Chinese and for
/// Latin-script messages (their cosine scales and lexical units differ); and
/// multiplied by "the candidate's article has several phrasings", so evidence
/// can weigh differently in a knowledge base of articles with alternative
/// questions than in a bank of single questions (where a near-duplicate is
/// often another entry, and an article cannot vouch for its phrasings). That
/// third block is learned from multi-phrasing fitting data in any language and
/// applies to all.
pub const BASE_FEATURES: [&str; 26] = [
    "cos",
    "cos_minus_top",
    "cos_minus_other_article",
    "lex",
    "lex_minus_top",
    "unit_jaccard",
    "bigram_jaccard",
    "unmatched_query_mass",
    "unmatched_faq_mass",
    "unmatched_query_max_idf",
    "unmatched_faq_max_idf",
    "numbers_differ",
    "numbers_one_sided",
    "negation_mismatch",
    "edit_similarity",
    "length_ratio",
    "exact",
    "cos_x_bigram_jaccard",
    "cos_squared",
    "article_second_cos",
    "article_other_phrasings_share",
    // The five of `KEY_UNIT_FEATURES`, in its order.
    "key_unmatched_query_max",
    "key_unmatched_faq_max",
    "key_unmatched_positive_sum",
    "key_unmatched_sum",
    "unmatched_units",
];

/// Feature names: [`BASE_FEATURES`], then each with a `_latin` suffix, then each
/// with a `_faq` suffix.
pub fn feature_names() -> Vec<String> {
    BASE_FEATURES
        .iter()
        .map(|s| s.to_string())
        .chain(BASE_FEATURES.iter().map(|s| format!("{s}_latin")))
        .chain(BASE_FEATURES.iter().map(|s| format!("{s}_faq")))
        .collect()
}

/// Whether a message has no CJK (or other non-ASCII) units: English and the like.
pub fn is_latin(query: &Units) -> bool {
    !query.units.iter().any(|u| !u.is_ascii())
}

/// Inputs of the answer calibration, in order: the article's score, its lead over
/// the best other article, the message's script, then the best phrasing's evidence
/// ([`feature_names`]).
pub fn answer_feature_names() -> Vec<String> {
    ["logit", "logit_gap", "latin"]
        .iter()
        .map(|s| s.to_string())
        .chain(feature_names().into_iter().map(|s| format!("answer_{s}")))
        .collect()
}

/// The answer-calibration input for an article: see [`answer_feature_names`].
pub fn answer_features(logit: f32, gap: f32, latin: bool, features: &[f32]) -> Vec<f32> {
    [logit, gap, f32::from(latin)]
        .into_iter()
        .chain(features.iter().copied())
        .collect()
}

/// Fitted verifier weights (the JSON file format).
///
/// Two stages: the candidate scorer ranks phrasings (`weights`, `bias` over
/// the evidence named in `features`); the answer calibration (`answer_weights`,
/// `answer_bias` over the article's score, its lead and that evidence) turns an article's score, its lead over the best other
/// article and its best phrasing's evidence into the probability that answering
/// with it is right.
/// The second stage is fitted on whole messages, so a bank holding several
/// paraphrases of the message does not depress the confidence.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Verifier {
    /// Feature names the weights belong to (must be the names this version
    /// computes, or loading refuses the file: refit it).
    pub features: Vec<String>,
    /// One weight per feature.
    pub weights: Vec<f32>,
    /// Intercept.
    pub bias: f32,
    /// Answer-calibration weights: the article's score, its lead over the best
    /// other article, the script, then one per feature.
    pub answer_weights: Vec<f32>,
    /// Answer-calibration intercept.
    pub answer_bias: f32,
    /// Where the weights came from (data set, pairs, date).
    pub fitted_on: String,
    /// Learned weights of units that change a question's meaning (see [`KeyUnits`]).
    #[serde(default)]
    pub key_units: KeyUnits,
}

impl Verifier {
    /// The verifier shipped with the crate.
    pub fn builtin() -> Result<Verifier> {
        Self::from_json(BUILTIN, Path::new("triage/verifier.json"))
    }

    /// A verifier with zero weights around `key_units`: computes features
    /// (for fitting) but scores every candidate alike.
    pub(crate) fn unfitted(key_units: KeyUnits) -> Verifier {
        Verifier {
            features: feature_names(),
            weights: vec![0.0; feature_names().len()],
            bias: 0.0,
            answer_weights: answer_feature_names()
                .iter()
                .map(|n| f32::from(n == "logit"))
                .collect(),
            answer_bias: 0.0,
            fitted_on: String::new(),
            key_units,
        }
    }

    /// Loads a verifier file written by [`Verifier::to_json`].
    pub fn load(path: &Path) -> Result<Verifier> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_json(&text, path)
    }

    fn from_json(text: &str, path: &Path) -> Result<Verifier> {
        let v: Verifier = serde_json::from_str(text).map_err(|e| Error::Pack {
            file: path.to_path_buf(),
            line: e.line(),
            key: "verifier".into(),
            message: e.to_string(),
        })?;
        let names = feature_names();
        if v.features != names
            || v.weights.len() != names.len()
            || v.answer_weights.len() != answer_feature_names().len()
        {
            return Err(Error::Pack {
                file: path.to_path_buf(),
                line: 0,
                key: "features".into(),
                message: format!(
                    "verifier was fitted on features {:?}; this version computes {:?} — refit it",
                    v.features, names
                ),
            });
        }
        Ok(v)
    }

    /// Serialises the weights (pretty JSON).
    pub fn to_json(&self) -> Result<String> {
        serde_json::to_string_pretty(self).map_err(|e| Error::Numeric(e.to_string()))
    }

    /// Candidate score (a logit): higher means more likely the same question.
    pub fn logit(&self, features: &[f32]) -> f32 {
        self.bias
            + self
                .weights
                .iter()
                .zip(features)
                .map(|(w, f)| w * f)
                .sum::<f32>()
    }

    /// Probability that answering with an article is right, from its answer
    /// features (its score, its lead over the best other article —
    /// negative when it trails —, the script, and its best phrasing's evidence).
    pub fn answer_probability(&self, answer_features: &[f32]) -> f32 {
        1.0 / (1.0 + (-self.answer_logit(answer_features)).exp())
    }

    /// The log-odds behind [`Verifier::answer_probability`].
    pub fn answer_logit(&self, answer_features: &[f32]) -> f32 {
        self.answer_bias
            + answer_features
                .iter()
                .zip(&self.answer_weights)
                .map(|(x, w)| x * w)
                .sum::<f32>()
    }

    /// Fits the candidate scorer on `(features, is_right)` rows, then the answer
    /// calibration on `(answer features, top article is right)` message rows that
    /// `message_rows` derives from the fitted scorer.
    /// `key_units` is stored with the weights: the rows must have been computed with it
    /// (or, while fitting, with tables learned without the rows' own pairs).
    pub fn fit(
        rows: &[(Vec<f32>, bool)],
        message_rows: impl Fn(&Verifier) -> Vec<(Vec<f32>, bool)>,
        l2: f32,
        fitted_on: &str,
        key_units: KeyUnits,
    ) -> Result<Verifier> {
        let (weights, bias) = logistic(rows, feature_names().len(), l2)?;
        let mut v = Verifier {
            weights,
            bias,
            fitted_on: fitted_on.to_string(),
            ..Verifier::unfitted(key_units)
        };
        let messages = message_rows(&v);
        let (answer_weights, answer_bias) = logistic(&messages, answer_feature_names().len(), l2)?;
        v.answer_weights = answer_weights;
        v.answer_bias = answer_bias;
        Ok(v)
    }
}

/// Binary logistic regression: weights and intercept on raw features.
fn logistic(rows: &[(Vec<f32>, bool)], dim: usize, l2: f32) -> Result<(Vec<f32>, f32)> {
    if rows.iter().any(|(f, _)| f.len() != dim) {
        return Err(Error::InvalidInput(
            "feature rows of the wrong length".into(),
        ));
    }
    let positives = rows.iter().filter(|r| r.1).count();
    if positives == 0 || positives == rows.len() {
        return Err(Error::InvalidInput(
            "fitting a verifier needs both right and wrong examples".into(),
        ));
    }
    let x: Vec<f32> = rows.iter().flat_map(|(f, _)| f.iter().copied()).collect();
    let y: Vec<usize> = rows.iter().map(|r| usize::from(r.1)).collect();
    let opts = TrainOptions {
        l2,
        max_iter: 500,
        ..TrainOptions::default()
    };
    let lr = LogReg::train(&x, dim, &y, 2, opts)?;
    // Two-class softmax = logistic on the logit difference.
    let z0 = lr.logits(&vec![0f32; dim])?;
    let bias = z0[1] - z0[0];
    let mut weights = vec![0f32; dim];
    for (j, w) in weights.iter_mut().enumerate() {
        let mut e = vec![0f32; dim];
        e[j] = 1.0;
        let z = lr.logits(&e)?;
        *w = (z[1] - z[0]) - bias;
    }
    Ok((weights, bias))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::keyunits::KEY_UNIT_FEATURES;

    #[test]
    fn builtin_weights_load_and_match_the_feature_list() {
        let v = Verifier::builtin().unwrap();
        assert_eq!(v.weights.len(), feature_names().len());
        assert!(
            !v.key_units.is_empty(),
            "the shipped verifier carries its key units"
        );
        assert!(BASE_FEATURES.ends_with(&KEY_UNIT_FEATURES));
    }

    #[test]
    fn fit_learns_that_high_cosine_means_right() {
        let rows: Vec<(Vec<f32>, bool)> = (0..200)
            .map(|i| {
                let cos = (i % 100) as f32 / 100.0;
                let mut f = vec![0.0; feature_names().len()];
                f[0] = cos;
                f[5] = ((i * 31) % 17) as f32 / 17.0; // noise
                (f, cos > 0.6)
            })
            .collect();
        // Messages: the top article is right when its score is high.
        let messages = |v: &Verifier| -> Vec<(Vec<f32>, bool)> {
            rows.iter()
                .map(|(f, ok)| (answer_features(v.logit(f), 1.0, false, f), *ok))
                .collect()
        };
        let v = Verifier::fit(&rows, messages, 1e-4, "test", KeyUnits::default()).unwrap();
        let mut hi = vec![0.0; feature_names().len()];
        hi[0] = 0.95;
        let mut lo = hi.clone();
        lo[0] = 0.2;
        assert!(v.logit(&hi) > 2.0 && v.logit(&lo) < -2.0);
        let p = |f: &[f32]| v.answer_probability(&answer_features(v.logit(f), 1.0, false, f));
        assert!(p(&hi) > 0.9);
        assert!(p(&lo) < 0.1);
        let back = Verifier::from_json(&v.to_json().unwrap(), Path::new("x")).unwrap();
        assert_eq!(back.weights, v.weights);
        assert_eq!(back.answer_weights, v.answer_weights);
    }

    #[test]
    fn rejects_a_file_for_other_features() {
        let bad = r#"{"features":["cos"],"weights":[1.0],"bias":0.0,"answer_weights":[1,0,0,0,0],"answer_bias":0,"fitted_on":"x"}"#;
        let err = Verifier::from_json(bad, Path::new("v.json")).unwrap_err();
        assert!(err.to_string().contains("refit"), "{err}");
    }
}
