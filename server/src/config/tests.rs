//! The settings: each flag, variable and file key, their precedence (flag >
//! environment > file > default) and the checks on their values.

use std::sync::{Mutex, MutexGuard};

use clap::Parser;

use super::*;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Parser)]
struct Wired {
    #[command(subcommand)]
    command: Sub,
}

#[derive(clap::Subcommand)]
enum Sub {
    Serve {
        #[command(flatten)]
        serve: ServeArgs,
    },
    Reclassify {
        #[command(flatten)]
        args: crate::reclassify::ReclassifyArgs,
        #[command(flatten)]
        model: ModelArgs,
    },
}

/// Every variable the settings read: tests set them only while holding [`env`].
const VARS: &[&str] = &[
    "TRIAGE_DATA_DIR",
    "TRIAGE_PACK",
    "TRIAGE_MODEL",
    "TRIAGE_MODEL_DIR",
    "TRIAGE_MODEL_CACHE",
    "TRIAGE_CONFIG",
    "TRIAGE_ADDR",
    "TRIAGE_API_KEYS",
    "TRIAGE_ALLOW_UNAUTHENTICATED",
    "TRIAGE_ALLOWED_HOSTS",
    "TRIAGE_BODY_READ_TIMEOUT_MS",
    "TRIAGE_LEARN_MIN_SESSIONS",
    "TRIAGE_MAX_BODY_BYTES",
    "TRIAGE_MAX_TEXT_CHARS",
    "TRIAGE_REQUEST_TIMEOUT_MS",
    "TRIAGE_MAX_CONCURRENCY",
    "TRIAGE_RETRAIN_AFTER_CHANGES",
    "TRIAGE_RETRAIN_MIN_INTERVAL_SECS",
    "TRIAGE_INSIGHTS_INTERVAL_SECS",
];

/// The process environment with exactly `vars` of the settings' variables
/// set, for as long as the guard lives (tests run in parallel: every test
/// that parses settings holds it).
struct Env {
    _guard: MutexGuard<'static, ()>,
}

fn env(vars: &[(&str, &str)]) -> Env {
    static LOCK: Mutex<()> = Mutex::new(());
    let guard = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    for var in VARS {
        std::env::remove_var(var);
    }
    for (k, v) in vars {
        std::env::set_var(k, v);
    }
    Env { _guard: guard }
}

impl Drop for Env {
    fn drop(&mut self) {
        for var in VARS {
            std::env::remove_var(var);
        }
    }
}

/// The configuration `args` give (under the current environment), or its whole error chain.
fn parse(args: &[&str]) -> Result<Config, String> {
    let cli = Cli::try_parse_from(std::iter::once("triage").chain(args.iter().copied()))
        .map_err(|e| e.to_string())?;
    Config::from_args(&cli.serve).map_err(|e| format!("{e:#}"))
}

