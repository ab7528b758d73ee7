//! The HTTP/1.1 listener, hardened against clients that hold connections:
//! a cap on open connections (in all and per client IP: over it a new
//! connection is closed at once), a deadline for the request head (hyper's
//! `header_read_timeout`, which also bounds how long a kept-alive connection
//! may wait for its next request), an idle timeout on the socket (a read or
//! write that makes no progress for that long fails, which ends stalled
//! bodies and clients that stop reading their response), TCP_NODELAY, and a
//! graceful shutdown that finishes in-flight requests. Counters in
//! [`ConnStats`] feed `/metrics`.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, Sleep};
use tower::ServiceExt;

/// Connection limits of [`serve`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnLimits {
    /// Connections open at once, from all clients.
    pub max_connections: usize,
    /// Connections open at once from one client IP address.
    pub max_per_ip: usize,
    /// Longest wait for a complete request head, counted from the accept or
    /// from the end of the previous response (so it is also the keep-alive
    /// idle limit).
    pub header_read_timeout: Duration,
    /// Longest time a connection may make no progress (no byte read or
    /// written) while a read or write waits. Keep it above the request
    /// timeout: a handler that runs longer with a silent client is cut off.
    pub idle_timeout: Duration,
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            max_connections: 1024,
            max_per_ip: 256,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
        }
    }
}

/// Live counters of the listener, shared with whoever reports them.
#[derive(Debug, Default)]
pub struct ConnStats {
    open: AtomicUsize,
    accepted: AtomicU64,
    refused: AtomicU64,
    header_timeouts: AtomicU64,
    idle_timeouts: AtomicU64,
}

/// A snapshot of [`ConnStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnCounts {
    /// Connections open now.
    pub open: usize,
    /// Connections accepted and served since the start.
    pub accepted: u64,
    /// Connections closed at once because a cap (global or per IP) was reached.
    pub refused: u64,
    /// Connections closed because the request head did not arrive in time.
    pub header_timeouts: u64,
    /// Connections closed because they made no progress for the idle timeout.
    pub idle_timeouts: u64,
}

impl ConnStats {
    /// The counters now.
    pub fn snapshot(&self) -> ConnCounts {
        ConnCounts {
            open: self.open.load(Ordering::Relaxed),
            accepted: self.accepted.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
            header_timeouts: self.header_timeouts.load(Ordering::Relaxed),
            idle_timeouts: self.idle_timeouts.load(Ordering::Relaxed),
        }
    }
}

/// Serves `app` on `listener` with `limits` until `shutdown` resolves, then
/// stops accepting and waits for in-flight requests to finish (idle
/// connections are closed at once). Handlers can read the peer address with
/// `ConnectInfo<SocketAddr>`. Errors of single connections are logged at
/// debug level and never stop the server.
pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    limits: ConnLimits,
    stats: Arc<ConnStats>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    let slots = Arc::new(Slots {
        limits: limits.clone(),
        stats: Arc::clone(&stats),
        taken: Mutex::new(Taken::default()),
    });
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(conn) => conn,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of
                // spinning; a failed handshake is the client's problem.
                if !is_connection_error(&e) {
                    tracing::warn!("accepting a connection failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                continue;
            }
        };
        let Some(slot) = Slots::take(&slots, peer.ip()) else {
            stats.refused.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%peer, "connection refused: connection cap reached");
            drop(stream);
            continue;
        };
        stats.accepted.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(%peer, "could not set TCP_NODELAY: {e}");
        }
        let io = TokioIo::new(IdleIo::new(stream, limits.idle_timeout, Arc::clone(&stats)));
        let app = app.clone();
        let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            app.clone().oneshot(req)
        });
        let conn = graceful.watch(http.serve_connection(io, service));
        let stats = Arc::clone(&stats);
        tokio::spawn(async move {
            let _slot = slot;
            if let Err(e) = conn.await {
                if e.is_timeout() {
                    stats.header_timeouts.fetch_add(1, Ordering::Relaxed);
                }
                tracing::debug!(%peer, "connection ended: {e}");
            }
        });
    }
    drop(listener);
    tracing::debug!(
        connections = graceful.count(),
        "listener closed; waiting for in-flight requests"
    );
    graceful.shutdown().await;
    Ok(())
}

