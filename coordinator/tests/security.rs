//! Authentication and TLS on a real coordinator port (issue 5, acceptance 4):
//! calls without a token, with a wrong token, or with a token of the wrong
//! role are refused; TLS with the wrong CA fails the handshake; mutual TLS
//! refuses clients without a certificate; and an unprotected coordinator
//! refuses to listen beyond loopback.

use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use sweep_coordinator::auth::{Auth, Tokens};
use sweep_coordinator::store::{SqliteStore, Store};
use sweep_coordinator::{Security, ServerTls};
use sweep_proto::client::ClientSecurity;
use sweep_proto::v1 as pb;
use tonic::Code;

const WORKER: &str = "worker-token-0123456789abcdef";
const CLIENT: &str = "client-token-0123456789abcdef";

struct Ca {
    params: CertificateParams,
    key: KeyPair,
    pem: String,
}

fn ca() -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let pem = params.self_signed(&key).unwrap().pem();
    Ca { params, key, pem }
}

/// A certificate for `name` signed by `ca`: (cert PEM, key PEM).
fn leaf(ca: &Ca, name: &str) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let params = CertificateParams::new(vec![name.to_owned()]).unwrap();
    let cert = params.signed_by(&key, &Issuer::from_params(&ca.params, &ca.key)).unwrap();
    (cert.pem(), key.serialize_pem())
}

async fn start(security: Security) -> (String, tempfile::TempDir, tokio::sync::oneshot::Sender<()>) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("s.db").display());
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&url).await.unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(sweep_coordinator::serve_secure(store, Default::default(), security, listener, async {
        let _ = rx.await;
    }));
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    (format!("{port}"), dir, tx)
}

fn token_security() -> Security {
    Security { auth: Auth::new(Some(Tokens::new(vec![WORKER.into()], vec![CLIENT.into()]))), ..Default::default() }
}

async fn clients(
    url: &str,
    sec: ClientSecurity,
) -> (
    pb::sweep_service_client::SweepServiceClient<sweep_proto::client::AuthChannel>,
    pb::worker_service_client::WorkerServiceClient<sweep_proto::client::AuthChannel>,
) {
    let ch = sec.endpoint(url).unwrap().connect().await.expect("connect");
    let ch = tonic::service::interceptor::InterceptedService::new(ch, sec.interceptor().unwrap());
    (
        pb::sweep_service_client::SweepServiceClient::new(ch.clone()),
        pb::worker_service_client::WorkerServiceClient::new(ch),
    )
}

fn with_token(t: Option<&str>) -> ClientSecurity {
    ClientSecurity { token: t.map(str::to_owned), ..Default::default() }
}

fn lease_req() -> pb::LeaseRequest {
    pb::LeaseRequest { worker_id: "w".into(), device: "cpu".into(), wait_ms: 0, ..Default::default() }
}

#[tokio::test]
async fn tokens_are_required_and_roles_are_enforced() {
    let (port, _dir, _stop) = start(token_security()).await;
    let url = format!("http://127.0.0.1:{port}");
    let status_req = || pb::StatusRequest { sweep_id: String::new() };

    let (mut c, mut w) = clients(&url, with_token(None)).await;
    assert_eq!(c.status(status_req()).await.unwrap_err().code(), Code::Unauthenticated, "no token");
    assert_eq!(w.lease(lease_req()).await.unwrap_err().code(), Code::Unauthenticated, "no token");

    let (mut c, mut w) = clients(&url, with_token(Some("not-a-real-token-at-all"))).await;
    assert_eq!(c.status(status_req()).await.unwrap_err().code(), Code::Unauthenticated, "wrong token");
    assert_eq!(w.lease(lease_req()).await.unwrap_err().code(), Code::Unauthenticated, "wrong token");

    let (mut c, mut w) = clients(&url, with_token(Some(WORKER))).await;
    let e = c.status(status_req()).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "worker token on a client call");
    assert!(!e.message().contains(WORKER), "the token must not be echoed");
    assert!(w.lease(lease_req()).await.is_ok(), "worker token on a worker call");

    let (mut c, mut w) = clients(&url, with_token(Some(CLIENT))).await;
    assert!(c.status(status_req()).await.is_ok(), "client token on a client call");
    assert_eq!(w.lease(lease_req()).await.unwrap_err().code(), Code::PermissionDenied, "client token on a worker call");

    // Health stays open for probes.
    let ch = tonic::transport::Endpoint::from_shared(url).unwrap().connect().await.unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(ch);
    assert!(health.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await.is_ok());
}

