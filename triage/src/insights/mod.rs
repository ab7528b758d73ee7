//! Insights over a tenant's history: emerging problems ([`emerging`]),
//! knowledge gaps ([`gaps`]), alerts that remember what they raised
//! ([`alerts`]) and the dashboard's figures ([`overview`]).
//!
//! The computations here are pure functions of tickets, their vectors and
//! times, so `triage eval emerging` replays a history through exactly what the
//! service runs; the engine (`engine/insights.rs`) gathers their input from
//! its ticket memory and activity log, and the server only schedules and
//! serves them. Time is cut into 24-hour days ending at the report's end
//! ([`Window`]), so the last day is always a whole one.

pub mod alerts;
pub mod cluster;
pub mod counts;
pub mod emerging;
pub mod gaps;
pub mod label;
pub mod overview;

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::error::{Error, Result};

/// Seconds in a day.
pub const DAY: i64 = 86_400;
/// Days a knowledge-gap report looks back when none is asked for.
pub const GAP_WINDOW_DAYS: u32 = 30;
/// Days an emerging-problem report covers when none is asked for.
pub const EMERGING_WINDOW_DAYS: u32 = 7;
/// Longest window a report may cover.
pub const MAX_WINDOW_DAYS: u32 = 90;

/// Most weeks a window may be given in.
const MAX_WINDOW_WEEKS: u32 = MAX_WINDOW_DAYS / 7;

/// Parses a window, `7d`, `2w` or `14` (days), into days: 1–90 days or 1–12
/// weeks, digits without a leading zero, nothing else (what the API
/// documents as `^([1-9]|[1-8][0-9]|90)[dD]?$|^([1-9]|1[0-2])[wW]$`).
pub fn parse_window(text: &str) -> Result<u32> {
    let bad = || {
        Error::InvalidInput(format!(
            "window `{text}` is not 1 to {MAX_WINDOW_DAYS} days or 1 to {MAX_WINDOW_WEEKS} weeks (e.g. 7d, 2w)"
        ))
    };
    let (digits, weeks) = match text.char_indices().last() {
        Some((i, 'd' | 'D')) => (&text[..i], false),
        Some((i, 'w' | 'W')) => (&text[..i], true),
        _ => (text, false),
    };
    if digits.is_empty() || digits.starts_with('0') || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let n: u32 = digits.parse().map_err(|_| bad())?;
    let (max, unit) = if weeks {
        (MAX_WINDOW_WEEKS, 7)
    } else {
        (MAX_WINDOW_DAYS, 1)
    };
    if n > max {
        return Err(bad());
    }
    Ok(n * unit)
}

/// `days` 24-hour days ending at `to` (Unix seconds, exclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Start (inclusive).
    pub from: i64,
    /// End (exclusive).
    pub to: i64,
    /// Number of days.
    pub days: u32,
}

impl Window {
    /// The `days` days before `to`.
    pub fn ending(to: i64, days: u32) -> Window {
        Window {
            from: to - i64::from(days) * DAY,
            to,
            days,
        }
    }

    /// The day (0 = oldest) a time falls on, if inside.
    pub fn day_of(&self, t: i64) -> Option<usize> {
        (t >= self.from && t < self.to).then(|| ((t - self.from) / DAY) as usize)
    }

    /// Whether a time falls inside.
    pub fn contains(&self, t: i64) -> bool {
        t >= self.from && t < self.to
    }

    /// The start of each day, RFC 3339.
    pub fn day_starts(&self) -> Vec<String> {
        (0..i64::from(self.days))
            .map(|d| rfc3339(self.from + d * DAY))
            .collect()
    }

    /// The window of the same length just before this one, `weeks` weeks long.
    pub fn before(&self, days: u32) -> Window {
        Window::ending(self.from, days)
    }
}

/// A Unix time as RFC 3339 (UTC).
pub fn rfc3339(t: i64) -> String {
    OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|d| d.format(&Rfc3339).ok())
        .unwrap_or_default()
}

/// An RFC 3339 time as Unix seconds.
pub fn parse_time(text: &str) -> Result<i64> {
    OffsetDateTime::parse(text.trim(), &Rfc3339)
        .map(OffsetDateTime::unix_timestamp)
        .map_err(|_| Error::InvalidInput(format!("`{text}` is not an RFC 3339 time")))
}

/// The current time in Unix seconds.
pub fn now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

/// The end of a report that covers up to now: the next second, so what
/// happened in the current second (a ticket just written) is in the window.
pub fn report_end() -> i64 {
    now() + 1
}

/// The first `n` characters of a text, with an ellipsis when cut.
pub(crate) fn snippet(text: &str, n: usize) -> String {
    let mut out: String = text.chars().take(n).collect();
    if text.chars().nth(n).is_some() {
        out.push('…');
    }
    out
}

/// `count` values most frequent first (ties by value), with their shares.
pub(crate) fn shares<'a>(values: impl Iterator<Item = &'a str>) -> Vec<crate::api::Share> {
    let mut counts: std::collections::HashMap<&str, u32> = std::collections::HashMap::new();
    let mut total = 0u32;
    for v in values {
        *counts.entry(v).or_default() += 1;
        total += 1;
    }
    let mut out: Vec<crate::api::Share> = counts
        .into_iter()
        .map(|(value, count)| crate::api::Share {
            value: value.to_string(),
            count,
            share: count as f32 / total.max(1) as f32,
        })
        .collect();
    out.sort_by(|a, b| b.count.cmp(&a.count).then(a.value.cmp(&b.value)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_parse_in_days_and_weeks_within_limits() {
        assert_eq!(parse_window("7d").unwrap(), 7);
        assert_eq!(parse_window("2W").unwrap(), 14);
        assert_eq!(parse_window("30").unwrap(), 30);
        assert_eq!(parse_window("90d").unwrap(), 90);
        assert_eq!(parse_window("12w").unwrap(), 84);
        for bad in [
            "0d", "91d", "13w", "d", "7x", "-1d", "", " 7d", "07d", "7dd", "+7", "7 d", "９d",
        ] {
            assert!(parse_window(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn days_end_at_the_window_end() {
        let w = Window::ending(10 * DAY + 3600, 3);
        assert_eq!(w.day_of(w.to - 1), Some(2));
        assert_eq!(w.day_of(w.from), Some(0));
        assert_eq!(w.day_of(w.to), None);
        assert_eq!(w.day_of(w.from - 1), None);
        assert_eq!(w.day_starts().len(), 3);
        assert_eq!(w.day_starts()[0], "1970-01-08T01:00:00Z");
        assert_eq!(w.before(14).to, w.from);
    }

    #[test]
    fn shares_are_sorted_and_sum_to_one() {
        let s = shares(["a", "b", "a", ""].into_iter());
        assert_eq!(s[0].value, "a");
        assert_eq!(s[0].count, 2);
        let total: f32 = s.iter().map(|x| x.share).sum();
        assert!((total - 1.0).abs() < 1e-6);
        assert_eq!(snippet("abcdef", 3), "abc…");
        assert_eq!(snippet("abc", 3), "abc");
    }
}