/// Errors of one incoming connection (not of the listener).
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// Open connections, in all and per client IP.
#[derive(Default)]
struct Taken {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// The connection caps and who holds them.
struct Slots {
    limits: ConnLimits,
    stats: Arc<ConnStats>,
    taken: Mutex<Taken>,
}

impl Slots {
    /// A slot for a connection from `ip`, or `None` when a cap is reached.
    fn take(slots: &Arc<Slots>, ip: IpAddr) -> Option<Slot> {
        let ip = ip.to_canonical();
        let mut taken = slots.taken.lock().unwrap_or_else(|p| p.into_inner());
        let of_ip = taken.per_ip.get(&ip).copied().unwrap_or(0);
        if taken.total >= slots.limits.max_connections || of_ip >= slots.limits.max_per_ip {
            return None;
        }
        taken.total += 1;
        taken.per_ip.insert(ip, of_ip + 1);
        slots.stats.open.fetch_add(1, Ordering::Relaxed);
        Some(Slot {
            slots: Arc::clone(slots),
            ip,
        })
    }
}

/// One open connection's place under the caps, given back on drop.
struct Slot {
    slots: Arc<Slots>,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut taken = self.slots.taken.lock().unwrap_or_else(|p| p.into_inner());
        taken.total = taken.total.saturating_sub(1);
        if let Some(n) = taken.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                taken.per_ip.remove(&self.ip);
            }
        }
        self.slots.stats.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A socket whose reads and writes fail with `TimedOut` once the connection
/// has made no progress (no byte in or out) for `timeout` while one waits.
struct IdleIo {
    io: TcpStream,
    timeout: Duration,
    /// Last progress + `timeout`; reset on every completed read or write.
    deadline: Pin<Box<Sleep>>,
    stats: Arc<ConnStats>,
}

impl IdleIo {
    fn new(io: TcpStream, timeout: Duration, stats: Arc<ConnStats>) -> Self {
        IdleIo {
            io,
            timeout,
            deadline: Box::pin(tokio::time::sleep(timeout)),
            stats,
        }
    }

    /// Records progress, or on `Pending` checks the deadline.
    fn watch<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match polled {
            Poll::Ready(r) => {
                let next = Instant::now() + self.timeout;
                self.deadline.as_mut().reset(next);
                Poll::Ready(r)
            }
            Poll::Pending => match self.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    self.stats.idle_timeouts.fetch_add(1, Ordering::Relaxed);
                    Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("connection idle for {:?}", self.timeout),
                    )))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl AsyncRead for IdleIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        this.watch(cx, polled)
    }
}

