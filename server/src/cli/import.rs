//! `triage import zammad`: a Zammad's closed tickets, with their resolutions
//! (the last public agent reply), into the index, page by page, resumable.
//!
//! Pages are asked for by id (`state.name:closed AND id:>LAST`, sorted by
//! id), so a page never shifts under the import and Elasticsearch's window of
//! 10,000 results is never reached; after each page is committed to the
//! index, `imports/zammad-<ref>.json` in the data directory records the last
//! id, and a rerun goes on from there.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use indexer::Index;
use serde::{Deserialize, Serialize};

use super::ModelArgs;
use crate::connectors::zammad::{self, Reverse, ZammadArticle, ZammadTicket};

/// `triage import` subcommands.
#[derive(Debug, Subcommand)]
pub enum ImportCommand {
    /// Import a Zammad's closed tickets with their resolutions (resumable).
    Zammad(ZammadImportArgs),
}

/// Arguments of `triage import zammad`.
#[derive(Debug, Args)]
pub struct ZammadImportArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The service's data directory (stop the server using it first).
    #[arg(long, default_value = "data")]
    data_dir: PathBuf,
    /// The Zammad's base URL, e.g. https://zammad.example.com.
    #[arg(long)]
    url: String,
    /// A file holding an API token of a user with `ticket.agent`.
    #[arg(long)]
    token_file: PathBuf,
    /// Only tickets closed on or after this date (YYYY-MM-DD).
    #[arg(long)]
    since: Option<String>,
    /// The tenant the tickets belong to (default: the default tenant).
    #[arg(long, default_value = "")]
    tenant: String,
    /// A connectors file whose `[[zammad]]` mapping (of this tenant) turns
    /// groups, priorities and tags back into queues, priorities and
    /// categories; without it, tags that are category ids label the tickets.
    #[arg(long)]
    connectors: Option<PathBuf>,
    /// The pack the labels must belong to [default: fixtures/demo-pack].
    #[arg(long)]
    pack: Option<PathBuf>,
    /// Tickets per page (Zammad allows at most 200).
    #[arg(long, default_value_t = 100)]
    per_page: usize,
}

/// Where a rerun goes on.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Progress {
    url: String,
    tenant: String,
    since: Option<String>,
    last_id: u64,
    imported: u64,
}

/// Percent-encodes a query value (everything but RFC 3986's unreserved characters).
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

struct Client {
    agent: ureq::Agent,
    url: String,
    auth: String,
}

impl Client {
    fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let url = format!("{}{path}", self.url);
        let mut res = self
            .agent
            .get(&url)
            .header("Authorization", &self.auth)
            .call()
            .with_context(|| format!("GET {url}"))?;
        let status = res.status().as_u16();
        let text = res
            .body_mut()
            .with_config()
            .limit(64 * 1024 * 1024)
            .read_to_string()
            .with_context(|| format!("reading the answer of GET {url}"))?;
        match status {
            200..=299 => serde_json::from_str(&text)
                .with_context(|| format!("GET {url}: the answer is not what Zammad documents")),
            401 | 403 => anyhow::bail!(
                "GET {url}: HTTP {status}: the token was refused (it needs the ticket.agent permission)"
            ),
            _ => anyhow::bail!(
                "GET {url}: HTTP {status}: {} (rerun to go on where the import stopped)",
                text.chars().take(200).collect::<String>()
            ),
        }
    }
}

fn progress_path(data_dir: &Path, url: &str, tenant: &str) -> PathBuf {
    data_dir.join("imports").join(format!(
        "zammad-{}.json",
        &crate::connectors::id_of(&format!("{url}\n{tenant}"))[..16]
    ))
}

