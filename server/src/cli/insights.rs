//! `triage insights`: the dashboard's report from the command line, for
//! batch use: emerging problems, knowledge gaps and the overview of one
//! tenant, as JSON or Markdown on stdout.

use std::fmt::Write as _;

use clap::{Args, ValueEnum};
use serde::Serialize;
use triage::api::{EmergingReport, GapReport, Overview};

use super::ModelArgs;

/// Arguments of `triage insights`.
#[derive(Debug, Args)]
pub struct InsightsArgs {
    /// Data directory and pack.
    #[command(flatten)]
    engine: crate::config::EngineOptions,
    #[command(flatten)]
    model: ModelArgs,
    /// Days looked back for emerging problems: `7d`, `2w` or `14` (1–90 days).
    #[arg(long, default_value = "7d")]
    window: String,
    /// Days looked back for knowledge gaps and the overview.
    #[arg(long, default_value = "30d")]
    gaps_window: String,
    /// The tenant (the default tenant is the empty name).
    #[arg(long, default_value = "")]
    tenant: String,
    /// End of the windows, RFC 3339 (default: now), e.g. to report on a past week.
    #[arg(long)]
    at: Option<String>,
    /// The heat map's field (default: the pack's `[insights] heatmap`).
    #[arg(long)]
    field: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Md)]
    format: Format,
}

/// `--format` values.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Format {
    /// One JSON object: `emerging`, `gaps`, `overview`.
    Json,
    /// A Markdown report.
    Md,
}

/// The whole report.
#[derive(Serialize)]
struct Report {
    emerging: EmergingReport,
    gaps: GapReport,
    overview: Overview,
}

/// Runs `triage insights`.
pub fn run(args: InsightsArgs) -> anyhow::Result<()> {
    // Refuse bad arguments before minutes of loading the model.
    let days = triage::parse_window(&args.window)?;
    let gap_days = triage::parse_window(&args.gaps_window)?;
    let at = match &args.at {
        Some(t) => triage::parse_time(t)?,
        None => triage::report_end(),
    };
    let engine = args.model.engine_settings(&args.engine)?.open_engine()?;
    let report = Report {
        emerging: engine.emerging(&args.tenant, days, at)?,
        gaps: engine.gaps(&args.tenant, gap_days, at)?,
        overview: engine.overview(&args.tenant, gap_days, at, args.field.as_deref())?,
    };
    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Format::Md => print!("{}", markdown(&report)),
    }
    Ok(())
}

fn pct(x: f32) -> String {
    format!("{:.1} %", x * 100.0)
}

/// The report as Markdown.
fn markdown(r: &Report) -> String {
    let mut out = String::new();
    let e = &r.emerging;
    let tenant = if e.tenant.is_empty() {
        "default tenant"
    } else {
        e.tenant.as_str()
    };
    let _ = writeln!(out, "# Insights: {tenant}\n");
    let _ = writeln!(
        out,
        "## Emerging problems, {} → {}\n\n{} tickets in the window ({} clustered), {} in the {} baseline days; dispersion {:.2}.\n",
        &e.from[..10.min(e.from.len())],
        &e.to[..10.min(e.to.len())],
        e.tickets,
        e.clustered,
        e.baseline_tickets,
        e.baseline_days,
        e.dispersion
    );
    if e.clusters.is_empty() {
        out.push_str("No clusters.\n\n");
    } else {
        out.push_str("| status | spike | words | size | per day | expected | top category | examples |\n|---|---|---|---|---|---|---|---|\n");
        for c in &e.clusters {
            let spike = c.spike.as_ref().map_or(String::new(), |s| {
                format!("{} in {} d (p {:.1e})", s.count, s.days, s.p_value)
            });
            let _ = writeln!(
                out,
                "| {:?} | {} | {} | {} | {} | {:.1} | {} | {} |",
                c.status,
                spike,
                c.label.join(" "),
                c.size,
                c.daily
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(" "),
                c.expected,
                c.categories
                    .first()
                    .map(|s| format!("{} {}", s.value, pct(s.share)))
                    .unwrap_or_default(),
                c.examples
                    .iter()
                    .take(3)
                    .map(|x| cell(&x.title))
                    .collect::<Vec<_>>()
                    .join("; ")
            );
        }
        out.push('\n');
    }
    let g = &r.gaps;
    let _ = writeln!(
        out,
        "## Knowledge gaps, {} → {}\n\n{} handed-off chat messages, {} tickets resolved without an article.\n",
        &g.from[..10.min(g.from.len())],
        &g.to[..10.min(g.to.len())],
        g.handed_off,
        g.resolved_without_article
    );
    for (i, gap) in g.gaps.iter().enumerate() {
        let _ = writeln!(
            out,
            "{}. **{}** ({} asked: {} chats, {} tickets; `{}`)",
            i + 1,
            cell(&gap.question),
            gap.volume,
            gap.chats,
            gap.tickets,
            gap.id
        );
        if !gap.alternatives.is_empty() {
            let _ = writeln!(out, "   - also asked as: {}", gap.alternatives.join(" / "));
        }
        for m in gap.answer_material.iter().take(2) {
            let _ = writeln!(
                out,
                "   - answered in {}: {}",
                m.ticket_id,
                cell(&m.resolution)
            );
        }
        if let Some(a) = &gap.nearest_article {
            let _ = writeln!(
                out,
                "   - nearest article: {} ({})",
                a.id,
                pct(a.probability)
            );
        }
    }
    let o = &r.overview;
    let d = &o.deflection;
    let _ = writeln!(
        out,
        "\n## Overview, {} days\n\n| chat messages | answered | clarified | handed off | triaged | abstained |\n|---|---|---|---|---|---|\n| {} | {} | {} | {} | {} | {} |\n",
        o.window_days,
        d.messages,
        pct(d.answer_rate),
        pct(d.clarify_rate),
        pct(d.handoff_rate),
        o.triage.requests,
        pct(o.triage.abstention_rate)
    );
    out.push_str("Tickets by category:\n\n");
    for v in o.volume.iter().filter(|v| v.counts.iter().any(|n| *n > 0)) {
        let _ = writeln!(
            out,
            "- {} ({}): {}",
            v.name,
            v.category,
            v.counts.iter().sum::<u32>()
        );
    }
    if !o.high_risk.is_empty() {
        out.push_str("\nOpen tickets at risk of escalation:\n\n");
        for t in &o.high_risk {
            let _ = writeln!(
                out,
                "- {} {} ({}): {}",
                t.ticket_id,
                cell(&t.title),
                pct(t.risk.score),
                t.risk.reasons.join("; ")
            );
        }
    }
    out
}

/// Text for a table cell or list item: one line, no pipes.
fn cell(text: &str) -> String {
    text.replace(['\n', '\r'], " ").replace('|', "/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_stay_on_one_line() {
        assert_eq!(cell("a|b\nc"), "a/b c");
    }
}