impl AsyncWrite for IdleIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write(cx, buf);
        this.watch(cx, polled)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.watch(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_flush(cx);
        this.watch(cx, polled)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::{get, post};
    use std::net::SocketAddr;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Upper bound of every wait in these tests: nothing hangs the suite.
    const BOUND: Duration = Duration::from_secs(5);
    const SHORT: Duration = Duration::from_millis(300);
    const LONG: Duration = Duration::from_secs(30);

    struct Server {
        addr: SocketAddr,
        stats: Arc<ConnStats>,
        stop: Option<tokio::sync::oneshot::Sender<()>>,
        task: tokio::task::JoinHandle<io::Result<()>>,
    }

    impl Server {
        async fn start(limits: ConnLimits, app: axum::Router) -> Server {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let stats = Arc::new(ConnStats::default());
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let task = tokio::spawn(serve(listener, app, limits, Arc::clone(&stats), async {
                let _ = stopped.await;
            }));
            Server {
                addr,
                stats,
                stop: Some(stop),
                task,
            }
        }

        async fn connect(&self) -> TcpStream {
            TcpStream::connect(self.addr).await.unwrap()
        }

        /// Waits (bounded) until `check` holds for the counters.
        async fn wait_for(&self, what: &str, check: impl Fn(&ConnCounts) -> bool) {
            let started = Instant::now();
            while !check(&self.stats.snapshot()) {
                assert!(
                    started.elapsed() < BOUND,
                    "{what}: {:?}",
                    self.stats.snapshot()
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }

    fn app() -> axum::Router {
        axum::Router::new()
            .route("/hi", get(|| async { "hello" }))
            .route("/echo", post(|body: String| async move { body }))
    }

    fn limits(header: Duration, idle: Duration) -> ConnLimits {
        ConnLimits {
            max_connections: 100,
            max_per_ip: 100,
            header_read_timeout: header,
            idle_timeout: idle,
        }
    }

    /// Reads one response (head and `Content-Length` body) and returns it as text.
    async fn read_response(conn: &mut TcpStream) -> String {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let text = String::from_utf8_lossy(&got).to_string();
            if let Some(end) = text.find("\r\n\r\n") {
                let length = text[..end]
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse::<usize>().ok())?
                    })
                    .unwrap_or(0);
                if got.len() >= end + 4 + length {
                    return text;
                }
            }
            let n = tokio::time::timeout(BOUND, conn.read(&mut buf))
                .await
                .expect("response did not come")
                .unwrap();
            assert!(n > 0, "closed before a full response: {text:?}");
            got.extend_from_slice(&buf[..n]);
        }
    }

    /// Waits until the server closes `conn` (EOF or reset; bytes it sends
    /// first, such as an error response, are skipped) and returns how long
    /// that took.
    async fn closed_after(conn: &mut TcpStream) -> Duration {
        let started = Instant::now();
        let mut buf = [0u8; 1024];
        loop {
            match tokio::time::timeout(BOUND, conn.read(&mut buf)).await {
                Err(_) => panic!("connection still open after {BOUND:?}"),
                Ok(Ok(0)) | Ok(Err(_)) => return started.elapsed(),
                Ok(Ok(_)) => {}
            }
        }
    }

    async fn get_hi(conn: &mut TcpStream) -> String {
        conn.write_all(b"GET /hi HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
        read_response(conn).await
    }

    #[tokio::test]
    async fn requests_are_served_and_kept_alive_connections_reused() {
        let server = Server::start(ConnLimits::default(), app()).await;
        let mut conn = server.connect().await;
        for _ in 0..3 {
            let response = get_hi(&mut conn).await;
            assert!(response.starts_with("HTTP/1.1 200"), "{response}");
            assert!(response.ends_with("hello"), "{response}");
        }
        conn.write_all(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\nping")
            .await
            .unwrap();
        assert!(read_response(&mut conn).await.ends_with("ping"));
        let counts = server.stats.snapshot();
        assert_eq!((counts.accepted, counts.open, counts.refused), (1, 1, 0));
    }

    #[tokio::test]
    async fn a_silent_connection_is_closed_by_the_header_timeout() {
        let server = Server::start(limits(SHORT, LONG), app()).await;
        let mut conn = server.connect().await;
        let took = closed_after(&mut conn).await;
        assert!(took >= SHORT - Duration::from_millis(50), "{took:?}");
        assert!(took < SHORT * 4, "{took:?}");
        server
            .wait_for("header timeout counted", |c| {
                c.header_timeouts == 1 && c.open == 0
            })
            .await;
    }

    #[tokio::test]
    async fn header_lines_trickling_in_are_cut_off_by_the_header_timeout() {
        let server = Server::start(limits(SHORT, LONG), app()).await;
        let mut conn = server.connect().await;
        let started = Instant::now();
        conn.write_all(b"GET /hi HTTP/1.1\r\n").await.unwrap();
        let mut buf = [0u8; 256];
        let mut line = 0;
        loop {
            assert!(
                started.elapsed() < BOUND,
                "still open after {line} header lines"
            );
            // One header line every 100 ms, each well within any idle limit.
            match tokio::time::timeout(Duration::from_millis(100), conn.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(_)) => continue,
                Err(_) => {}
            }
            line += 1;
            if conn
                .write_all(format!("X-Slow-{line}: a\r\n").as_bytes())
                .await
                .is_err()
            {
                break;
            }
        }
        let took = started.elapsed();
        assert!(took < SHORT * 4, "{took:?}");
        assert!(
            line >= 2,
            "closed before the header timeout: {line} lines in {took:?}"
        );
        server
            .wait_for("header timeout counted", |c| c.header_timeouts == 1)
            .await;
    }

    #[tokio::test]
    async fn a_kept_alive_connection_waiting_for_its_next_request_is_closed() {
        // Hyper's header timer starts again after each response ...
        let server = Server::start(limits(SHORT, LONG), app()).await;
        let mut conn = server.connect().await;
        assert!(get_hi(&mut conn).await.starts_with("HTTP/1.1 200"));
        let took = closed_after(&mut conn).await;
        assert!(took < SHORT * 4, "{took:?}");
        server
            .wait_for("closed", |c| c.open == 0 && c.header_timeouts == 1)
            .await;
        // ... and the idle timeout closes it too when that is the shorter one.
        let server = Server::start(limits(LONG, SHORT), app()).await;
        let mut conn = server.connect().await;
        assert!(get_hi(&mut conn).await.starts_with("HTTP/1.1 200"));
        let took = closed_after(&mut conn).await;
        assert!(took < SHORT * 4, "{took:?}");
        server
            .wait_for("idle timeout counted", |c| {
                c.open == 0 && c.idle_timeouts == 1
            })
            .await;
    }

    #[tokio::test]
    async fn a_stalled_body_is_cut_off_by_the_idle_timeout() {
        let server = Server::start(limits(LONG, SHORT), app()).await;
        let mut conn = server.connect().await;
        conn.write_all(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nx")
            .await
            .unwrap();
        let took = closed_after(&mut conn).await;
        assert!(took < SHORT * 4, "{took:?}");
        server
            .wait_for("idle timeout counted", |c| {
                c.open == 0 && c.idle_timeouts == 1
            })
            .await;
    }

    #[tokio::test]
    async fn connections_over_the_per_ip_cap_are_refused_while_earlier_ones_are_held() {
        let server = Server::start(
            ConnLimits {
                max_per_ip: 2,
                ..limits(LONG, LONG)
            },
            app(),
        )
        .await;
        let mut first = server.connect().await;
        let mut second = server.connect().await;
        server.wait_for("two open", |c| c.open == 2).await;
        let mut third = server.connect().await;
        let took = closed_after(&mut third).await;
        assert!(took < Duration::from_secs(1), "{took:?}");
        assert_eq!(server.stats.snapshot().refused, 1);
        // The held ones still work, and a slot freed is a slot usable again.
        assert!(get_hi(&mut first).await.starts_with("HTTP/1.1 200"));
        assert!(get_hi(&mut second).await.starts_with("HTTP/1.1 200"));
        drop(first);
        server.wait_for("one open", |c| c.open == 1).await;
        let mut fourth = server.connect().await;
        assert!(get_hi(&mut fourth).await.starts_with("HTTP/1.1 200"));
        assert_eq!(server.stats.snapshot().refused, 1);
    }

    #[tokio::test]
    async fn connections_over_the_global_cap_are_refused() {
        let server = Server::start(
            ConnLimits {
                max_connections: 1,
                ..limits(LONG, LONG)
            },
            app(),
        )
        .await;
        let mut held = server.connect().await;
        server.wait_for("one open", |c| c.open == 1).await;
        let mut refused = server.connect().await;
        closed_after(&mut refused).await;
        assert!(get_hi(&mut held).await.starts_with("HTTP/1.1 200"));
        let counts = server.stats.snapshot();
        assert_eq!((counts.accepted, counts.refused), (1, 1));
    }

    #[tokio::test]
    async fn graceful_shutdown_finishes_the_request_in_flight() {
        let (started_tx, mut started_rx) = tokio::sync::mpsc::channel::<()>(1);
        let release = Arc::new(tokio::sync::Notify::new());
        let held = Arc::clone(&release);
        let app = app().route(
            "/slow",
            get(move || {
                let started = started_tx.clone();
                let release = Arc::clone(&held);
                async move {
                    let _ = started.send(()).await;
                    release.notified().await;
                    "finished"
                }
            }),
        );
        let mut server = Server::start(ConnLimits::default(), app).await;
        let mut idle = server.connect().await;
        assert!(get_hi(&mut idle).await.starts_with("HTTP/1.1 200"));
        let mut busy = server.connect().await;
        busy.write_all(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
        tokio::time::timeout(BOUND, started_rx.recv())
            .await
            .expect("handler did not start");
        let _ = server.stop.take().map(|s| s.send(()));
        // The idle connection is closed at once; the busy one is not.
        closed_after(&mut idle).await;
        assert!(
            tokio::time::timeout(Duration::from_millis(200), &mut server.task)
                .await
                .is_err(),
            "serve returned with a request in flight"
        );
        release.notify_one();
        let response = read_response(&mut busy).await;
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert!(response.ends_with("finished"), "{response}");
        tokio::time::timeout(BOUND, &mut server.task)
            .await
            .expect("serve did not stop after the last request")
            .unwrap()
            .unwrap();
        assert!(
            TcpStream::connect(server.addr).await.is_err(),
            "still accepting"
        );
    }
}