fn save(path: &Path, p: &Progress) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f =
        std::fs::File::create(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
    std::io::Write::write_all(&mut f, &serde_json::to_vec_pretty(p)?)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Runs `triage import zammad`.
pub fn run(cmd: ImportCommand) -> anyhow::Result<()> {
    let ImportCommand::Zammad(args) = cmd;
    let url = args.url.trim().trim_end_matches('/').to_string();
    anyhow::ensure!(
        url.starts_with("http://") || url.starts_with("https://"),
        "--url must be the Zammad's http(s) base URL"
    );
    anyhow::ensure!(
        (1..=200).contains(&args.per_page),
        "--per-page must be between 1 and 200"
    );
    if let Some(since) = &args.since {
        let format = time::macros::format_description!("[year]-[month]-[day]");
        time::Date::parse(since, &format)
            .with_context(|| format!("--since `{since}` is not a date (YYYY-MM-DD)"))?;
    }
    let token = std::fs::read_to_string(&args.token_file)
        .with_context(|| format!("reading the token file {}", args.token_file.display()))?
        .trim()
        .to_string();
    anyhow::ensure!(!token.is_empty(), "the token file is empty");
    let pack_dir = args
        .pack
        .clone()
        .unwrap_or_else(crate::config::default_pack_dir);
    let pack = triage::Pack::load(&pack_dir)
        .with_context(|| format!("loading pack {}", pack_dir.display()))?;
    let settings = match &args.connectors {
        Some(path) => Some(crate::connectors::settings::load(path, &pack)?),
        None => None,
    };
    let reverse = Reverse::new(
        settings.as_ref().and_then(|s| s.zammad(&args.tenant)),
        &pack,
    );

    std::fs::create_dir_all(args.data_dir.join("imports"))
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    let state_path = progress_path(&args.data_dir, &url, &args.tenant);
    let mut progress: Progress = match std::fs::read(&state_path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .with_context(|| format!("reading {}", state_path.display()))?,
        Err(_) => Progress {
            url: url.clone(),
            tenant: args.tenant.clone(),
            since: args.since.clone(),
            ..Progress::default()
        },
    };
    if progress.since != args.since {
        anyhow::bail!(
            "{} holds an import with --since {:?}; rerun with the same --since to finish it, or remove the file to start over",
            state_path.display(),
            progress.since
        );
    }
    let embedder = args.model.load()?;
    let dir = super::index::index_dir(&args.data_dir);
    let index =
        Index::open(&dir, embedder).with_context(|| format!("opening index {}", dir.display()))?;
    let client = Client {
        agent: ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(120)))
            .http_status_as_error(false)
            .build()
            .into(),
        url: url.clone(),
        auth: format!("Token token={token}"),
    };
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} {pos} tickets imported {msg} [{elapsed}]",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    bar.set_position(progress.imported);
    if progress.last_id > 0 {
        bar.println(format!(
            "resuming after ticket {} ({} imported before)",
            progress.last_id, progress.imported
        ));
    }
    loop {
        let mut query = format!("state.name:closed AND id:>{}", progress.last_id);
        if let Some(since) = &args.since {
            query.push_str(&format!(" AND close_at:>={since}"));
        }
        let page: Vec<ZammadTicket> = client.get(&format!(
            "/api/v1/tickets/search?query={}&sort_by=id&order_by=asc&page=1&per_page={}&expand=true",
            encode(&query),
            args.per_page
        ))?;
        if page.is_empty() {
            break;
        }
        let mut batch = Vec::new();
        let mut last = progress.last_id;
        for t in &page {
            last = last.max(t.id);
            let articles: Vec<ZammadArticle> = client.get(&format!(
                "/api/v1/ticket_articles/by_ticket/{}?expand=true",
                t.id
            ))?;
            #[derive(Deserialize)]
            struct Tags {
                #[serde(default)]
                tags: Vec<String>,
            }
            let tags: Tags = client.get(&format!("/api/v1/tags?object=Ticket&o_id={}", t.id))?;
            if let Some(ours) = zammad::to_ticket(t, &articles, &tags.tags, &reverse, &args.tenant)
            {
                batch.push(ours);
            }
            bar.set_message(format!("(ticket {})", t.id));
            bar.tick();
        }
        let n = batch.len() as u64;
        if !batch.is_empty() {
            index.upsert_tickets(batch)?;
        }
        progress.last_id = last;
        progress.imported += n;
        save(&state_path, &progress)?;
        bar.inc(n);
        if page.len() < args.per_page {
            break;
        }
    }
    bar.finish_and_clear();
    println!(
        "{}",
        serde_json::json!({"imported": progress.imported, "last_id": progress.last_id, "tenant": args.tenant})
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_percent_encoded() {
        assert_eq!(
            encode("state.name:closed AND id:>5"),
            "state.name%3Aclosed%20AND%20id%3A%3E5"
        );
    }
}
