//! How Ricochet's HTTP services hold their connections: HTTP/1.1 on hyper's
//! connection builder, a header-read timeout, a cap on open connections, a
//! graceful shutdown, and the file-descriptor limit raised at start.
//!
//! The edge (`ricochet-redirect`) and the API (`ricochet-api`) both serve
//! through [`serve`]; what sits in front of them (a TLS terminator, a load
//! balancer) speaks HTTP/1.1 to them.
//!
//! - **Header-read timeout.** A connection that sends no complete request head
//!   within it is closed, so a client trickling its headers (slowloris) cannot
//!   hold one for ever. On a kept-alive connection the clock starts when the
//!   previous response is sent, so it also closes idle connections.
//! - **Send timeout.** A connection whose answer the client has not taken for
//!   this long (its writes blocked throughout) is closed. Without it a client
//!   that pipelines requests and never reads the answers (a "slow read") holds
//!   its connection, and its slot under the cap, for ever: the header-read
//!   timeout does not run while the server waits to write. It counts time
//!   without progress, so a slow but steady reader of a long export is not cut.
//!   For the edge, whose handlers answer from memory, the header-read and send
//!   timeouts together bound a whole request.
//! - **Connection cap.** Past it the service stops accepting: new connections
//!   wait in the kernel's accept queue (and time out there, on the client's
//!   side) instead of using up file descriptors and memory. Since HTTP/1.1
//!   serves one request at a time on a connection, it also caps the requests
//!   in flight of a service whose handlers never wait (the edge's).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::response::Response;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_io_timeout::TimeoutStream;
use tower::Service as _;

/// How connections are held.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Time a connection may take to send a request head; `None`: no limit.
    pub header_read_timeout: Option<Duration>,
    /// Time a connection's writes may stay blocked (the client not reading);
    /// `None`: no limit.
    pub send_timeout: Option<Duration>,
    /// Connections open at once; past it, new ones wait in the accept queue.
    pub max_connections: usize,
}

/// Serves HTTP/1.1 on `listener` until `shutdown` resolves, then lets
/// in-flight requests finish: idle keep-alive connections are closed at once,
/// the others after their current response. `service_for` makes the service
/// of one connection from its peer's address. `name` labels the
/// `ricochet_{name}_accept_errors_total` counter.
pub async fn serve<S>(
    name: &'static str,
    listener: TcpListener,
    limits: Limits,
    service_for: impl Fn(SocketAddr) -> S,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    S: hyper::service::Service<hyper::Request<Incoming>, Response = Response, Error = Infallible> + Send + 'static,
    S::Future: Send + 'static,
{
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout);
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            biased;
            () = &mut shutdown => break,
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
        };
        let (stream, peer) = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    accept_failed(name, error).await;
                    continue;
                }
            },
        };
        // A response is one small write; Nagle's algorithm would hold the
        // next one back until the client acknowledged the last.
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%peer, %error, "TCP_NODELAY not set");
        }
        let mut stream = TimeoutStream::new(stream);
        stream.set_write_timeout(limits.send_timeout);
        let stream = TokioIo::new(Box::pin(stream));
        let connection = graceful.watch(http.serve_connection(stream, service_for(peer)));
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%peer, %error, "connection closed with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// A failed `accept`: a connection that died in the queue is the client's
/// business; anything else (out of file descriptors, most often) is logged
/// and waited out, so the loop does not spin on it.
async fn accept_failed(name: &'static str, error: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(error.kind(), ConnectionAborted | ConnectionRefused | ConnectionReset) {
        return;
    }
    metrics::counter!(format!("ricochet_{name}_accept_errors_total")).increment(1);
    tracing::error!(%error, "accepting a connection failed; retrying in 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// One connection's service for an axum [`Router`]: each request carries the
/// peer's address as [`ConnectInfo`].
#[derive(Clone)]
pub struct RouterService {
    pub router: Router,
    pub peer: SocketAddr,
}

impl hyper::service::Service<hyper::Request<Incoming>> for RouterService {
    type Response = Response;
    type Error = Infallible;
    type Future = axum::routing::future::RouteFuture<Infallible>;

    fn call(&self, mut request: hyper::Request<Incoming>) -> Self::Future {
        request.extensions_mut().insert(ConnectInfo(self.peer));
        self.router.clone().call(request)
    }
}

/// Raises this process's soft limit on open files to its hard limit (a
/// service holding many connections needs more than the usual 1,024), and
/// returns the limit now in force.
pub fn raise_open_files_limit() -> std::io::Result<u64> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit only read and write the struct given.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            limit = raised;
        }
    }
    Ok(limit.rlim_cur)
}

/// [`raise_open_files_limit`] at a service's start, logged either way.
pub fn raise_open_files_limit_or_warn() {
    match raise_open_files_limit() {
        Ok(limit) => tracing::info!(limit, "open files"),
        Err(error) => tracing::warn!(%error, "could not raise the open-files limit"),
    }
}
