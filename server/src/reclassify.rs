//! Batch reclassification: run the current classifier over a JSONL file of
//! tickets and write one label line per ticket, resumably.
//!
//! Every output line is appended and fsynced before the next ticket starts, so
//! after an interruption (Ctrl-C, kill -9, power loss) a rerun with the same
//! `--out` skips the ids already written: no ticket is done twice or lost. A
//! torn last line (the write that was cut off) is detected, truncated away and
//! redone. The summary report (changed labels per category, old → new counts,
//! and abstentions) is built from the whole output file and written as JSON
//! and Markdown. The CLI (`triage reclassify`) and the API job
//! (`POST /v1/jobs/reclassify`) run this same code.

use std::collections::{BTreeMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{bail, Context};
use indexer::Ticket;
use serde::{Deserialize, Serialize};
use triage::engine::Engine;

/// Label given to abstentions in reports.
pub const ABSTAIN: &str = "(needs human)";
/// Label given to tickets that had no category before.
pub const UNLABELLED: &str = "(unlabelled)";
/// At most this many bad input lines are listed in a report (all are counted).
const MAX_LISTED_ERRORS: usize = 100;

/// One line of the output file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelLine {
    /// Ticket id.
    pub id: String,
    /// Tenant the ticket was classified for.
    #[serde(default)]
    pub tenant: String,
    /// Category before (empty = unlabelled).
    pub old_category: String,
    /// New category, `None` when the classifier abstained.
    pub category: Option<String>,
    /// Calibrated confidence of the top category.
    pub confidence: f32,
    /// True when the confidence is below the pack's threshold.
    pub abstain: bool,
    /// True when a category was chosen and differs from the old one.
    pub changed: bool,
    /// Priority before.
    #[serde(default)]
    pub old_priority: String,
    /// New priority, if decided.
    #[serde(default)]
    pub priority: Option<String>,
    /// New queue, if decided.
    #[serde(default)]
    pub queue: Option<String>,
    /// Runner-up categories with probabilities.
    #[serde(default)]
    pub alternatives: Vec<triage::api::ScoredLabel>,
}

/// A bad input line (unparsable, no id, or refused by the engine).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LineError {
    /// 1-based line number in the input.
    pub line: usize,
    /// What was wrong.
    pub message: String,
}

/// Per-category counts, keyed by the old category.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CategorySummary {
    /// Tickets that had this category.
    pub total: usize,
    /// Tickets that kept it.
    pub unchanged: usize,
    /// Tickets that moved to another category.
    pub changed: usize,
    /// Tickets the classifier abstained on.
    pub abstained: usize,
}

/// The summary of a (possibly resumed) reclassification run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The input file.
    pub input: PathBuf,
    /// The output file.
    pub output: PathBuf,
    /// Tickets in the output file (this run and earlier ones).
    pub tickets: usize,
    /// Tickets classified by this run.
    pub processed_this_run: usize,
    /// Tickets found already done in the output file when this run started.
    pub resumed: usize,
    /// Input lines skipped because their id appeared earlier in the input.
    pub duplicate_ids: usize,
    /// A torn last output line was found and redone.
    pub repaired_torn_line: bool,
    /// Tickets whose category changed.
    pub changed: usize,
    /// Tickets whose category stayed the same.
    pub unchanged: usize,
    /// Tickets the classifier abstained on.
    pub abstained: usize,
    /// Old category → new category → count, for changed tickets only.
    pub changes: BTreeMap<String, BTreeMap<String, usize>>,
    /// Old category → counts.
    pub per_category: BTreeMap<String, CategorySummary>,
    /// Number of bad input lines.
    pub error_count: usize,
    /// The first bad input lines.
    pub errors: Vec<LineError>,
    /// True when the run stopped early (cancelled); rerun to finish.
    pub interrupted: bool,
    /// Wall time of this run in seconds.
    pub elapsed_seconds: f64,
}

/// Progress of a run, reported after each ticket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// Tickets done (including those resumed from the output file).
    pub done: usize,
    /// Tickets in the input (non-blank lines).
    pub total: usize,
}

/// Options of one run.
#[derive(Default)]
pub struct RunOptions<'a> {
    /// Force this tenant onto every ticket (API keys); `None` keeps each ticket's own.
    pub tenant: Option<String>,
    /// Checked between tickets: when set, the run stops cleanly (resumable).
    pub cancel: Option<&'a AtomicBool>,
}

