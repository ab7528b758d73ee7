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
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{bail, Context};
use indexer::Ticket;
use serde::{Deserialize, Serialize};
use triage::Engine;

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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LineError {
    /// 1-based line number in the input.
    pub line: usize,
    /// What was wrong.
    pub message: String,
}

/// The bad input lines of a run: all counted, the first [`MAX_LISTED_ERRORS`] kept.
#[derive(Default)]
struct LineErrors {
    count: usize,
    listed: Vec<LineError>,
}

impl LineErrors {
    fn record(&mut self, line: usize, message: String) {
        self.count += 1;
        if self.listed.len() < MAX_LISTED_ERRORS {
            self.listed.push(LineError { line, message });
        }
    }
}

/// Per-category counts, keyed by the old category.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
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
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Report {
    /// The input file.
    #[schema(value_type = String)]
    pub input: PathBuf,
    /// The output file.
    #[schema(value_type = String)]
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
    pub engine: crate::config::EngineOptions,
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
pub fn run_args(args: &ReclassifyArgs, model: &crate::config::ModelArgs) -> anyhow::Result<Report> {
    let base = args
        .report
        .clone()
        .unwrap_or_else(|| default_report_base(&args.output));
    // Refuse wrong paths at once, not after minutes of loading the model.
    check_paths(&args.input, &args.output, &base)?;
    scan_output(&args.output)?;
    let engine = model.engine_settings(&args.engine)?.open_engine()?;
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
    check_paths(input, output, report_base)?;
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
    if report.tickets == 0 {
        match report.errors.first() {
            Some(e) => bail!(
                "{}: none of its {} non-blank lines is a valid ticket (line {}: {}); nothing \
                 was classified — see {}",
                input.display(),
                report.error_count,
                e.line,
                e.message,
                with_suffix(report_base, "md").display()
            ),
            None => bail!(
                "{}: no tickets in it; nothing was classified",
                input.display()
            ),
        }
    }
    Ok(report)
}

/// Refuses a CLI run whose input, output and report paths are not four
/// distinct files.
fn check_paths(input: &Path, output: &Path, report_base: &Path) -> anyhow::Result<()> {
    check_distinct(&[
        ("--in", input),
        ("--out", output),
        ("the JSON report", &with_suffix(report_base, "json")),
        ("the Markdown report", &with_suffix(report_base, "md")),
    ])
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
    check_distinct(&[("the input", input), ("the output", output)])?;
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
    let mut errors = LineErrors::default();
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
                errors.record(line_no, message);
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
                errors.record(line_no, message);
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
    report.error_count = errors.count;
    report.errors = errors.listed;
    report.interrupted = interrupted;
    report.elapsed_seconds = started.elapsed().as_secs_f64();
    tracing::info!(
        processed,
        resumed,
        changed = report.changed,
        abstained = report.abstained,
        errors = report.error_count,
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

/// What an existing output file holds.
struct Existing {
    /// Ids of its complete label lines.
    done: HashSet<String>,
    /// Length of its complete lines when an unterminated last line follows.
    torn_at: Option<u64>,
}

/// Reads the ids already written to `output` (without changing it).
///
/// Only our own label files are resumed: every complete line must be a label
/// line, and an unterminated last line (the write a crash cut off) is
/// accepted only when the lines before it are ours, or, as the only content,
/// when it is the start of a label line. Any other non-empty file is refused,
/// so a wrong `--out` never destroys someone else's file.
fn scan_output(output: &Path) -> anyhow::Result<Existing> {
    let mut done = HashSet::new();
    let bytes = match std::fs::read(output) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Existing {
                done,
                torn_at: None,
            })
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", output.display())),
    };
    let not_ours = |line_no: usize, what: &str| {
        anyhow::anyhow!(
            "{}: not a label file of `triage reclassify` (line {line_no} {what}); refusing to \
             resume or overwrite it — choose another --out, or fix or remove that file",
            output.display()
        )
    };
    let mut offset = 0usize;
    let mut line_no = 0usize;
    while let Some(len) = bytes[offset..].iter().position(|b| *b == b'\n') {
        line_no += 1;
        let line: LabelLine = serde_json::from_slice(&bytes[offset..offset + len])
            .map_err(|_| not_ours(line_no, "is not a label line"))?;
        done.insert(line.id);
        offset += len + 1;
    }
    let torn = &bytes[offset..];
    if !torn.is_empty() && done.is_empty() && !starts_like_a_label_line(torn) {
        return Err(not_ours(
            line_no + 1,
            "is neither a label line nor the start of one",
        ));
    }
    Ok(Existing {
        done,
        torn_at: (!torn.is_empty()).then_some(offset as u64),
    })
}

/// [`scan_output`], then cuts a torn last line away (it is redone). Returns
/// the ids done and whether a torn line was removed.
fn recover_output(output: &Path) -> anyhow::Result<(HashSet<String>, bool)> {
    let Existing { done, torn_at } = scan_output(output)?;
    let Some(len) = torn_at else {
        return Ok((done, false));
    };
    tracing::warn!(
        "{}: its last line is incomplete (interrupted write); redoing it",
        output.display()
    );
    OpenOptions::new()
        .write(true)
        .open(output)
        .and_then(|f| f.set_len(len).and_then(|()| f.sync_all()))
        .with_context(|| format!("truncating {}", output.display()))?;
    Ok((done, true))
}

/// Whether `fragment` can be what a crash left of the first label line: a
/// prefix of its serialisation (which always starts with the id), or the
/// zeros a file system may leave in place of unwritten data.
fn starts_like_a_label_line(fragment: &[u8]) -> bool {
    const HEAD: &[u8] = b"{\"id\":\"";
    let n = fragment.len().min(HEAD.len());
    fragment[..n] == HEAD[..n] || fragment.iter().all(|b| *b == 0)
}

/// Refuses paths that name the same file twice (the same path spelled
/// differently, a symlink, or on unix a hard link: same device and inode),
/// before anything is opened for writing: writing one would destroy the other.
fn check_distinct(paths: &[(&str, &Path)]) -> anyhow::Result<()> {
    for (i, (name_a, a)) in paths.iter().enumerate() {
        for (name_b, b) in &paths[i + 1..] {
            if same_file(a, b) {
                bail!(
                    "{name_a} ({}) and {name_b} ({}) are the same file; refusing to write over it",
                    a.display(),
                    b.display()
                );
            }
        }
    }
    Ok(())
}

/// Whether two paths name the same file, existing or about to be created.
fn same_file(a: &Path, b: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if let (Ok(ma), Ok(mb)) = (std::fs::metadata(a), std::fs::metadata(b)) {
            return ma.dev() == mb.dev() && ma.ino() == mb.ino();
        }
    }
    canonical(a) == canonical(b)
}

