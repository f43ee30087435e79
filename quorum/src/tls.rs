//! Mutual TLS between members: TLS 1.3 only, both sides present a certificate signed by
//! the cluster's own CA, and a certificate's DNS name must be the member's name.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use crate::config::TlsConfig;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {what}: {detail}")]
    File { path: PathBuf, what: &'static str, detail: String },
    #[error("TLS setup: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("client verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

/// Both halves of a node's TLS identity.
#[derive(Clone)]
pub struct TlsIdentity {
    pub server: Arc<ServerConfig>,
    pub client: Arc<ClientConfig>,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn file_error(path: &Path, what: &'static str, detail: impl ToString) -> TlsError {
    TlsError::File { path: path.to_owned(), what, detail: detail.to_string() }
}

fn load_certs(path: &Path, what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(path, what, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_error(path, what, e))?;
    if certs.is_empty() {
        return Err(file_error(path, what, "no PEM certificate in the file"));
    }
    Ok(certs)
}

impl TlsIdentity {
    /// Load the CA, this node's certificate and key, and check that the certificate
    /// is signed by that CA and names `node`: a misissued certificate fails at start,
    /// not at the first connection.
    pub fn load(tls: &TlsConfig, node: &str) -> Result<TlsIdentity, TlsError> {
        let ca = load_certs(&tls.ca, "cluster CA")?;
        let chain = load_certs(&tls.cert, "node certificate")?;
        let key = PrivateKeyDer::from_pem_file(&tls.key).map_err(|e| file_error(&tls.key, "node key", e))?;
        let mut roots = RootCertStore::empty();
        for c in ca {
            roots.add(c).map_err(|e| file_error(&tls.ca, "cluster CA", e))?;
        }
        if !cert_names(&chain[0], node) {
            return Err(file_error(
                &tls.cert,
                "node certificate",
                format!("does not name this node `{node}`"),
            ));
        }
        let roots = Arc::new(roots);
        let provider = provider();
        let verifier =
            WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone()).build()?;
        let server = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())?;
        let client = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(roots.clone())
            .with_client_auth_cert(chain.clone(), key)?;
        // Prove the chain against our own CA now, with the same verifier peers will use.
        let end_entity = webpki::EndEntityCert::try_from(&chain[0])
            .map_err(|e| file_error(&tls.cert, "node certificate", format!("{e:?}")))?;
        let anchors: Vec<_> = roots.roots.to_vec();
        end_entity
            .verify_for_usage(
                rustls::crypto::ring::default_provider().signature_verification_algorithms.all,
                &anchors,
                &chain[1..],
                rustls_pki_types::UnixTime::now(),
                webpki::KeyUsage::client_auth(),
                None,
                None,
            )
            .map_err(|e| {
                file_error(&tls.cert, "node certificate", format!("not valid under the cluster CA: {e:?}"))
            })?;
        Ok(TlsIdentity { server: Arc::new(server), client: Arc::new(client) })
    }
}

/// Does `cert` carry `name` as a DNS name?
pub fn cert_names(cert: &CertificateDer<'_>, name: &str) -> bool {
    let Ok(server_name) = ServerName::try_from(name) else { return false };
    webpki::EndEntityCert::try_from(cert)
        .and_then(|c| c.verify_is_valid_for_subject_name(&server_name))
        .is_ok()
}