/// Flags of `triage reclassify`.
#[derive(Debug, Clone, clap::Args)]
pub struct ReclassifyArgs {
    /// Data directory and pack.
    #[command(flatten)]
    pub engine: crate::config::EngineArgs,
    /// Tickets to reclassify, one JSON object per line (their `category` is the old label).
    #[arg(long = "in", value_name = "TICKETS.jsonl")]
    pub input: PathBuf,
    /// Label lines, appended; rerunning with the same file resumes.
    #[arg(long = "out", value_name = "LABELS.jsonl")]
    pub output: PathBuf,
    /// Report path without extension (default: OUT with extension `.report`);
    /// `.json` and `.md` are written.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    pub no_progress: bool,
}

/// Runs `triage reclassify`: opens the engine, reclassifies with a progress
/// bar, writes the report and prints its Markdown summary path and totals.
pub fn run_args(
    args: &ReclassifyArgs,
    model: &crate::config::ModelFlags,
) -> anyhow::Result<Report> {
    let engine = args.engine.settings(model).open_engine()?;
    let base = args
        .report
        .clone()
        .unwrap_or_else(|| default_report_base(&args.output));
    let report = run_cli(&engine, &args.input, &args.output, &base, !args.no_progress)?;
    println!(
        "{} tickets: {} changed, {} unchanged, {} abstained, {} bad lines; report: {}.md / .json",
        report.tickets,
        report.changed,
        report.unchanged,
        report.abstained,
        report.error_count,
        base.display()
    );
    Ok(report)
}

/// Reclassifies `input` into `output` with a progress bar (rate and ETA) on
/// stderr when `progress` is true, then writes `<report_base>.json` and
/// `<report_base>.md`. Resumes a previous run of the same output.
pub fn run_cli(
    engine: &Engine,
    input: &Path,
    output: &Path,
    report_base: &Path,
    progress: bool,
) -> anyhow::Result<Report> {
    let bar = if progress {
        indicatif::ProgressBar::new(0)
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} tickets {per_sec} ETA {eta}",
        )
        .context("progress bar template")?,
    );
    let mut first = true;
    let report = run(engine, input, output, &RunOptions::default(), &mut |p| {
        if first {
            bar.set_length(p.total as u64);
            bar.set_position(p.done as u64);
            bar.reset_eta();
            first = false;
        } else {
            bar.set_position(p.done as u64);
        }
    })?;
    bar.finish_and_clear();
    write_report(&report, report_base)?;
    Ok(report)
}

/// `labels.jsonl` → `labels.report` (the `.json` / `.md` extensions are added on write).
pub fn default_report_base(output: &Path) -> PathBuf {
    output.with_extension("report")
}

