//! TLS to PostgreSQL as libpq does it under `sslmode=prefer` or `require`: the connection is
//! encrypted, and the server's certificate is checked only against a root certificate the
//! URL names (`sslrootcert=/path/ca.pem`). Supabase signs its databases' certificates with its own CA
//! (downloadable from the dashboard), so a check against the public roots would refuse every
//! Supabase database; a URL with `sslrootcert` gets the full check, chain and host name.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use percent_encoding::percent_decode_str;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::store::StoreError;

/// `DATABASE_URL` without its `sslrootcert` (which tokio-postgres does not know), and that file.
pub(super) fn split_root_cert(url: &str) -> (String, Option<PathBuf>) {
    let mut root_cert = None;
    let is_uri = url.starts_with("postgres://") || url.starts_with("postgresql://");
    if is_uri {
        let Some((base, query)) = url.split_once('?') else {
            return (url.to_string(), None);
        };
        let kept: Vec<&str> = query
            .split('&')
            .filter(|pair| match pair.split_once('=') {
                Some(("sslrootcert", value)) => {
                    let path = percent_decode_str(value).decode_utf8_lossy();
                    root_cert = Some(PathBuf::from(path.as_ref()));
                    false
                }
                _ => true,
            })
            .collect();
        let url = if kept.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        return (url, root_cert);
    }
    // `key=value` form; a path with spaces needs the URI form.
    let kept: Vec<&str> = url
        .split_whitespace()
        .filter(|pair| match pair.split_once('=') {
            Some(("sslrootcert", value)) => {
                root_cert = Some(PathBuf::from(value.trim_matches('\'')));
                false
            }
            _ => true,
        })
        .collect();
    match root_cert {
        Some(path) => (kept.join(" "), Some(path)),
        // Untouched, quoting and all.
        None => (url.to_string(), None),
    }
}

/// The TLS connector: verified against `root_cert` when the URL names one, encrypted without
/// a certificate check otherwise (as libpq does).
pub(super) fn connector(root_cert: Option<&Path>) -> Result<MakeRustlsConnect, StoreError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| StoreError::Unavailable(format!("TLS setup: {e}")))?;
    let config = match root_cert {
        Some(path) => {
            let roots = read_roots(path).map_err(|e| {
                StoreError::Unavailable(format!("sslrootcert {}: {e}", path.display()))
            })?;
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(EncryptOnly(provider)))
            .with_no_client_auth(),
    };
    Ok(MakeRustlsConnect::new(config))
}

/// Every certificate of the PEM file at `path`.
fn read_roots(path: &Path) -> Result<rustls::RootCertStore, Box<dyn std::error::Error>> {
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_file_iter(path)? {
        roots.add(certificate?)?;
    }
    Ok(roots)
}

/// Accepts the server's certificate unseen but still checks the handshake's signatures: the
/// channel is encrypted to whoever holds the certificate's key, as with libpq's `require`.
#[derive(Debug)]
struct EncryptOnly(Arc<CryptoProvider>);

impl ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_root_certificate_is_taken_out_of_either_form() {
        assert_eq!(
            split_root_cert(
                "postgresql://u:p@db:5432/postgres?sslmode=require&sslrootcert=%2Fetc%2Fca.pem"
            ),
            (
                "postgresql://u:p@db:5432/postgres?sslmode=require".to_string(),
                Some(PathBuf::from("/etc/ca.pem"))
            )
        );
        assert_eq!(
            split_root_cert("postgres://u@db/x?sslrootcert=/ca.pem"),
            (
                "postgres://u@db/x".to_string(),
                Some(PathBuf::from("/ca.pem"))
            )
        );
        assert_eq!(
            split_root_cert("host=db user=u sslmode=require sslrootcert=/ca.pem"),
            (
                "host=db user=u sslmode=require".to_string(),
                Some(PathBuf::from("/ca.pem"))
            )
        );
        assert_eq!(
            split_root_cert("postgresql://u@/db?host=/tmp/s"),
            ("postgresql://u@/db?host=/tmp/s".to_string(), None)
        );
    }
}