/// A settings file holding `text`, in `dir`.
fn file(dir: &tempfile::TempDir, text: &str) -> String {
    let path = dir.path().join("triage.toml");
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn flags_fit_next_to_the_cli_model_flags() {
    use clap::CommandFactory;
    let _env = env(&[]);
    Wired::command().debug_assert();
    let w = Wired::parse_from([
        "triage",
        "serve",
        "--addr",
        "127.0.0.1:0",
        "--pack",
        "p",
        "--model-dir",
        "m",
    ]);
    let Sub::Serve { serve } = w.command else {
        panic!("not serve")
    };
    let cfg = Config::from_args(&serve).unwrap();
    assert_eq!(cfg.engine.pack_dir, PathBuf::from("p"));
    assert_eq!(
        cfg.engine.model,
        models::ModelSource::Dir(PathBuf::from("m"))
    );
    let w = Wired::parse_from([
        "triage",
        "reclassify",
        "--in",
        "a.jsonl",
        "--out",
        "b.jsonl",
        "--data-dir",
        "d",
        "--model",
        "all-MiniLM-L6-v2",
    ]);
    let Sub::Reclassify { args, model } = w.command else {
        panic!("not reclassify")
    };
    assert_eq!(args.output, PathBuf::from("b.jsonl"));
    assert_eq!(args.engine.data_dir, PathBuf::from("d"));
    let settings = model.engine_settings(&args.engine).unwrap();
    assert_eq!(
        settings.model,
        models::ModelSource::Named("all-MiniLM-L6-v2".into())
    );
    assert_eq!(settings.data_dir, PathBuf::from("d"));
}

#[test]
fn flag_beats_environment_beats_file_beats_default() {
    let dir = tempfile::tempdir().unwrap();
    let path = file(
        &dir,
        "max_concurrency = 5\nmax_text_chars = 10\nmax_body_bytes = 99\n",
    );
    let _env = env(&[
        ("TRIAGE_MAX_CONCURRENCY", "6"),
        ("TRIAGE_MAX_TEXT_CHARS", "11"),
    ]);
    let cfg = parse(&["--config", &path, "--max-concurrency", "7"]).unwrap();
    // flag over environment and file
    assert_eq!(cfg.limits.max_concurrency, 7);
    // environment over file
    assert_eq!(cfg.limits.max_text_chars, 11);
    // file over default
    assert_eq!(cfg.limits.max_body_bytes, 99);
    // default when nothing sets it
    assert_eq!(
        cfg.limits.request_timeout,
        Duration::from_millis(DEFAULT_REQUEST_TIMEOUT_MS)
    );
    assert_eq!(
        cfg.limits.body_read_timeout,
        Limits::default().body_read_timeout
    );
    // Each variable reaches its setting; a flag or the file can name every one.
    drop(_env);
    let _env = env(&[
        ("TRIAGE_ADDR", "127.0.0.1:9001"),
        ("TRIAGE_DATA_DIR", "/env-data"),
        ("TRIAGE_PACK", "/env-pack"),
        ("TRIAGE_API_KEYS", "k1=:chat,k2=acme:admin"),
        ("TRIAGE_ALLOWED_HOSTS", "a.example,b.example"),
        ("TRIAGE_BODY_READ_TIMEOUT_MS", "5"),
        ("TRIAGE_LEARN_MIN_SESSIONS", "4"),
        ("TRIAGE_REQUEST_TIMEOUT_MS", "6"),
        ("TRIAGE_RETRAIN_AFTER_CHANGES", "8"),
        ("TRIAGE_RETRAIN_MIN_INTERVAL_SECS", "9"),
        ("TRIAGE_INSIGHTS_INTERVAL_SECS", "10"),
    ]);
    let cfg = parse(&[]).unwrap();
    assert_eq!(cfg.addr.port(), 9001);
    assert_eq!(cfg.engine.data_dir, PathBuf::from("/env-data"));
    assert_eq!(cfg.engine.pack_dir, PathBuf::from("/env-pack"));
    assert_eq!(cfg.api_keys.len(), 2);
    assert_eq!(cfg.allowed_hosts, ["a.example", "b.example"]);
    assert_eq!(cfg.limits.body_read_timeout, Duration::from_millis(5));
    assert_eq!(cfg.engine.learn.min_sessions, 4);
    assert_eq!(cfg.limits.request_timeout, Duration::from_millis(6));
    assert_eq!(cfg.retrain.after_changes, 8);
    assert_eq!(cfg.retrain.min_interval, Duration::from_secs(9));
    assert_eq!(cfg.insights_interval, Duration::from_secs(10));
    drop(_env);
    let path = file(
        &dir,
        "addr = \"127.0.0.1:9002\"\ndata_dir = \"/f-data\"\npack = \"/f-pack\"\n\
         allow_unauthenticated = true\nallowed_hosts = [\"c.example\"]\n\
         body_read_timeout_ms = 12\nlearn_min_sessions = 2\nrequest_timeout_ms = 13\n\
         retrain_after_changes = 14\nretrain_min_interval_secs = 15\n\
         insights_interval_secs = 16\n\
         model = \"all-MiniLM-L6-v2\"\nmodel_cache = \"/f-cache\"\n",
    );
    let _env = env(&[]);
    let cfg = parse(&["--config", &path]).unwrap();
    assert_eq!(cfg.addr.port(), 9002);
    assert_eq!(cfg.engine.data_dir, PathBuf::from("/f-data"));
    assert_eq!(cfg.engine.pack_dir, PathBuf::from("/f-pack"));
    assert!(cfg.allow_unauthenticated);
    assert_eq!(cfg.allowed_hosts, ["c.example"]);
    assert_eq!(cfg.limits.body_read_timeout, Duration::from_millis(12));
    assert_eq!(cfg.engine.learn.min_sessions, 2);
    assert_eq!(cfg.limits.request_timeout, Duration::from_millis(13));
    assert_eq!(cfg.retrain.after_changes, 14);
    assert_eq!(cfg.retrain.min_interval, Duration::from_secs(15));
    assert_eq!(cfg.insights_interval, Duration::from_secs(16));
    assert_eq!(
        cfg.engine.model,
        models::ModelSource::Named("all-MiniLM-L6-v2".into())
    );
    assert_eq!(cfg.engine.model_cache, PathBuf::from("/f-cache"));
}

#[test]
fn flags_override_file_and_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let path = file(
        &dir,
        "addr = \"127.0.0.1:9000\"\nmax_concurrency = 5\nmax_text_chars = 10\n[api_keys]\nk1 = \"acme:agent\"\n",
    );
    let _env = env(&[]);
    let cfg = parse(&[
        "--config",
        &path,
        "--max-concurrency",
        "7",
        "--api-key",
        "k2=globex:chat",
    ])
    .unwrap();
    assert_eq!(cfg.addr.port(), 9000);
    assert_eq!(cfg.limits.max_concurrency, 7);
    assert_eq!(cfg.limits.max_text_chars, 10);
    assert_eq!(cfg.limits.max_body_bytes, Limits::default().max_body_bytes);
    let key = |k: &str| cfg.api_keys.get(k).map(|g| (g.tenant.as_str(), g.scope));
    assert_eq!(key("k1"), Some(("acme", Scope::Agent)));
    assert_eq!(key("k2"), Some(("globex", Scope::Chat)));
}