/// Runs (or resumes) a reclassification, calling `on_progress` once at the
/// start and after every ticket.
pub fn run(
    engine: &Engine,
    input: &Path,
    output: &Path,
    opts: &RunOptions<'_>,
    on_progress: &mut dyn FnMut(Progress),
) -> anyhow::Result<Report> {
    let started = Instant::now();
    let total = count_records(input)?;
    let (mut done, repaired) = recover_output(output)?;
    let resumed = done.len();
    let mut out = OpenOptions::new()
        .create(true)
        .append(true)
        .open(output)
        .with_context(|| format!("opening {} for appending", output.display()))?;
    sync_parent(output);

    let reader =
        BufReader::new(File::open(input).with_context(|| format!("opening {}", input.display()))?);
    let mut progress = Progress {
        done: resumed.min(total),
        total,
    };
    on_progress(progress);
    let mut errors = Vec::new();
    let mut error_count = 0;
    let mut duplicate_ids = 0;
    let mut processed = 0;
    let mut interrupted = false;
    let mut seen = HashSet::new();
    for (index, raw) in split_lines(reader).enumerate() {
        let line_no = index + 1;
        let raw = raw.with_context(|| format!("reading {}", input.display()))?;
        if raw.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        if opts.cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
            interrupted = true;
            break;
        }
        let mut ticket = match parse_ticket(&raw) {
            Ok(t) => t,
            Err(message) => {
                error_count += 1;
                if errors.len() < MAX_LISTED_ERRORS {
                    errors.push(LineError {
                        line: line_no,
                        message,
                    });
                }
                continue;
            }
        };
        if let Some(tenant) = &opts.tenant {
            ticket.tenant.clone_from(tenant);
        }
        if !seen.insert(ticket.id.clone()) {
            duplicate_ids += 1;
            continue;
        }
        if done.contains(&ticket.id) {
            continue;
        }
        let result = match engine.classify_ticket(&ticket) {
            Ok(r) => r,
            Err(triage::Error::InvalidInput(message)) => {
                error_count += 1;
                if errors.len() < MAX_LISTED_ERRORS {
                    errors.push(LineError {
                        line: line_no,
                        message,
                    });
                }
                continue;
            }
            Err(e) => return Err(e).with_context(|| format!("classifying ticket {:?}", ticket.id)),
        };
        let label = label_line(&ticket, &result);
        let mut bytes = serde_json::to_vec(&label).context("serialising a label line")?;
        bytes.push(b'\n');
        out.write_all(&bytes)
            .and_then(|()| out.sync_data())
            .with_context(|| format!("writing {}", output.display()))?;
        done.insert(ticket.id);
        processed += 1;
        progress.done = (progress.done + 1).min(total);
        on_progress(progress);
    }
    let mut report = summarise(output)?;
    report.input = input.to_path_buf();
    report.processed_this_run = processed;
    report.resumed = resumed;
    report.duplicate_ids = duplicate_ids;
    report.repaired_torn_line = repaired;
    report.error_count = error_count;
    report.errors = errors;
    report.interrupted = interrupted;
    report.elapsed_seconds = started.elapsed().as_secs_f64();
    tracing::info!(
        processed,
        resumed,
        changed = report.changed,
        abstained = report.abstained,
        errors = error_count,
        "reclassified {}",
        input.display()
    );
    Ok(report)
}

/// Builds the output line for one classified ticket.
fn label_line(ticket: &Ticket, result: &triage::api::TriageResult) -> LabelLine {
    let category = if result.category.abstain {
        None
    } else {
        result.category.label.clone()
    };
    let changed = category
        .as_deref()
        .is_some_and(|c| c != ticket.category.as_str());
    LabelLine {
        id: ticket.id.clone(),
        tenant: ticket.tenant.clone(),
        old_category: ticket.category.clone(),
        category,
        confidence: result.category.confidence,
        abstain: result.category.abstain,
        changed,
        old_priority: ticket.priority.clone(),
        priority: result.priority.label.clone(),
        queue: result.queue.label.clone(),
        alternatives: result.category.alternatives.clone(),
    }
}

/// Parses one input line into a ticket with a non-empty id.
fn parse_ticket(raw: &[u8]) -> Result<Ticket, String> {
    let text = std::str::from_utf8(raw).map_err(|e| format!("not UTF-8: {e}"))?;
    let ticket: Ticket = serde_json::from_str(text).map_err(|e| format!("not a ticket: {e}"))?;
    if ticket.id.trim().is_empty() {
        return Err("the ticket has no `id`".into());
    }
    Ok(ticket)
}

/// Splits a reader into raw lines (without the newline), tolerating invalid UTF-8.
fn split_lines<R: BufRead>(mut reader: R) -> impl Iterator<Item = std::io::Result<Vec<u8>>> {
    std::iter::from_fn(move || {
        let mut buf = Vec::new();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) => None,
            Ok(_) => {
                if buf.last() == Some(&b'\n') {
                    buf.pop();
                }
                Some(Ok(buf))
            }
            Err(e) => Some(Err(e)),
        }
    })
}

/// Number of non-blank lines of `input`.
fn count_records(input: &Path) -> anyhow::Result<usize> {
    let file = File::open(input).with_context(|| format!("opening {}", input.display()))?;
    let mut n = 0;
    for line in split_lines(BufReader::new(file)) {
        let line = line.with_context(|| format!("reading {}", input.display()))?;
        if !line.iter().all(u8::is_ascii_whitespace) {
            n += 1;
        }
    }
    Ok(n)
}