#[tokio::test]
async fn tls_with_the_right_ca_works_and_with_a_wrong_ca_fails() {
    let good = ca();
    let other = ca();
    let (cert, key) = leaf(&good, "localhost");
    let mut security = token_security();
    security.tls = Some(ServerTls { cert_pem: cert.into_bytes(), key_pem: key.into_bytes(), client_ca_pem: None });
    let (port, dir, _stop) = start(security).await;
    let url = format!("https://localhost:{port}");
    let good_ca = dir.path().join("good-ca.pem");
    let other_ca = dir.path().join("other-ca.pem");
    std::fs::write(&good_ca, &good.pem).unwrap();
    std::fs::write(&other_ca, &other.pem).unwrap();

    let sec = ClientSecurity { token: Some(CLIENT.into()), tls_ca: Some(good_ca), ..Default::default() };
    let (mut c, _) = clients(&url, sec).await;
    assert!(c.status(pb::StatusRequest::default()).await.is_ok(), "TLS with the right CA");

    let sec = ClientSecurity { token: Some(CLIENT.into()), tls_ca: Some(other_ca), ..Default::default() };
    let connected = sec.endpoint(&url).unwrap().connect().await;
    assert!(connected.is_err(), "the handshake must fail with a CA that did not sign the server's certificate");

    // Plaintext against a TLS port fails too.
    let plain = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}")).unwrap().connect().await;
    if let Ok(ch) = plain {
        let mut c = pb::sweep_service_client::SweepServiceClient::new(ch);
        assert!(c.status(pb::StatusRequest::default()).await.is_err(), "plaintext call on a TLS port");
    }
}

#[tokio::test]
async fn mutual_tls_requires_a_client_certificate() {
    let server_ca = ca();
    let client_ca = ca();
    let (cert, key) = leaf(&server_ca, "localhost");
    let mut security = token_security();
    security.tls = Some(ServerTls {
        cert_pem: cert.into_bytes(),
        key_pem: key.into_bytes(),
        client_ca_pem: Some(client_ca.pem.clone().into_bytes()),
    });
    let (port, dir, _stop) = start(security).await;
    let url = format!("https://localhost:{port}");
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &server_ca.pem).unwrap();
    let (ccert, ckey) = leaf(&client_ca, "worker-1");
    let (cert_file, key_file) = (dir.path().join("w.pem"), dir.path().join("w.key"));
    std::fs::write(&cert_file, ccert).unwrap();
    std::fs::write(&key_file, ckey).unwrap();

    let with_cert = ClientSecurity {
        token: Some(WORKER.into()),
        tls_ca: Some(ca_file.clone()),
        tls_cert: Some(cert_file),
        tls_key: Some(key_file),
        tls_domain: None,
    };
    let (_, mut w) = clients(&url, with_cert).await;
    assert!(w.lease(lease_req()).await.is_ok(), "mTLS with a client certificate");

    let without = ClientSecurity { token: Some(WORKER.into()), tls_ca: Some(ca_file), ..Default::default() };
    match without.endpoint(&url).unwrap().connect().await {
        Err(_) => {}
        Ok(ch) => {
            let mut w = pb::worker_service_client::WorkerServiceClient::new(ch);
            assert!(w.lease(lease_req()).await.is_err(), "a client without a certificate must be refused");
        }
    }
}

#[tokio::test]
async fn an_unprotected_coordinator_refuses_non_loopback_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("s.db").display());
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&url).await.unwrap());
    for (security, what) in [(Security::default(), "TLS"), (token_security(), "TLS")] {
        let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
        let err = sweep_coordinator::serve_secure(store.clone(), Default::default(), security, listener, async {})
            .await
            .unwrap_err();
        assert!(err.to_string().contains("refusing plaintext"), "{what}: {err}");
    }
    let (cert, key) = leaf(&ca(), "localhost");
    let tls_only = Security {
        tls: Some(ServerTls { cert_pem: cert.into_bytes(), key_pem: key.into_bytes(), client_ca_pem: None }),
        ..Default::default()
    };
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let err = sweep_coordinator::serve_secure(store.clone(), Default::default(), tls_only, listener, async {})
        .await
        .unwrap_err();
    assert!(err.to_string().contains("without tokens"), "{err}");
}