/// The canonical form of `path`; for a file that does not exist yet, that of
/// its directory joined with its name.
fn canonical(path: &Path) -> PathBuf {
    if let Ok(p) = std::fs::canonicalize(path) {
        return p;
    }
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    match (absolute.parent(), absolute.file_name()) {
        (Some(dir), Some(name)) => std::fs::canonicalize(dir)
            .map(|d| d.join(name))
            .unwrap_or(absolute.clone()),
        _ => absolute,
    }
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

/// One engine on the demo pack with a model-free hashing embedder, shared by
/// the unit tests of this module and of the jobs. Embeddings of texts holding
/// `GATE-<name>` wait until the test opens that gate, so a test can hold a
/// run on a ticket without depending on timing.
#[cfg(test)]
pub(crate) mod test_engine {
    use std::collections::{HashMap, HashSet};
    use std::path::{Path, PathBuf};
    use std::sync::{Arc, Condvar, Mutex, OnceLock};
    use std::time::{Duration, Instant};

    use models::{EmbedKind, TextEmbedder};
    use triage::{Engine, EngineConfig};

    /// Longest a gated embedding or a test's wait lasts before giving up.
    const BOUND: Duration = Duration::from_secs(60);

    #[derive(Default)]
    struct Gates {
        open: HashSet<String>,
        entered: HashMap<String, usize>,
    }

    fn gates() -> &'static (Mutex<Gates>, Condvar) {
        static GATES: OnceLock<(Mutex<Gates>, Condvar)> = OnceLock::new();
        GATES.get_or_init(Default::default)
    }

    fn gate_of(text: &str) -> Option<String> {
        let at = text.find("GATE-")? + "GATE-".len();
        let name: String = text[at..]
            .chars()
            .take_while(char::is_ascii_alphanumeric)
            .collect();
        Some(name)
    }

    /// Lets every embedding of gate `name` through, now and later.
    pub fn open_gate(name: &str) {
        let (lock, changed) = gates();
        lock.lock().unwrap().open.insert(name.to_string());
        changed.notify_all();
    }

    /// Waits until `n` embeddings of gate `name` have started.
    pub fn wait_entered(name: &str, n: usize) {
        let (lock, changed) = gates();
        let started = Instant::now();
        let mut g = lock.lock().unwrap();
        while g.entered.get(name).copied().unwrap_or(0) < n {
            assert!(
                started.elapsed() < BOUND,
                "gate {name}: fewer than {n} entered"
            );
            g = changed
                .wait_timeout(g, Duration::from_millis(100))
                .unwrap()
                .0;
        }
    }

    struct GatedEmbedder(triage::hashembed::HashEmbedder);

    impl TextEmbedder for GatedEmbedder {
        fn embed(&self, texts: &[&str], kind: EmbedKind) -> Result<Vec<Vec<f32>>, models::Error> {
            for name in texts.iter().filter_map(|t| gate_of(t)) {
                let (lock, changed) = gates();
                let mut g = lock.lock().unwrap();
                *g.entered.entry(name.clone()).or_default() += 1;
                changed.notify_all();
                let _ = changed
                    .wait_timeout_while(g, BOUND, |g| !g.open.contains(&name))
                    .unwrap();
            }
            self.0.embed(texts, kind)
        }
        fn dim(&self) -> usize {
            self.0.dim()
        }
        fn name(&self) -> &str {
            "test-hash"
        }
    }

    /// The shared engine (opened once per test binary).
    pub fn engine() -> Arc<Engine> {
        static ENGINE: OnceLock<Arc<Engine>> = OnceLock::new();
        Arc::clone(ENGINE.get_or_init(|| {
            // A static is never dropped: remove what finished runs left.
            let tmp = std::env::temp_dir();
            for entry in std::fs::read_dir(&tmp).into_iter().flatten().flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if let Some(pid) = name.strip_prefix("triage-unit-engine-") {
                    if !Path::new("/proc").join(pid).exists() {
                        let _ = std::fs::remove_dir_all(entry.path());
                    }
                }
            }
            let data_dir = tmp.join(format!("triage-unit-engine-{}", std::process::id()));
            let pack_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/demo-pack");
            let embedder = Arc::new(GatedEmbedder(triage::hashembed::HashEmbedder::new(256)));
            Arc::new(Engine::open(EngineConfig::new(pack_dir, data_dir), embedder).unwrap())
        }))
    }

    /// A JSONL line of a ticket with a clear category.
    pub fn ticket_line(id: &str, text: &str) -> String {
        serde_json::json!({"id": id, "title": "洗衣机漏水", "body": text, "category": "repair.water_leak"})
            .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::test_engine::{engine, ticket_line};
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

    #[test]
    fn an_unrelated_existing_output_is_refused_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("notes.txt");
        for content in [
            "my one line\n",
            "my one line",
            "{\"id\": \"x\", \"note\": \"a JSON line that is not a label line\"}\n",
            "\n",
            &format!("{}not ours\n", line("a", "x", Some("x"))),
        ] {
            std::fs::write(&out, content).unwrap();
            let err = recover_output(&out).unwrap_err().to_string();
            assert!(
                err.contains("notes.txt") && err.contains("not a label file"),
                "{content:?}: {err}"
            );
            assert_eq!(std::fs::read_to_string(&out).unwrap(), content);
        }
    }

    #[test]
    fn a_torn_first_label_line_is_redone() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("labels.jsonl");
        for torn in ["{\"id\":\"K-9", "{", "\0\0\0\0"] {
            std::fs::write(&out, torn).unwrap();
            let (done, repaired) = recover_output(&out).unwrap();
            assert!(repaired && done.is_empty(), "{torn:?}");
            assert_eq!(std::fs::read(&out).unwrap(), b"", "{torn:?}");
        }
        std::fs::write(&out, "").unwrap();
        assert_eq!(recover_output(&out).unwrap(), (HashSet::new(), false));
    }

    #[test]
    fn the_cli_refuses_a_foreign_output_and_writes_nothing() {
        let engine = engine();
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("tickets.jsonl");
        std::fs::write(&input, ticket_line("F-1", "洗衣机底部漏水") + "\n").unwrap();
        let out = dir.path().join("results.txt");
        std::fs::write(&out, "results of last quarter\n").unwrap();
        let base = dir.path().join("results.report");
        let err = run_cli(&engine, &input, &out, &base, false).unwrap_err();
        assert!(format!("{err:#}").contains("results.txt"), "{err:#}");
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "results of last quarter\n"
        );
        assert!(!with_suffix(&base, "json").exists() && !with_suffix(&base, "md").exists());
    }

    #[test]
    fn the_same_file_as_input_and_output_is_refused_before_writing() {
        let engine = engine();
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("tickets.jsonl");
        let text = ticket_line("S-1", "洗衣机底部漏水") + "\n";
        std::fs::write(&input, &text).unwrap();
        let symlink = dir.path().join("link.jsonl");
        std::os::unix::fs::symlink(&input, &symlink).unwrap();
        let hardlink = dir.path().join("hard.jsonl");
        std::fs::hard_link(&input, &hardlink).unwrap();
        let spelled = dir.path().join(".").join("tickets.jsonl");
        let base = dir.path().join("r");
        for out in [&input, &symlink, &hardlink, &spelled] {
            let err = run_cli(&engine, &input, out, &base, false).unwrap_err();
            assert!(format!("{err:#}").contains("same file"), "{err:#}");
            let err = run(&engine, &input, out, &RunOptions::default(), &mut |_| {}).unwrap_err();
            assert!(format!("{err:#}").contains("same file"), "{err:#}");
            assert_eq!(std::fs::read_to_string(&input).unwrap(), text);
        }
        // A report path naming the input or the output is refused too.
        let out = dir.path().join("labels.jsonl");
        for base in [dir.path().join("tickets"), dir.path().join("labels")] {
            let (input, out) = (input.with_extension("json"), out.with_extension("json"));
            std::fs::write(&input, &text).unwrap();
            let err = run_cli(&engine, &input, &out, &base, false).unwrap_err();
            assert!(format!("{err:#}").contains("same file"), "{err:#}");
            assert_eq!(std::fs::read_to_string(&input).unwrap(), text);
            assert!(!out.exists());
        }
        assert!(!out.exists());
    }

    #[test]
    fn an_input_without_a_valid_ticket_is_an_error() {
        let engine = engine();
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("tickets.jsonl");
        let out = dir.path().join("labels.jsonl");
        let base = dir.path().join("labels.report");
        std::fs::write(&input, "not json\n{\"id\": \"\"}\n[1]\n").unwrap();
        let err = format!(
            "{:#}",
            run_cli(&engine, &input, &out, &base, false).unwrap_err()
        );
        assert!(
            err.contains("none of its 3 non-blank lines is a valid ticket")
                && err.contains("line 1"),
            "{err}"
        );
        // The report says which lines were bad.
        let report: Report =
            serde_json::from_slice(&std::fs::read(with_suffix(&base, "json")).unwrap()).unwrap();
        assert_eq!((report.tickets, report.error_count), (0, 3));
        std::fs::write(&input, "\n\n").unwrap();
        let err = format!(
            "{:#}",
            run_cli(&engine, &input, &out, &base, false).unwrap_err()
        );
        assert!(err.contains("no tickets"), "{err}");
        // One valid ticket among bad lines is a success.
        std::fs::write(
            &input,
            format!("oops\n{}\n", ticket_line("V-1", "洗衣机底部漏水")),
        )
        .unwrap();
        let report = run_cli(&engine, &input, &out, &base, false).unwrap();
        assert_eq!((report.tickets, report.error_count), (1, 1));
    }
}