/// Reads the ids already written to `output`, truncating a torn last line.
/// Returns the ids and whether a torn line was removed. A damaged line that is
/// not the last one means the file was edited or is not ours: refuse it.
fn recover_output(output: &Path) -> anyhow::Result<(HashSet<String>, bool)> {
    let mut done = HashSet::new();
    let mut file = match OpenOptions::new().read(true).write(true).open(output) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((done, false)),
        Err(e) => return Err(e).with_context(|| format!("opening {}", output.display())),
    };
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .with_context(|| format!("reading {}", output.display()))?;
    let mut offset = 0usize;
    let mut line_no = 0usize;
    while offset < bytes.len() {
        line_no += 1;
        let end = bytes[offset..]
            .iter()
            .position(|b| *b == b'\n')
            .map(|p| offset + p);
        let parsed = end.and_then(|e| serde_json::from_slice::<LabelLine>(&bytes[offset..e]).ok());
        match (end, parsed) {
            (Some(e), Some(line)) => {
                done.insert(line.id);
                offset = e + 1;
            }
            (Some(e), None) if e + 1 < bytes.len() => bail!(
                "{}: line {line_no} is not a label line and is not the last line; \
                 the file was modified — use another --out or fix the line",
                output.display()
            ),
            _ => {
                tracing::warn!(
                    "{}: line {line_no} is incomplete (interrupted write); redoing it",
                    output.display()
                );
                file.set_len(offset as u64)
                    .and_then(|()| file.seek(SeekFrom::End(0)).map(|_| ()))
                    .and_then(|()| file.sync_all())
                    .with_context(|| format!("truncating {}", output.display()))?;
                return Ok((done, true));
            }
        }
    }
    Ok((done, false))
}

/// Counts the whole output file into a report (input fields left default).
pub fn summarise(output: &Path) -> anyhow::Result<Report> {
    let file = File::open(output).with_context(|| format!("opening {}", output.display()))?;
    let mut report = Report {
        output: output.to_path_buf(),
        ..Report::default()
    };
    for (i, line) in split_lines(BufReader::new(file)).enumerate() {
        let line = line.with_context(|| format!("reading {}", output.display()))?;
        if line.is_empty() {
            continue;
        }
        let label: LabelLine = serde_json::from_slice(&line)
            .with_context(|| format!("{}: line {}", output.display(), i + 1))?;
        report.tickets += 1;
        let old = if label.old_category.is_empty() {
            UNLABELLED.to_string()
        } else {
            label.old_category.clone()
        };
        let summary = report.per_category.entry(old.clone()).or_default();
        summary.total += 1;
        match label.category {
            None => {
                summary.abstained += 1;
                report.abstained += 1;
            }
            Some(new) if label.changed => {
                summary.changed += 1;
                report.changed += 1;
                *report
                    .changes
                    .entry(old)
                    .or_default()
                    .entry(new)
                    .or_default() += 1;
            }
            Some(_) => {
                summary.unchanged += 1;
                report.unchanged += 1;
            }
        }
    }
    Ok(report)
}

/// Writes `<base>.json` and `<base>.md`.
pub fn write_report(report: &Report, base: &Path) -> anyhow::Result<()> {
    let json_path = with_suffix(base, "json");
    let md_path = with_suffix(base, "md");
    let json = serde_json::to_string_pretty(report).context("serialising the report")?;
    std::fs::write(&json_path, json + "\n")
        .with_context(|| format!("writing {}", json_path.display()))?;
    std::fs::write(&md_path, markdown(report))
        .with_context(|| format!("writing {}", md_path.display()))?;
    Ok(())
}

fn with_suffix(base: &Path, ext: &str) -> PathBuf {
    let mut name = base.as_os_str().to_os_string();
    name.push(".");
    name.push(ext);
    PathBuf::from(name)
}

/// The report as a Markdown document.
pub fn markdown(r: &Report) -> String {
    let mut md = String::from("# Reclassification report\n\n");
    md.push_str(&format!(
        "- input: `{}`\n- output: `{}`\n- tickets: {}\n- changed: {}\n- unchanged: {}\n- abstained ({ABSTAIN}): {}\n- bad input lines: {}\n- this run: {} classified, {} resumed from an earlier run, {} duplicate ids skipped{}{}\n\n",
        r.input.display(),
        r.output.display(),
        r.tickets,
        r.changed,
        r.unchanged,
        r.abstained,
        r.error_count,
        r.processed_this_run,
        r.resumed,
        r.duplicate_ids,
        if r.repaired_torn_line { ", a torn last line was redone" } else { "" },
        if r.interrupted { " — INTERRUPTED, rerun to finish" } else { "" },
    ));
    md.push_str("## Per category (old label)\n\n| category | tickets | unchanged | changed | abstained |\n|---|---:|---:|---:|---:|\n");
    for (cat, s) in &r.per_category {
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            cat, s.total, s.unchanged, s.changed, s.abstained
        ));
    }
    md.push_str("\n## Changed labels (old → new)\n\n");
    if r.changes.is_empty() {
        md.push_str("No label changed.\n");
    } else {
        md.push_str("| old | new | tickets |\n|---|---|---:|\n");
        for (old, news) in &r.changes {
            for (new, n) in news {
                md.push_str(&format!("| {old} | {new} | {n} |\n"));
            }
        }
    }
    if !r.errors.is_empty() {
        md.push_str("\n## Bad input lines\n\n");
        for e in &r.errors {
            md.push_str(&format!("- line {}: {}\n", e.line, e.message));
        }
        if r.error_count > r.errors.len() {
            md.push_str(&format!(
                "- … and {} more\n",
                r.error_count - r.errors.len()
            ));
        }
    }
    md
}

