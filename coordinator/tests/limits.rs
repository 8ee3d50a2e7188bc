//! The coordinator's network edge on a real server (127.0.0.1:0), issue 8:
//! silent TCP connections are closed after the handshake timeout (before
//! TLS, and after TLS without HTTP/2) and cannot starve normal calls; the connection cap holds
//! extra connections in the backlog; established connections outlive the
//! handshake timeout; a message over the size cap is RESOURCE_EXHAUSTED.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::{CertificateParams, KeyPair};
use sweep_coordinator::{NetLimits, Security, ServerTls, MAX_MESSAGE_BYTES};
use sweep_proto::v1 as pb;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tonic::Code;

struct Server {
    addr: std::net::SocketAddr,
    _stop: tokio::sync::oneshot::Sender<()>,
    _dir: tempfile::TempDir,
}

async fn start(security: Security, net: NetLimits) -> Server {
    let (dir, store) = common::temp_sqlite_store().await;
    let (listener, addr) = common::loopback_listener().await;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let served = sweep_coordinator::serve_with_limits(store, Default::default(), security, net, listener, async {
            let _ = rx.await;
        })
        .await;
        served.expect("coordinator failed");
    });
    Server { addr, _stop: tx, _dir: dir }
}

fn small(cap: usize, handshake: Duration) -> NetLimits {
    NetLimits { max_connections: cap, handshake_timeout: handshake, ..Default::default() }
}

async fn channel(url: String) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(url).unwrap().connect().await.expect("connect")
}

/// Health check and Status on a fresh connection.
async fn normal_calls(url: String) {
    let ch = channel(url).await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(ch.clone());
    let resp = health
        .check(tonic_health::pb::HealthCheckRequest { service: "sweep.v1.SweepService".into() })
        .await
        .expect("health check")
        .into_inner();
    assert_eq!(resp.status, tonic_health::pb::health_check_response::ServingStatus::Serving as i32);
    let mut client = pb::sweep_service_client::SweepServiceClient::new(ch);
    let status = client.status(pb::StatusRequest::default()).await.expect("Status").into_inner();
    assert!(status.sweeps.is_empty(), "{status:?}");
}

