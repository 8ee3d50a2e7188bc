//! The coordinator's network edge: what one TCP peer may cost the server.
//!
//! - [`NetLimits`]: connection cap, handshake deadline, keepalives and
//!   per-connection stream limits, with documented defaults.
//! - [`incoming`]: the accept loop. It takes a permit from a semaphore
//!   *before* accepting, so at the cap new connections wait in the kernel's
//!   backlog instead of costing file descriptors; the permit lives in the
//!   connection's IO ([`LimitedIo`]) and is returned when the connection is
//!   dropped, whichever layer (TLS, HTTP/2) drops it.
//! - [`LimitedIo`]: closes a connection that has not started speaking
//!   within the handshake timeout (before TLS as well as in plaintext).
//! - [`ExhaustedLayer`]: tonic's decoder answers a message over the size cap
//!   with `OUT_OF_RANGE`; gRPC's convention is `RESOURCE_EXHAUSTED`. This
//!   layer rewrites that one status in response headers and trailers.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{Stream, TryFutureExt};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;
use tonic::codegen::http::{HeaderMap, HeaderValue, Request, Response};
use tonic::codegen::{Bytes, Service};
use tonic::transport::server::{Connected, TcpConnectInfo};

/// Limits on what peers may cost the coordinator at the connection level.
/// `NetLimits::default()` is what `serve` and `serve_secure` use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetLimits {
    /// Most connections open at once (handshaking or serving). Further
    /// connections are not accepted until one closes: they wait in the
    /// listen backlog. Default 1,024 (keep it below the file limit).
    pub max_connections: usize,
    /// A connection must have started its HTTP/2 handshake (sent the
    /// preface, in plaintext or after completing TLS) within this time of
    /// being accepted, or it is closed. Default 10 s.
    pub handshake_timeout: Duration,
    /// Interval of the server's HTTP/2 PING frames on an established
    /// connection; `None` disables them. Default 30 s.
    pub http2_keepalive_interval: Option<Duration>,
    /// A PING not acknowledged within this time closes the connection.
    /// Default 20 s.
    pub http2_keepalive_timeout: Duration,
    /// Idle time before the kernel sends TCP keepalive probes; `None`
    /// disables them. Default 60 s (probes every 10 s after that).
    pub tcp_keepalive: Option<Duration>,
    /// HTTP/2 `SETTINGS_MAX_CONCURRENT_STREAMS`: calls one connection may
    /// have open at once. Default 256.
    pub max_concurrent_streams: u32,
    /// Requests one connection may have in flight in the services at once
    /// (tower concurrency limit per connection). Default 256.
    pub concurrency_limit_per_connection: usize,
    /// Largest HTTP/2 header list accepted (tokens, metadata). Default 16 KiB.
    pub max_header_list_size: u32,
}

impl Default for NetLimits {
    fn default() -> Self {
        NetLimits {
            max_connections: 1024,
            handshake_timeout: Duration::from_secs(10),
            http2_keepalive_interval: Some(Duration::from_secs(30)),
            http2_keepalive_timeout: Duration::from_secs(20),
            tcp_keepalive: Some(Duration::from_secs(60)),
            max_concurrent_streams: 256,
            concurrency_limit_per_connection: 256,
            max_header_list_size: 16 * 1024,
        }
    }
}

/// A limit that cannot work (zero connections, a zero timeout).
#[derive(Debug, thiserror::Error)]
#[error("network limit {name} = {value}: {why}")]
pub struct LimitError {
    pub name: &'static str,
    pub value: String,
    pub why: &'static str,
}

impl NetLimits {
    /// Refuses limits that would make the coordinator unreachable.
    pub fn validate(&self) -> Result<(), LimitError> {
        let bad = |name, value: String, why| Err(LimitError { name, value, why });
        if self.max_connections == 0 || self.max_connections > Semaphore::MAX_PERMITS {
            return bad("max_connections", self.max_connections.to_string(), "must be at least 1 (and at most 2^61)");
        }
        if self.handshake_timeout.is_zero() {
            return bad("handshake_timeout", format!("{:?}", self.handshake_timeout), "must be positive");
        }
        if self.http2_keepalive_interval.is_some_and(|d| d.is_zero()) {
            return bad("http2_keepalive_interval", "0s".into(), "must be positive (or None to disable)");
        }
        if self.http2_keepalive_timeout.is_zero() {
            return bad("http2_keepalive_timeout", "0s".into(), "must be positive");
        }
        if self.tcp_keepalive.is_some_and(|d| d.is_zero()) {
            return bad("tcp_keepalive", "0s".into(), "must be positive (or None to disable)");
        }
        if self.max_concurrent_streams == 0 {
            return bad("max_concurrent_streams", "0".into(), "must be at least 1");
        }
        if self.concurrency_limit_per_connection == 0 {
            return bad("concurrency_limit_per_connection", "0".into(), "must be at least 1");
        }
        if self.max_header_list_size < 1024 {
            return bad("max_header_list_size", self.max_header_list_size.to_string(), "must be at least 1024");
        }
        Ok(())
    }
}

