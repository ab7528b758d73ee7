//! Escalation risk: how likely a request is to turn into a complaint.
//!
//! Five kinds of evidence, each a probability-like weight, combined by
//! noisy-OR (`1 − Π(1 − pᵢ)`), so one strong sign is enough and several weak
//! ones add up without passing 1:
//!
//! * explicit escalation words (投诉, 12315, 曝光, 律师, "lawyer",
//!   "chargeback", "cancel my account"…; the pack's `[escalation] words`);
//! * repeat contact: the same customer's earlier requests in the duplicate
//!   window, or the text saying so (第三次, 又, "again", "third time");
//! * anger: the pack's anger words, runs of `!`/`?`, shouting in capitals;
//! * waiting time mentioned (等了三天, 一个星期了, "waiting for two weeks");
//! * a learned part: the share of the nearest labelled tickets that the
//!   pack's `[escalation] field` marks `true`.
//!
//! Every part that fired is named in the reasons, with the words it saw.

use crate::api::EscalationRisk;
use crate::pack::Escalation;

/// Weight of one explicit escalation word, and of two or more different ones.
const WORD: (f32, f32) = (0.6, 0.8);
/// Weight of one, two, three or more earlier contacts.
const REPEAT: [f32; 3] = [0.25, 0.4, 0.55];
/// Weight of one anger marker, and of two or more.
const ANGER: (f32, f32) = (0.3, 0.45);
/// Weight of a wait mentioned, and of one counted in days or weeks.
const WAITING: (f32, f32) = (0.25, 0.4);
/// Phrases saying this is not the first contact.
const REPEAT_CUES: &[&str] = &[
    "第二次",
    "第三次",
    "第四次",
    "好几次",
    "多次",
    "反复",
    "又来",
    "再次",
    "还是没",
    "还是不",
    "again",
    "second time",
    "third time",
    "several times",
    "many times",
    "still not",
    "still no",
    "keeps happening",
];
/// Phrases mentioning a wait.
const WAIT_CUES: &[&str] = &[
    "等了",
    "还没",
    "迟迟",
    "一直没",
    "至今",
    "到现在",
    "waiting",
    "still haven't",
    "still have not",
    "no reply",
    "no response",
    "没人回",
    "没人理",
    "没回复",
];
/// Units that make a wait long.
const WAIT_UNITS: &[&str] = &[
    "天", "周", "星期", "个月", "days", "weeks", "week", "months", "month",
];
/// Capitalised words that are names, not shouting.
const ACRONYMS: &[&str] = &[
    "HDMI", "USB", "WIFI", "WI-FI", "LED", "LCD", "OLED", "SSD", "CPU", "GPU", "TV", "AC", "APP",
    "SMS", "VIP", "ID", "PIN", "OK", "ASAP", "FAQ", "URL", "PDF", "VAT", "BSOD", "UNB",
];

/// What the engine knows about a request beyond its text.
#[derive(Debug, Clone, Copy, Default)]
pub struct EscalationContext {
    /// The same customer's earlier requests in the duplicate window.
    pub earlier_contacts: usize,
    /// Share (0–1) of the nearest labelled tickets marked escalated, when any
    /// near ticket carries the pack's escalation field.
    pub learned: Option<f32>,
}

/// A pack's escalation rules, ready for matching.
#[derive(Debug, Clone)]
pub struct EscalationRules {
    words: Vec<String>,
    anger: Vec<String>,
    flag: f32,
}

impl EscalationRules {
    /// The rules of a pack's `[escalation]` table (or its defaults).
    pub fn new(cfg: &Escalation) -> EscalationRules {
        let lower = |v: &[String]| v.iter().map(|w| w.to_lowercase()).collect();
        EscalationRules {
            words: lower(&cfg.words),
            anger: lower(&cfg.anger),
            flag: cfg.flag,
        }
    }