/// Reads `s` to its end; `Ok` means the server closed it (EOF), after
/// whatever it wrote first (the HTTP/2 SETTINGS frame in plaintext).
async fn closed_by_server(s: &mut TcpStream, within: Duration) -> Result<(), String> {
    let mut sink = Vec::new();
    match tokio::time::timeout(within, s.read_to_end(&mut sink)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("read error instead of EOF: {e}")),
        Err(_) => Err(format!("still open after {within:?}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_are_closed_and_do_not_starve_calls() {
    let server = start(Security::default(), small(64, Duration::from_secs(1))).await;
    let mut silent = Vec::new();
    for _ in 0..300 {
        silent.push(TcpStream::connect(server.addr).await.expect("connect"));
    }

    // A normal client behind 300 silent connections: at most 64 at a time
    // are held, each for the 1 s handshake timeout, so it is served within
    // a few seconds. The bound only detects starvation (it would wait
    // forever without the timeout, or fail to connect past the cap).
    let t0 = Instant::now();
    tokio::time::timeout(Duration::from_secs(30), normal_calls(format!("http://{}", server.addr)))
        .await
        .expect("normal calls starved by silent connections");
    eprintln!("normal calls answered {:?} after 300 silent connections", t0.elapsed());

    // Every silent connection is closed by the server.
    for (i, s) in silent.iter_mut().enumerate() {
        if let Err(e) = closed_by_server(s, Duration::from_secs(30)).await {
            panic!("silent connection {i}: {e}");
        }
    }
    // And the server still serves.
    normal_calls(format!("http://{}", server.addr)).await;
}

#[tokio::test]
async fn connection_cap_holds_extra_connections_in_the_backlog() {
    // A handshake timeout far beyond the test: only the cap is at work.
    let server = start(Security::default(), small(8, Duration::from_secs(600))).await;
    let mut silent = Vec::new();
    for _ in 0..20 {
        silent.push(TcpStream::connect(server.addr).await.expect("connect"));
    }
    // An accepted plaintext connection gets the server's SETTINGS frame at
    // once; one in the backlog gets nothing.
    let accepted = |silent: &mut Vec<TcpStream>| {
        silent
            .iter_mut()
            .filter(|s| {
                let mut b = [0u8; 64];
                matches!(s.try_read(&mut b), Ok(n) if n > 0)
            })
            .count()
    };
    let mut seen = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    while seen < 8 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        seen += accepted(&mut silent);
    }
    assert_eq!(seen, 8, "the first 8 connections should be accepted");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(accepted(&mut silent), 0, "a connection past the cap of 8 was accepted");

    // Closing the held connections lets the waiting ones (and a normal
    // client) in.
    drop(silent);
    tokio::time::timeout(Duration::from_secs(30), normal_calls(format!("http://{}", server.addr)))
        .await
        .expect("normal calls after the silent connections closed");
}

/// A Watch stream lives for several handshake timeouts: the deadline only
/// applies until the peer has started speaking.
async fn watch_outlives_handshake_timeout(ch: tonic::transport::Channel) {
    let mut client = pb::sweep_service_client::SweepServiceClient::new(ch);
    let spec = common::grid_spec("edge", 1, "8", "/data");
    let id = client.submit(pb::SubmitRequest { spec: Some((&spec).into()) }).await.unwrap().into_inner().sweep_id;
    let t0 = Instant::now();
    let mut stream = client.watch(pb::WatchRequest { sweep_id: id }).await.unwrap().into_inner();
    // Watch sends a snapshot at once and then every two seconds.
    for _ in 0..3 {
        let msg = tokio::time::timeout(Duration::from_secs(30), stream.message()).await.expect("watch stalled");
        msg.expect("watch stream broken").expect("watch stream ended");
    }
    assert!(t0.elapsed() > Duration::from_secs(3), "{:?}", t0.elapsed());
}

#[tokio::test]
async fn established_connections_outlive_the_handshake_timeout() {
    let server = start(Security::default(), small(4, Duration::from_secs(1))).await;
    watch_outlives_handshake_timeout(channel(format!("http://{}", server.addr)).await).await;
}

#[tokio::test]
async fn handshake_timeout_applies_before_tls() {
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_owned()]).unwrap().self_signed(&key).unwrap();
    let security = Security {
        tls: Some(ServerTls {
            cert_pem: cert.pem().into_bytes(),
            key_pem: key.serialize_pem().into_bytes(),
            client_ca_pem: None,
        }),
        ..Default::default()
    };
    let server = start(security, small(4, Duration::from_secs(1))).await;

    // A silent TCP peer never sends a ClientHello: closed, without a byte.
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    closed_by_server(&mut silent, Duration::from_secs(20)).await.expect("silent peer before TLS");

    // A peer that completes TLS and then never sends the HTTP/2 preface:
    // closed too (after reading the server's SETTINGS, if anything).
    let mut tls = raw_tls_client(server.addr, &cert).await;
    let mut sink = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), tls.read_to_end(&mut sink))
        .await
        .expect("a peer silent after TLS is still open after 20 s");
    match read {
        Ok(_) => {}
        // The server closes without a TLS close_notify.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {}
        Err(e) => panic!("reading the TLS-only peer: {e}"),
    }

    // A real TLS client completes its handshake and keeps its stream.
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(cert.pem()))
        .domain_name("localhost");
    let ch = tonic::transport::Endpoint::from_shared(format!("https://{}", server.addr))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .expect("TLS connect");
    watch_outlives_handshake_timeout(ch).await;
}

/// A TLS connection to `addr` (trusting `cert`) that says nothing more.
async fn raw_tls_client(
    addr: std::net::SocketAddr,
    cert: &rcgen::Certificate,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    use tokio_rustls::rustls;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await.expect("TLS handshake")
}

#[tokio::test]
async fn oversized_submit_is_resource_exhausted() {
    let server = start(Security::default(), NetLimits::default()).await;
    let mut client =
        pb::sweep_service_client::SweepServiceClient::new(channel(format!("http://{}", server.addr)).await);
    let spec = pb::GridSpec { name: "x".repeat(MAX_MESSAGE_BYTES + 1024), ..Default::default() };
    let err = client.submit(pb::SubmitRequest { spec: Some(spec) }).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("too large"), "{}", err.message());
    // The connection and the server are fine afterwards.
    client.status(pb::StatusRequest::default()).await.expect("Status after an oversized Submit");
}