/// Makes a newly created file's directory entry durable (best effort).
fn sync_parent(path: &Path) {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if let Ok(dir) = File::open(parent) {
        let _ = dir.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(id: &str, old: &str, new: Option<&str>) -> String {
        let l = LabelLine {
            id: id.into(),
            tenant: String::new(),
            old_category: old.into(),
            category: new.map(str::to_string),
            confidence: 0.9,
            abstain: new.is_none(),
            changed: new.is_some_and(|n| n != old),
            old_priority: String::new(),
            priority: None,
            queue: None,
            alternatives: vec![],
        };
        serde_json::to_string(&l).unwrap() + "\n"
    }

    #[test]
    fn torn_last_line_is_truncated_and_complete_ids_kept() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("labels.jsonl");
        let good = line("a", "x", Some("x")) + &line("b", "x", Some("y"));
        std::fs::write(&out, format!("{good}{{\"id\":\"c\",\"old_cat")).unwrap();
        let (done, repaired) = recover_output(&out).unwrap();
        assert!(repaired);
        assert_eq!(done.len(), 2);
        assert!(done.contains("a") && done.contains("b"));
        assert_eq!(std::fs::read_to_string(&out).unwrap(), good);
        // A complete last line without its newline is also redone: the newline
        // is the commit marker.
        std::fs::write(&out, format!("{good}{}", line("c", "x", None).trim_end())).unwrap();
        let (done, repaired) = recover_output(&out).unwrap();
        assert!(repaired && !done.contains("c"));
    }

    #[test]
    fn damage_in_the_middle_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("labels.jsonl");
        std::fs::write(&out, format!("garbage\n{}", line("a", "x", Some("x")))).unwrap();
        let err = recover_output(&out).unwrap_err().to_string();
        assert!(err.contains("line 1"), "{err}");
    }

    #[test]
    fn summary_counts_changes_per_old_category_and_abstentions() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("labels.jsonl");
        let text = [
            line("1", "x", Some("x")),
            line("2", "x", Some("y")),
            line("3", "x", Some("y")),
            line("4", "y", None),
            line("5", "", Some("z")),
        ]
        .concat();
        std::fs::write(&out, text).unwrap();
        let r = summarise(&out).unwrap();
        assert_eq!(
            (r.tickets, r.changed, r.unchanged, r.abstained),
            (5, 3, 1, 1)
        );
        assert_eq!(r.changes["x"]["y"], 2);
        assert_eq!(r.changes[UNLABELLED]["z"], 1);
        assert_eq!(r.per_category["y"].abstained, 1);
        let md = markdown(&r);
        assert!(md.contains("| x | y | 2 |"), "{md}");
        let base = dir.path().join("labels.report");
        write_report(&r, &base).unwrap();
        let back: Report = serde_json::from_str(
            &std::fs::read_to_string(dir.path().join("labels.report.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(back, r);
        assert!(dir.path().join("labels.report.md").exists());
    }

    #[test]
    fn bad_input_lines_are_reported_not_fatal() {
        assert!(parse_ticket(b"{\"id\": \"\"}")
            .unwrap_err()
            .contains("no `id`"));
        assert!(parse_ticket(b"\xff").unwrap_err().contains("UTF-8"));
        assert!(parse_ticket(b"[1]").unwrap_err().contains("not a ticket"));
        assert_eq!(parse_ticket(b"{\"id\": \"t1\"}").unwrap().id, "t1");
    }
}