/// Length of the HTTP/2 client connection preface
/// (`PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n`): a peer that has sent this many
/// bytes has begun its handshake (a TLS ClientHello is longer too).
const PREFACE_LEN: usize = 24;

/// Under TLS the preface is encrypted, and rustls may already have read it
/// with the end of the TLS handshake. What shows it arrived is the server's
/// second write after the TLS handshake: HTTP/2 writes its SETTINGS at
/// once, and anything more (the SETTINGS acknowledgement, a window update)
/// only once the client's preface and SETTINGS are in.
const TLS_WRITES_AFTER_HANDOFF: u32 = 2;

/// An accepted connection: the TCP stream, its permit under the connection
/// cap, and the handshake deadline until the peer has started speaking.
pub struct LimitedIo {
    inner: TcpStream,
    /// Armed from accept until the handshake has started (see
    /// [`NetLimits::handshake_timeout`]); then `None`.
    deadline: Option<Pin<Box<Sleep>>>,
    timeout: Duration,
    /// Set when tonic hands the connection to HTTP/2, i.e. after the TLS
    /// handshake when there is one (tonic asks for the connect info then).
    handed_off: AtomicBool,
    bytes_read: usize,
    /// Writes since the hand-off, and how many show the HTTP/2 handshake
    /// under way (0 in plaintext, [`TLS_WRITES_AFTER_HANDOFF`] under TLS).
    writes_after_handoff: u32,
    writes_needed: u32,
    _permit: OwnedSemaphorePermit,
}

impl LimitedIo {
    fn new(inner: TcpStream, permit: OwnedSemaphorePermit, timeout: Duration, tls: bool) -> Self {
        LimitedIo {
            inner,
            deadline: Some(Box::pin(tokio::time::sleep(timeout))),
            timeout,
            handed_off: AtomicBool::new(false),
            bytes_read: 0,
            writes_after_handoff: 0,
            writes_needed: if tls { TLS_WRITES_AFTER_HANDOFF } else { 0 },
            _permit: permit,
        }
    }

    /// Whether the peer has started its HTTP/2 handshake.
    fn handshake_started(&self) -> bool {
        self.bytes_read >= PREFACE_LEN
            && self.handed_off.load(Ordering::Relaxed)
            && self.writes_after_handoff >= self.writes_needed
    }

    fn count_write(&mut self, polled: &Poll<io::Result<usize>>) {
        if matches!(polled, Poll::Ready(Ok(n)) if *n > 0) && self.handed_off.load(Ordering::Relaxed) {
            self.writes_after_handoff = self.writes_after_handoff.saturating_add(1);
        }
    }
}

impl Connected for LimitedIo {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.handed_off.store(true, Ordering::Relaxed);
        self.inner.connect_info()
    }
}

impl AsyncRead for LimitedIo {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.deadline.is_some() && this.handshake_started() {
            this.deadline = None;
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                this.bytes_read = this.bytes_read.saturating_add(buf.filled().len() - before);
                return Poll::Ready(Ok(()));
            }
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => {}
        }
        if let Some(deadline) = this.deadline.as_mut() {
            if deadline.as_mut().poll(cx).is_ready() {
                this.deadline = None;
                let peer = this.inner.peer_addr().map(|a| a.to_string()).unwrap_or_else(|_| "?".into());
                tracing::debug!(%peer, timeout = ?this.timeout, "closing a connection that did not start its handshake");
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no handshake from {peer} within {:?} of accepting the connection", this.timeout),
                )));
            }
        }
        Poll::Pending
    }
}

impl AsyncWrite for LimitedIo {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.count_write(&polled);
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.count_write(&polled);
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

fn configure(stream: &TcpStream, limits: &NetLimits) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::warn!(error = %e, "could not set TCP_NODELAY on an accepted connection");
    }
    if let Some(idle) = limits.tcp_keepalive {
        let keepalive = socket2::TcpKeepalive::new().with_time(idle).with_interval(Duration::from_secs(10));
        if let Err(e) = socket2::SockRef::from(stream).set_tcp_keepalive(&keepalive) {
            tracing::warn!(error = %e, "could not set TCP keepalive on an accepted connection");
        }
    }
}

/// The accepted connections of `listener` under `limits`: at most
/// `max_connections` exist at once; each has TCP_NODELAY, TCP keepalive and
/// the handshake deadline. Accept errors (e.g. out of file descriptors) are
/// logged and retried after a short pause rather than ending the server.
/// `tls`: whether the server runs TLS over these connections.
pub fn incoming(
    listener: TcpListener,
    limits: &NetLimits,
    tls: bool,
) -> impl Stream<Item = io::Result<LimitedIo>> + Send + 'static {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let limits = limits.clone();
    futures::stream::unfold((listener, permits, limits), move |(listener, permits, limits)| async move {
        // The semaphore is never closed.
        let Ok(permit) = permits.clone().acquire_owned().await else { return None };
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    configure(&stream, &limits);
                    let io = LimitedIo::new(stream, permit, limits.handshake_timeout, tls);
                    return Some((Ok(io), (listener, permits, limits)));
                }
                // The peer gave up before we accepted: nothing to log.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset | io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a connection failed; retrying in 100 ms");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    })
}

