//! `sweep health` (issue 12: container readiness through gRPC health):
//! SERVING and exit 0 from a live coordinator, plaintext or TLS (verified
//! against the CA given); exit 1 with the reason when the certificate
//! cannot be verified or nothing listens.

mod common;

use common::{sweep, Server};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

fn health(url: &str, more: &[&str]) -> (Option<i32>, String, String) {
    let out = sweep().args(["health", "--timeout-secs", "5", "--coordinator", url]).args(more).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn health_answers_over_plaintext_and_verified_tls_and_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let plain = Server::start(&dir.path().join("plain.db"));
    let (code, out, err) = health(&plain.url, &[]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out.trim(), "SERVING");
    let (code, out, _) = health(&plain.url, &["--service", "sweep.v1.WorkerService"]);
    assert_eq!((code, out.trim()), (Some(0), "SERVING"));
    let (code, _, err) = health(&plain.url, &["--service", "no.such.Service"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("NotFound"), "{err}");

    // TLS with a certificate for localhost signed by our own CA.
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_pem = ca_params.self_signed(&ca_key).unwrap().pem();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&key, &Issuer::from_params(&ca_params, &ca_key))
        .unwrap();
    let (ca, crt, pem) = (dir.path().join("ca.crt"), dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&ca, ca_pem).unwrap();
    std::fs::write(&crt, cert.pem()).unwrap();
    std::fs::write(&pem, key.serialize_pem()).unwrap();
    let tls = Server::start_with(
        &format!("sqlite://{}", dir.path().join("tls.db").display()),
        &["--tls-cert", crt.to_str().unwrap(), "--tls-key", pem.to_str().unwrap()],
    );
    let port = tls.url.rsplit(':').next().unwrap();
    let url = format!("https://localhost:{port}");
    let (code, out, err) = health(&url, &["--tls-ca", ca.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out.trim(), "SERVING");
    // Without our CA the certificate is not trusted.
    let (code, _, err) = health(&url, &[]);
    assert_eq!(code, Some(1), "{err}");
    assert!(!err.is_empty() && !err.contains("panicked"), "{err}");

    // Nothing listening: exit 1, naming the address.
    drop(plain);
    let gone = format!(
        "http://127.0.0.1:{}",
        std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
    );
    let (code, _, err) = health(&gone, &[]);
    assert_eq!(code, Some(1));
    assert!(err.contains("cannot reach the coordinator") && err.contains(&gone), "{err}");
}
