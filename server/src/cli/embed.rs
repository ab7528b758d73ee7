//! `triage embed`: one text per stdin line in, one `{"text", "embedding"}` JSON line out.

use std::io::{BufRead, BufWriter, Write};

use clap::{Args, ValueEnum};
use models::EmbedKind;

use super::ModelArgs;

/// Lines embedded per model call: large enough to batch well, small enough to stream.
const CHUNK: usize = 64;

/// Arguments of `triage embed`.
#[derive(Debug, Args)]
pub struct EmbedArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Embed the lines as queries (requests, questions) or passages (stored documents).
    #[arg(long, value_enum, default_value_t = KindArg::Query)]
    kind: KindArg,
}

/// `--kind` values.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum KindArg {
    /// An incoming question or request.
    Query,
    /// A stored document.
    Passage,
}

impl From<KindArg> for EmbedKind {
    fn from(k: KindArg) -> Self {
        match k {
            KindArg::Query => EmbedKind::Query,
            KindArg::Passage => EmbedKind::Passage,
        }
    }
}

/// Runs `triage embed`.
pub fn run(args: EmbedArgs) -> anyhow::Result<()> {
    let embedder = args.model.load()?;
    let kind = EmbedKind::from(args.kind);
    let stdin = std::io::stdin().lock();
    let mut out = BufWriter::new(std::io::stdout().lock());
    let mut chunk: Vec<String> = Vec::with_capacity(CHUNK);
    let flush = |chunk: &mut Vec<String>, out: &mut BufWriter<_>| -> anyhow::Result<()> {
        let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        let vectors = embedder.embed(&refs, kind)?;
        for (text, embedding) in chunk.iter().zip(vectors) {
            serde_json::to_writer(
                &mut *out,
                &serde_json::json!({ "text": text, "embedding": embedding }),
            )?;
            out.write_all(b"\n")?;
        }
        out.flush()?;
        chunk.clear();
        Ok(())
    };
    for line in stdin.lines() {
        let line = line.map_err(|e| anyhow::anyhow!("reading stdin: {e} (input must be UTF-8)"))?;
        chunk.push(line);
        if chunk.len() == CHUNK {
            flush(&mut chunk, &mut out)?;
        }
    }
    if !chunk.is_empty() {
        flush(&mut chunk, &mut out)?;
    }
    Ok(())
}