#[test]
fn bad_values_are_refused_with_a_message() {
    let _env = env(&[]);
    let err = parse(&["--api-key", "=acme:chat"]).unwrap_err();
    assert!(err.contains("token is empty"), "{err}");
    assert!(parse(&["--max-concurrency", "0"]).is_err());
    let dir = tempfile::tempdir().unwrap();
    let err = parse(&["--config", &file(&dir, "no_such_key = 1\n")]).unwrap_err();
    assert!(err.contains("no_such_key"), "{err}");
    // A value of the wrong type names its key.
    let err = parse(&["--config", &file(&dir, "max_concurrency = \"many\"\n")]).unwrap_err();
    assert!(err.contains("max_concurrency"), "{err}");
    // The file cannot name another settings file.
    let err = parse(&["--config", &file(&dir, "config = \"x.toml\"\n")]).unwrap_err();
    assert!(err.contains("unknown key `config`"), "{err}");
}

#[test]
fn keys_need_a_scope_and_never_echo_the_token() {
    let _env = env(&[]);
    // Before: a bare token (or TOKEN=TENANT) silently meant the default tenant.
    for spec in [
        "s3cret-token",
        "s3cret-token=acme",
        "s3cret-token=acme:root",
    ] {
        let err = parse(&["--api-key", spec]).unwrap_err();
        assert!(
            err.contains("SCOPE") || err.contains("scope"),
            "{spec}: {err}"
        );
        assert!(
            !err.contains("s3cret"),
            "the token leaked into the error: {err}"
        );
    }
    let cfg = parse(&["--api-key", "k1=:chat,k2=acme:Agent,k3=a:b:admin"]).unwrap();
    let key = |k: &str| cfg.api_keys.get(k).map(|g| (g.tenant.clone(), g.scope));
    assert_eq!(key("k1"), Some((String::new(), Scope::Chat)));
    assert_eq!(key("k2"), Some(("acme".into(), Scope::Agent)));
    assert_eq!(key("k3"), Some(("a:b".into(), Scope::Admin)));
    assert!(Scope::Chat < Scope::Agent && Scope::Agent < Scope::Admin);
    let dir = tempfile::tempdir().unwrap();
    let err = parse(&["--config", &file(&dir, "[api_keys]\nk9 = \"acme\"\n")]).unwrap_err();
    assert!(err.contains("no scope"), "{err}");
}

#[test]
fn without_keys_only_loopback_unless_allowed_explicitly() {
    let _env = env(&[]);
    let err = parse(&["--addr", "0.0.0.0:8080"]).unwrap_err();
    assert!(err.contains("without API keys"), "{err}");
    assert!(parse(&["--addr", "0.0.0.0:8080", "--allow-unauthenticated"]).is_ok());
    assert!(parse(&["--addr", "0.0.0.0:8080", "--api-key", "k=:admin"]).is_ok());
    assert!(parse(&["--addr", "127.0.0.1:8080"]).is_ok());
    assert!(parse(&["--addr", "[::1]:8080"]).is_ok());
    let cfg = parse(&["--learn-min-sessions", "5", "--body-read-timeout-ms", "250"]).unwrap();
    assert_eq!(cfg.engine.learn.min_sessions, 5);
    assert_eq!(cfg.limits.body_read_timeout, Duration::from_millis(250));
    assert!(parse(&["--learn-min-sessions", "0"]).is_err());
}