/// Rewrites `OUT_OF_RANGE` answers of tonic's codec for a message over the
/// size cap into `RESOURCE_EXHAUSTED` (gRPC's convention for size limits),
/// in response headers (a trailers-only answer) and in trailers.
#[derive(Clone, Copy, Debug, Default)]
pub struct ExhaustedLayer;

impl<S> tower_layer::Layer<S> for ExhaustedLayer {
    type Service = Exhausted<S>;

    fn layer(&self, inner: S) -> Exhausted<S> {
        Exhausted(inner)
    }
}

/// The service of [`ExhaustedLayer`].
#[derive(Clone, Debug)]
pub struct Exhausted<S>(S);

type GrpcResponse = Response<tonic::body::Body>;

impl<S, B> Service<Request<B>> for Exhausted<S>
where
    S: Service<Request<B>, Response = GrpcResponse>,
{
    type Response = GrpcResponse;
    type Error = S::Error;
    type Future = futures::future::MapOk<S::Future, fn(GrpcResponse) -> GrpcResponse>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        self.0.call(req).map_ok(remap_response as fn(GrpcResponse) -> GrpcResponse)
    }
}

fn remap_response(resp: GrpcResponse) -> GrpcResponse {
    let (mut parts, body) = resp.into_parts();
    remap_status(&mut parts.headers);
    Response::from_parts(parts, tonic::body::Body::new(RemapTrailers(body)))
}

/// Marks of tonic's size-limit errors ("Error, decoded message length too
/// large: ...", and the same for encoding).
const SIZE_LIMIT_MARK: &str = "message length too large";

/// If `headers` carry tonic's size-limit `OUT_OF_RANGE`, makes it
/// `RESOURCE_EXHAUSTED` (the message is kept).
pub fn remap_status(headers: &mut HeaderMap) {
    if headers.get("grpc-status").map(HeaderValue::as_bytes) != Some(b"11") {
        return;
    }
    let Some(status) = tonic::Status::from_header_map(headers) else {
        return;
    };
    if status.code() == tonic::Code::OutOfRange && status.message().contains(SIZE_LIMIT_MARK) {
        let code = tonic::Code::ResourceExhausted as i32;
        headers.insert("grpc-status", HeaderValue::from(code));
    }
}

struct RemapTrailers(tonic::body::Body);

impl http_body::Body for RemapTrailers {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, tonic::Status>>> {
        match Pin::new(&mut self.0).poll_frame(cx) {
            Poll::Ready(Some(Ok(mut frame))) => {
                if let Some(trailers) = frame.trailers_mut() {
                    remap_status(trailers);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.0.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_zero_limits_are_refused() {
        NetLimits::default().validate().unwrap();
        let err = NetLimits { max_connections: 0, ..Default::default() }.validate().unwrap_err();
        assert!(err.to_string().contains("max_connections = 0"), "{err}");
        let err = NetLimits { handshake_timeout: Duration::ZERO, ..Default::default() }.validate().unwrap_err();
        assert!(err.to_string().contains("handshake_timeout"), "{err}");
    }

    #[test]
    fn only_the_size_limit_out_of_range_is_remapped() {
        let mut h = HeaderMap::new();
        tonic::Status::out_of_range("Error, decoded message length too large: found 17 bytes, the limit is: 16 bytes")
            .add_header(&mut h)
            .unwrap();
        remap_status(&mut h);
        let s = tonic::Status::from_header_map(&h).unwrap();
        assert_eq!(s.code(), tonic::Code::ResourceExhausted);
        assert!(s.message().contains("found 17 bytes"), "{}", s.message());

        let mut h = HeaderMap::new();
        tonic::Status::out_of_range("step past the end").add_header(&mut h).unwrap();
        remap_status(&mut h);
        assert_eq!(tonic::Status::from_header_map(&h).unwrap().code(), tonic::Code::OutOfRange);
    }

    /// A body whose only frame is `trailers`.
    struct Trailers(Option<HeaderMap>);

    impl http_body::Body for Trailers {
        type Data = Bytes;
        type Error = tonic::Status;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<http_body::Frame<Bytes>, tonic::Status>>> {
            Poll::Ready(self.0.take().map(|t| Ok(http_body::Frame::trailers(t))))
        }
    }

    #[tokio::test]
    async fn size_limit_in_trailers_is_remapped() {
        // A streaming call fails mid-stream: its status is in the trailers.
        let mut t = HeaderMap::new();
        tonic::Status::out_of_range("Error, decoded message length too large: found 9 bytes, the limit is: 8 bytes")
            .add_header(&mut t)
            .unwrap();
        let resp = Response::new(tonic::body::Body::new(Trailers(Some(t))));
        let mut body = remap_response(resp).into_body();
        use http_body::Body as _;
        let frame = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await.unwrap().unwrap();
        let trailers = frame.into_trailers().expect("a trailers frame");
        let s = tonic::Status::from_header_map(&trailers).unwrap();
        assert_eq!(s.code(), tonic::Code::ResourceExhausted, "{s:?}");
    }
}
