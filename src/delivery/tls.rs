//! A subscription's TLS settings, loaded: its client certificate and key
//! (mutual TLS) and the CA certificates it trusts besides the system's. The
//! client builds one connection pool per subscription that has them; what
//! is wrong with them is said by field, at write and at load.

use reqwest::{Certificate, ClientBuilder, Identity};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::domain::EndpointTls;

/// What is wrong, and in which field of `tls`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("tls/{field}: {message}")]
pub struct TlsError {
    pub field: &'static str,
    pub message: String,
}

fn error(field: &'static str, message: impl Into<String>) -> TlsError {
    TlsError { field, message: message.into() }
}

/// The settings, parsed for a client builder.
#[derive(Debug, Clone)]
pub struct TlsMaterial {
    identity: Option<Identity>,
    roots: Vec<Certificate>,
}

impl TlsMaterial {
    pub fn parse(tls: &EndpointTls) -> Result<Self, TlsError> {
        let identity = match (&tls.client_certificate, &tls.client_key) {
            (None, None) => None,
            (Some(_), None) => {
                return Err(error("client_key", "a client certificate needs its key"))
            }
            (None, Some(_)) => {
                return Err(error("client_certificate", "a client key needs its certificate"))
            }
            (Some(certificate), Some(key)) => {
                certificates("client_certificate", certificate)?;
                PrivateKeyDer::from_pem_slice(key.as_bytes()).map_err(|_| {
                    error("client_key", "no PEM private key (PKCS #8, PKCS #1 or SEC1) in it")
                })?;
                let pem = format!("{certificate}\n{key}");
                let identity = Identity::from_pem(pem.as_bytes())
                    .map_err(|e| error("client_key", format!("does not load: {e}")))?;
                Some(identity)
            }
        };
        let roots = match &tls.ca_certificates {
            None => Vec::new(),
            Some(bundle) => {
                certificates("ca_certificates", bundle)?;
                Certificate::from_pem_bundle(bundle.as_bytes())
                    .map_err(|e| error("ca_certificates", format!("does not load: {e}")))?
            }
        };
        Ok(Self { identity, roots })
    }

    /// `builder` presenting the certificate and trusting the CAs.
    pub fn apply(&self, mut builder: ClientBuilder) -> ClientBuilder {
        if let Some(identity) = &self.identity {
            builder = builder.identity(identity.clone());
        }
        for root in &self.roots {
            builder = builder.add_root_certificate(root.clone());
        }
        builder
    }

    /// Whether a client can be built with them: the key must be the
    /// certificate's (rustls compares them when the client is built).
    pub fn check(&self) -> Result<(), TlsError> {
        self.apply(reqwest::Client::builder()).build().map(drop).map_err(|e| {
            let field = if self.identity.is_some() { "client_key" } else { "ca_certificates" };
            error(field, format!("not usable: {}", crate::error::source_chain(&e)))
        })
    }
}

/// Every PEM certificate of `pem`; at least one.
fn certificates(field: &'static str, pem: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let chain = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| error(field, "not PEM certificates"))?;
    if chain.is_empty() {
        return Err(error(field, "no PEM certificate (-----BEGIN CERTIFICATE-----) in it"));
    }
    Ok(chain)
}