#[test]
fn model_flags_win_over_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = file(&dir, "model_dir = \"/from-file\"\n");
    let _env = env(&[]);
    let from_file = parse(&["--config", &path]).unwrap();
    assert_eq!(
        from_file.engine.model,
        models::ModelSource::Dir(PathBuf::from("/from-file"))
    );
    let cfg = parse(&["--config", &path, "--model-dir", "/m"]).unwrap();
    assert_eq!(
        cfg.engine.model,
        models::ModelSource::Dir(PathBuf::from("/m"))
    );
    // A model name given as a flag beats the file's directory too.
    let cfg = parse(&["--config", &path, "--model", "all-MiniLM-L6-v2"]).unwrap();
    assert_eq!(
        cfg.engine.model,
        models::ModelSource::Named("all-MiniLM-L6-v2".into())
    );
    // Both as flags is a mistake, as before.
    assert!(parse(&["--model", "x", "--model-dir", "/m"]).is_err());
}

#[test]
fn model_environment_beats_the_file_and_flags_beat_both() {
    let dir = tempfile::tempdir().unwrap();
    let path = file(
        &dir,
        "model_dir = \"/file-model\"\nmodel_cache = \"/file-cache\"\n",
    );
    let env_of = |vars: &[(&str, &str)]| {
        let guard = env(vars);
        (parse(&["--config", &path]).unwrap(), guard)
    };
    let (cfg, guard) = env_of(&[]);
    drop(guard);
    assert_eq!(
        cfg.engine.model,
        models::ModelSource::Dir(PathBuf::from("/file-model"))
    );
    assert_eq!(cfg.engine.model_cache, PathBuf::from("/file-cache"));

    // A model named in the environment replaces the file's model directory.
    let (cfg, guard) = env_of(&[
        ("TRIAGE_MODEL", "all-MiniLM-L6-v2"),
        ("TRIAGE_MODEL_CACHE", "/env-cache"),
    ]);
    drop(guard);
    assert_eq!(
        cfg.engine.model,
        models::ModelSource::Named("all-MiniLM-L6-v2".into())
    );
    assert_eq!(cfg.engine.model_cache, PathBuf::from("/env-cache"));
    let (cfg, guard) = env_of(&[("TRIAGE_MODEL_DIR", "/env-model"), ("TRIAGE_MODEL", " ")]);
    drop(guard);
    assert_eq!(
        cfg.engine.model,
        models::ModelSource::Dir(PathBuf::from("/env-model"))
    );

    // Flags beat the environment.
    let _env = env(&[
        ("TRIAGE_MODEL_DIR", "/env-model"),
        ("TRIAGE_MODEL_CACHE", "/env-cache"),
    ]);
    let cfg = parse(&[
        "--config",
        &path,
        "--model",
        "multilingual-e5-small",
        "--model-cache",
        "/flag-cache",
    ])
    .unwrap();
    assert_eq!(
        cfg.engine.model,
        models::ModelSource::Named("multilingual-e5-small".into())
    );
    assert_eq!(cfg.engine.model_cache, PathBuf::from("/flag-cache"));
}

#[test]
fn retrain_policy_comes_from_flags_file_or_defaults() {
    let _env = env(&[]);
    let cfg = parse(&[]).unwrap();
    assert_eq!(cfg.retrain, RetrainPolicy::default());
    assert_eq!(cfg.retrain.after_changes, DEFAULT_RETRAIN_AFTER_CHANGES);

    let dir = tempfile::tempdir().unwrap();
    let path = file(
        &dir,
        "retrain_after_changes = 0\nretrain_min_interval_secs = 7\n",
    );
    let cfg = parse(&["--config", &path]).unwrap();
    assert_eq!(cfg.retrain.after_changes, 0);
    assert_eq!(cfg.retrain.min_interval, Duration::from_secs(7));

    let cfg = parse(&["--config", &path, "--retrain-after-changes", "3"]).unwrap();
    assert_eq!(cfg.retrain.after_changes, 3);
    assert_eq!(cfg.retrain.min_interval, Duration::from_secs(7));
}