    /// The escalation risk of `text`, with the reasons that raised it.
    pub fn assess(&self, text: &str, ctx: EscalationContext) -> EscalationRisk {
        let lower = text.to_lowercase();
        let mut parts: Vec<f32> = Vec::new();
        let mut reasons = Vec::new();

        let words = found(&lower, &self.words);
        if !words.is_empty() {
            parts.push(if words.len() > 1 { WORD.1 } else { WORD.0 });
            reasons.push(format!("escalation words: {}", words.join(", ")));
        }

        let cues = found(&lower, REPEAT_CUES);
        let contacts = ctx.earlier_contacts.max(usize::from(!cues.is_empty()));
        if contacts > 0 {
            parts.push(REPEAT[(contacts - 1).min(REPEAT.len() - 1)]);
            reasons.push(if ctx.earlier_contacts > 0 {
                format!(
                    "repeat contact: {} earlier request(s) from this customer",
                    ctx.earlier_contacts
                )
            } else {
                format!("repeat contact mentioned: {}", cues.join(", "))
            });
        }

        let mut anger = found(&lower, &self.anger);
        if text.contains("!!") || text.contains("！！") {
            anger.push("!!".into());
        }
        if text.contains("??") || text.contains("？？") {
            anger.push("??".into());
        }
        if shouts(text) {
            anger.push("CAPITALS".into());
        }
        if !anger.is_empty() {
            parts.push(if anger.len() > 1 { ANGER.1 } else { ANGER.0 });
            reasons.push(format!("anger: {}", anger.join(", ")));
        }

        let waits = found(&lower, WAIT_CUES);
        if !waits.is_empty() {
            let long = !found(&lower, WAIT_UNITS).is_empty();
            parts.push(if long { WAITING.1 } else { WAITING.0 });
            reasons.push(format!(
                "waiting mentioned{}: {}",
                if long { " (days or longer)" } else { "" },
                waits.join(", ")
            ));
        }

        if let Some(p) = ctx.learned.filter(|p| *p > 0.0) {
            parts.push(p.clamp(0.0, 1.0));
            reasons.push(format!(
                "similar labelled tickets escalated: {:.0} %",
                p * 100.0
            ));
        }

        let score = 1.0 - parts.iter().map(|p| 1.0 - p).product::<f32>();
        let flagged = score >= self.flag;
        if reasons.is_empty() {
            reasons.push("no sign of escalation".into());
        } else if flagged {
            reasons.push(format!(
                "risk {score:.2} ≥ {:.2}: likely to escalate",
                self.flag
            ));
        }
        EscalationRisk {
            score,
            flagged,
            reasons,
        }
    }
}

/// The entries of `list` that occur in the lower-cased `text`: Chinese as
/// substrings, Latin-script entries as whole words.
fn found<S: AsRef<str>>(text: &str, list: &[S]) -> Vec<String> {
    list.iter()
        .map(AsRef::as_ref)
        .filter(|w| contains_word(text, w))
        .map(str::to_string)
        .collect()
}

/// Whether `word` occurs in `text`; a word starting or ending with an ASCII
/// letter or digit must not continue a longer word on that side.
fn contains_word(text: &str, word: &str) -> bool {
    if word.is_empty() {
        return false;
    }
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    let (first, last) = (word.chars().next(), word.chars().last());
    text.match_indices(word).any(|(i, _)| {
        let before = text[..i].chars().next_back();
        let after = text[i + word.len()..].chars().next();
        let joins_before = alnum(first) && alnum(before);
        let joins_after = alnum(last) && alnum(after);
        !(joins_before || joins_after)
    })
}

