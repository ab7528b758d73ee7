//! Shared helpers of the `http_*` end-to-end tests: start the built `triage`
//! binary as a server on a free loopback port with its own data directory,
//! wait until it is ready, call it, stop it gently or with kill -9.
//!
//! The binary is `$TRIAGE_BIN`, else the `triage` CLI that cargo builds for
//! these tests as the `e2e` package's `triage-e2e` bin. The model is the default one (fetched on
//! first use into the model cache) unless `TRIAGE_MODEL_DIR` points elsewhere.

#![allow(dead_code)] // each test file uses a different subset

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long a server may take to become ready (first start may fetch the model).
pub const READY_TIMEOUT: Duration = Duration::from_secs(600);

/// The `triage` binary under test: `$TRIAGE_BIN`, else the one cargo built for these tests.
pub fn binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("TRIAGE_BIN") {
        return PathBuf::from(bin);
    }
    PathBuf::from(env!("CARGO_BIN_EXE_triage-e2e"))
}

/// The repository root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The demo pack.
pub fn demo_pack() -> PathBuf {
    workspace_root().join("fixtures").join("demo-pack")
}

/// A running server.
pub struct Server {
    child: Option<Child>,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// Its data directory.
    pub data_dir: PathBuf,
    extra: Vec<String>,
}

/// Options of a server start.
#[derive(Default, Clone)]
pub struct Opts {
    /// Extra command-line arguments after `serve`.
    pub args: Vec<String>,
    /// Run the server as this uid/gid (via `setpriv`), e.g. to make
    /// permission bits bite when the tests run as root.
    pub run_as: Option<u32>,
}

impl Server {
    /// Starts a server on `data_dir` and waits until `/readyz` answers 200.
    pub fn start(data_dir: &Path, opts: &Opts) -> Server {
        let mut server = Server {
            child: None,
            base: String::new(),
            data_dir: data_dir.to_path_buf(),
            extra: opts.args.clone(),
        };
        server.spawn(opts.run_as);
        server
    }

    fn spawn(&mut self, run_as: Option<u32>) {
        let bin = binary();
        let mut args: Vec<String> = vec![
            "serve".into(),
            "--addr".into(),
            "127.0.0.1:0".into(),
            "--data-dir".into(),
            self.data_dir.display().to_string(),
            "--pack".into(),
            demo_pack().display().to_string(),
        ];
        args.extend(self.extra.iter().cloned());
        let mut cmd = match run_as {
            Some(uid) => {
                let mut c = Command::new("setpriv");
                c.arg(format!("--reuid={uid}"))
                    .arg(format!("--regid={uid}"))
                    .arg("--clear-groups")
                    .arg(&bin);
                c
            }
            None => Command::new(&bin),
        };
        cmd.args(&args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let base = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(url) = line.strip_prefix("triage: listening on ") {
                        break url.trim().to_string();
                    }
                }
                _ => {
                    let status = child.wait().ok();
                    panic!("the server exited before listening: {status:?}");
                }
            }
        };
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines.by_ref() {});
        self.base = base;
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let started = Instant::now();
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("the server exited while loading: {status}");
                }
            }
            if let Ok((200, _)) = try_call(&self.base, "GET", "/readyz", None, None) {
                return;
            }
            assert!(
                started.elapsed() < READY_TIMEOUT,
                "the server was not ready within {READY_TIMEOUT:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// kill -9: no chance to clean up.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits for a clean exit; returns whether it exited with success.
    pub fn terminate(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return false;
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status.success();
            }
            if started.elapsed() > Duration::from_secs(60) {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts the server again on the same data directory (new port).
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn(None);
    }

    /// Calls the server; returns the status and the JSON body (or the text as a JSON string).
    pub fn call(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: Option<&[u8]>,
    ) -> (u16, Value) {
        try_call(&self.base, method, path, key, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// POSTs JSON.
    pub fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.call("POST", path, None, Some(body.to_string().as_bytes()))
    }

    /// PUTs JSON.
    pub fn put(&self, path: &str, body: &Value) -> (u16, Value) {
        self.call("PUT", path, None, Some(body.to_string().as_bytes()))
    }

    /// GETs.
    pub fn get(&self, path: &str) -> (u16, Value) {
        self.call("GET", path, None, None)
    }

    /// Resident memory of the server process in KiB (Linux), for load tests.
    pub fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn agent() -> &'static ureq::Agent {
    static AGENT: OnceLock<ureq::Agent> = OnceLock::new();
    AGENT.get_or_init(|| {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(120)))
            .build()
            .into()
    })
}

/// One HTTP call; `Err` only for transport failures.
pub fn try_call(
    base: &str,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: Option<&[u8]>,
) -> Result<(u16, Value), String> {
    let url = format!("{base}{path}");
    let auth = key.map(|k| format!("Bearer {k}"));
    let a = agent();
    let result = match (method, body) {
        ("GET", _) => {
            let mut r = a.get(&url);
            if let Some(v) = &auth {
                r = r.header("authorization", v);
            }
            r.call()
        }
        ("DELETE", _) => {
            let mut r = a.delete(&url);
            if let Some(v) = &auth {
                r = r.header("authorization", v);
            }
            r.call()
        }
        (m, b) => {
            let mut r = match m {
                "PUT" => a.put(&url),
                _ => a.post(&url),
            };
            r = r.header("content-type", "application/json");
            if let Some(v) = &auth {
                r = r.header("authorization", v);
            }
            r.send(b.unwrap_or_default())
        }
    };
    let mut res = result.map_err(|e| e.to_string())?;
    let status = res.status().as_u16();
    let text = res
        .body_mut()
        .with_config()
        .limit(64 * 1024 * 1024)
        .read_to_string()
        .map_err(|e| e.to_string())?;
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Ok((status, value))
}

/// Asserts the error shape: status, code and a non-empty message.
pub fn assert_error(got: &(u16, Value), status: u16, code: &str) {
    assert_eq!(got.0, status, "{}", got.1);
    assert_eq!(got.1["error"]["code"], code, "{}", got.1);
    assert!(
        got.1["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{}",
        got.1
    );
}

/// Polls a job until it is done or failed.
pub fn wait_job(server: &Server, id: &str, timeout: Duration) -> Value {
    let started = Instant::now();
    loop {
        let (status, body) = server.get(&format!("/v1/jobs/{id}"));
        assert_eq!(status, 200, "{body}");
        if body["state"] == "done" || body["state"] == "failed" {
            return body;
        }
        assert!(started.elapsed() < timeout, "job {id} not done: {body}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
