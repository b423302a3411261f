//! Mutual TLS to an endpoint: a loopback HTTPS receiver whose certificate
//! comes from a CA of the test's own (not the system's) and that asks every
//! client for a certificate of another. The subscription with the client
//! certificate and the CA is delivered to; one without the certificate, or
//! without the CA, is refused; bad PEM answers 422 naming the field.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use reqwest::Method;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::harness::{error_fields, eventually, TestApp, ADMIN_TOKEN};

const DEADLINE: Duration = Duration::from_secs(60);

/// A CA of the test's own.
struct Authority {
    certificate: rcgen::Certificate,
    key: KeyPair,
}

impl Authority {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        let key = KeyPair::generate().expect("a key");
        let certificate = params.self_signed(&key).expect("a CA certificate");
        Self { certificate, key }
    }

    fn pem(&self) -> String {
        self.certificate.pem()
    }

    /// A leaf for `names`, for a server or a client: (certificate, key).
    fn issue(
        &self,
        names: &[&str],
        purpose: ExtendedKeyUsagePurpose,
    ) -> (rcgen::Certificate, KeyPair) {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names).expect("params");
        params.extended_key_usages = vec![purpose];
        let key = KeyPair::generate().expect("a key");
        let certificate = params.signed_by(&key, &self.certificate, &self.key).expect("issued");
        (certificate, key)
    }
}

/// An HTTPS receiver that requires a client certificate from `clients`;
/// counts the requests that got through the handshake.
struct Receiver {
    url: String,
    requests: Arc<AtomicUsize>,
}