/// Two or more consecutive words of three or more capital letters (not names
/// like HDMI or USB).
fn shouts(text: &str) -> bool {
    let mut run = 0;
    for w in text.split(|c: char| !c.is_ascii_alphanumeric() && c != '-') {
        let loud = w.len() >= 3
            && w.chars().all(|c| c.is_ascii_uppercase() || c == '-')
            && !ACRONYMS.contains(&w);
        if loud {
            run += 1;
            if run >= 2 {
                return true;
            }
        } else if !w.is_empty() {
            run = 0;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> EscalationRules {
        EscalationRules::new(&Escalation::default())
    }

    fn score(text: &str) -> EscalationRisk {
        rules().assess(text, EscalationContext::default())
    }

    #[test]
    fn each_kind_of_evidence_raises_the_risk_and_is_named() {
        // (text, flagged, a word the reasons must name)
        let cases: &[(&str, bool, &str)] = &[
            ("空调不制冷了，请安排维修", false, "no sign"),
            ("再不处理我就打12315投诉你们", true, "12315"),
            (
                "I will call my lawyer and file a chargeback",
                true,
                "lawyer",
            ),
            ("please cancel my account now", true, "cancel my account"),
            ("这是第三次报修了，还是不制冷", false, "第三次"),
            ("垃圾产品，气死我了！！", false, "垃圾"),
            ("THIS IS RIDICULOUS, NOBODY ANSWERS", false, "CAPITALS"),
            ("等了一个星期了还没人上门", false, "days or longer"),
        ];
        for (text, flagged, named) in cases {
            let r = score(text);
            assert_eq!(r.flagged, *flagged, "{text}: {r:?}");
            assert!(
                r.reasons.iter().any(|x| x.contains(named)),
                "{text}: {:?}",
                r.reasons
            );
            assert!((0.0..=1.0).contains(&r.score), "{text}: {}", r.score);
        }
        assert_eq!(score("空调不制冷了，请安排维修").score, 0.0);
    }

    #[test]
    fn evidence_adds_up_without_passing_one() {
        let one = score("等了三天了").score;
        let two = score("等了三天了，垃圾服务").score;
        let many = score("第三次了！！等了两周，垃圾，我要投诉，找律师").score;
        assert!(one < two && two < many, "{one} {two} {many}");
        assert!(many < 1.0 && many > 0.9, "{many}");
    }

    #[test]
    fn repeat_contact_and_the_learned_part_come_from_the_context() {
        let text = "洗衣机不脱水";
        assert_eq!(score(text).score, 0.0);
        let ctx = |earlier_contacts, learned| EscalationContext {
            earlier_contacts,
            learned,
        };
        let r = rules().assess(text, ctx(1, None));
        assert!((r.score - REPEAT[0]).abs() < 1e-6, "{r:?}");
        let r3 = rules().assess(text, ctx(5, None));
        assert!((r3.score - REPEAT[2]).abs() < 1e-6, "{r3:?}");
        assert!(r3.reasons[0].contains("5 earlier"), "{:?}", r3.reasons);
        let learned = rules().assess(text, ctx(0, Some(0.7)));
        assert!(learned.flagged, "{learned:?}");
        assert!(learned.reasons[0].contains("70 %"), "{:?}", learned.reasons);
    }

    #[test]
    fn latin_words_match_whole_words_only_and_names_are_not_shouting() {
        assert!(contains_word("i will sue you", "sue"));
        assert!(!contains_word("the issue is", "sue"));
        assert!(!contains_word("pursue", "sue"));
        assert!(contains_word("我要投诉", "投诉"));
        assert!(!shouts("the HDMI and USB ports"));
        assert!(!shouts("Error E1 on the AC"));
        assert!(shouts("WHY IS NOBODY ANSWERING"));
        assert!(!shouts("WHY"));
    }

    #[test]
    fn a_pack_can_replace_the_words_and_the_flag() {
        let cfg = Escalation {
            words: vec!["escalate".into()],
            anger: vec![],
            flag: 0.9,
            field: None,
        };
        let r = EscalationRules::new(&cfg);
        let hit = r.assess("please escalate this", EscalationContext::default());
        assert!(hit.score > 0.5 && !hit.flagged, "{hit:?}");
        let default_word = r.assess("我要投诉", EscalationContext::default());
        assert_eq!(default_word.score, 0.0, "replaced lists drop the defaults");
    }
}
