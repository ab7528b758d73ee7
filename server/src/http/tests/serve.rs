//! The served process: background engine load, shutdown, a clear failure when the engine cannot load.

use super::*;

/// Status code of a plain HTTP/1.1 GET (no client library needed).
async fn raw_get_status(addr: std::net::SocketAddr, path: &str) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).await.ok()?;
    let mut buf = Vec::new();
    stream.read_to_end(&mut buf).await.ok()?;
    let text = String::from_utf8_lossy(&buf);
    text.split_whitespace().nth(1)?.parse().ok()
}

fn tiny_model_config(dir: &std::path::Path) -> Config {
    let mut cfg = config(dir.to_path_buf(), &[], Limits::default());
    cfg.engine.model = models::ModelSource::Dir(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/tiny-bert"),
    );
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_loads_in_the_background_stays_up_and_stops_on_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(crate::serve::serve_on(
        listener,
        tiny_model_config(dir.path()),
        async {
            let _ = stopped.await;
        },
    ));
    assert_eq!(raw_get_status(addr, "/healthz").await, Some(200));
    let started = std::time::Instant::now();
    while raw_get_status(addr, "/readyz").await != Some(200) {
        assert!(started.elapsed() < Duration::from_secs(120), "never ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Still serving well after the loader finished.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(raw_get_status(addr, "/readyz").await, Some(200));
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
    assert_eq!(
        raw_get_status(addr, "/healthz").await,
        None,
        "still listening"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_fails_clearly_when_the_engine_cannot_load() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = tiny_model_config(dir.path());
    cfg.engine.pack_dir = dir.path().join("no-such-pack");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let result = tokio::time::timeout(
        Duration::from_secs(60),
        crate::serve::serve_on(listener, cfg, std::future::pending()),
    )
    .await
    .expect("serve should stop by itself");
    let err = format!("{:#}", result.unwrap_err());
    assert!(err.contains("no-such-pack"), "{err}");
}