impl Receiver {
    async fn start(server: &Authority, clients: &Authority) -> Self {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(clients.certificate.der().clone()).expect("a client CA");
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::clone(&provider),
        )
        .build()
        .expect("a client verifier");
        let (certificate, key) =
            server.issue(&["127.0.0.1", "localhost"], ExtendedKeyUsagePurpose::ServerAuth);
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_client_cert_verifier(verifier)
            .with_single_cert(vec![CertificateDer::from(certificate.der().to_vec())], key)
            .expect("a server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("https://{}/hook", listener.local_addr().expect("addr"));
        let requests = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&requests);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (acceptor, counted) = (acceptor.clone(), Arc::clone(&counted));
                tokio::spawn(async move {
                    // A client without an acceptable certificate ends here.
                    let Ok(tls) = acceptor.accept(stream).await else { return };
                    let service = service_fn(move |_request| {
                        counted.fetch_add(1, Ordering::SeqCst);
                        async { Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::new()))) }
                    });
                    let _ =
                        http1::Builder::new().serve_connection(TokioIo::new(tls), service).await;
                });
            }
        });
        Self { url, requests }
    }

    fn count(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

async fn subscribe(app: &TestApp, url: &str, tls: Value) -> (u16, Value) {
    let body = json!({"url": url, "event_types": ["order.*"], "tls": tls});
    app.call(Method::POST, "/v1/subscriptions", ADMIN_TOKEN, Some(body)).await
}

/// A test send to the subscription: its attempt.
async fn test_send(app: &TestApp, created: &Value) -> Value {
    let path = format!("/v1/subscriptions/{}/test", created["id"].as_str().expect("id"));
    let (status, attempt) = app.call(Method::POST, &path, ADMIN_TOKEN, None).await;
    assert_eq!(status, 200, "{attempt}");
    attempt
}

#[tokio::test(flavor = "multi_thread")]
async fn the_right_client_certificate_gets_through_and_none_or_an_unknown_ca_does_not() {
    let app = TestApp::spawn("mtls").await;
    let (server_ca, client_ca) = (Authority::new("server CA"), Authority::new("client CA"));
    let receiver = Receiver::start(&server_ca, &client_ca).await;
    let (certificate, key) =
        client_ca.issue(&["hookgate.test"], ExtendedKeyUsagePurpose::ClientAuth);
    let full = json!({
        "client_certificate": certificate.pem(),
        "client_key": key.serialize_pem(),
        "ca_certificates": server_ca.pem(),
    });
    let (status, with_certificate) = subscribe(&app, &receiver.url, full).await;
    assert_eq!(status, 201, "{with_certificate}");
    assert_eq!(with_certificate["tls"]["client_key"], "********", "write-only");
    assert_eq!(with_certificate["tls"]["client_certificate"], certificate.pem());

    let attempt = test_send(&app, &with_certificate).await;
    assert_eq!(attempt["outcome"], "success", "{attempt}");
    assert_eq!(receiver.count(), 1);
    // Through the dispatcher too.
    let event = json!({"type": "order.paid", "data": {"n": 1}});
    let (status, _) = app.call(Method::POST, "/v1/events", ADMIN_TOKEN, Some(event)).await;
    assert_eq!(status, 202);
    eventually("the delivery over mutual TLS", DEADLINE, || async {
        (receiver.count() == 2).then_some(())
    })
    .await;

    // The CA but no certificate: the receiver ends the handshake.
    let (status, without) =
        subscribe(&app, &receiver.url, json!({"ca_certificates": server_ca.pem()})).await;
    assert_eq!(status, 201, "{without}");
    let attempt = test_send(&app, &without).await;
    assert_eq!(attempt["outcome"], "failed", "{attempt}");
    // No TLS settings: the receiver's CA is nobody's the system trusts.
    let body = json!({"url": receiver.url, "event_types": ["order.*"]});
    let (status, untrusted) =
        app.call(Method::POST, "/v1/subscriptions", ADMIN_TOKEN, Some(body)).await;
    assert_eq!(status, 201, "{untrusted}");
    let attempt = test_send(&app, &untrusted).await;
    assert_eq!(attempt["outcome"], "failed", "{attempt}");
    // Refused for the certificate (hyper-util's pool checks it too).
    let error = attempt["error"].as_str().unwrap_or_default();
    assert!(error.contains("certificate"), "{attempt}");
    assert_eq!(receiver.count(), 2, "neither got a request through");
    app.stop().await;
}

#[tokio::test]
async fn tls_settings_that_do_not_load_answer_422_naming_the_field() {
    let app = TestApp::spawn("mtls-bad").await;
    let ca = Authority::new("a CA");
    let (certificate, key) = ca.issue(&["hookgate.test"], ExtendedKeyUsagePurpose::ClientAuth);
    let (_, other_key) = ca.issue(&["other.test"], ExtendedKeyUsagePurpose::ClientAuth);
    let https = "https://127.0.0.1:9/hook";
    let cases = [
        (
            https,
            json!({"client_certificate": "not PEM", "client_key": key.serialize_pem()}),
            "tls/client_certificate",
        ),
        (
            https,
            json!({"client_certificate": certificate.pem(), "client_key": "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"}),
            "tls/client_key",
        ),
        (
            https,
            json!({"client_certificate": certificate.pem(), "client_key": other_key.serialize_pem()}),
            "tls/client_key",
        ),
        (https, json!({"client_key": key.serialize_pem()}), "tls/client_certificate"),
        (https, json!({"client_certificate": certificate.pem()}), "tls/client_key"),
        (
            https,
            json!({"ca_certificates": "-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n"}),
            "tls/ca_certificates",
        ),
        (https, json!({"ca_certificates": ""}), "tls/ca_certificates"),
        ("http://127.0.0.1:9/hook", json!({"ca_certificates": ca.pem()}), "tls"),
    ];
    for (url, tls, field) in cases {
        let (status, problem) = subscribe(&app, url, tls.clone()).await;
        assert_eq!(status, 422, "{tls}: {problem}");
        assert_eq!(error_fields(&problem), [field], "{tls}: {problem}");
    }
    let (_, list) = app.call(Method::GET, "/v1/subscriptions", ADMIN_TOKEN, None).await;
    assert_eq!(list["data"], json!([]), "nothing was created");
    app.stop().await;
}
