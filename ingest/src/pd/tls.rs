//! TLS for PD connections (rustls through tonic).
//!
//! A secured TiDB cluster serves PD on `https://` with certificates from a private CA, usually
//! with mutual TLS. The files are read and checked once, when the client is built, so that a
//! wrong path or a file of the wrong kind is reported as a configuration error naming the file,
//! instead of surfacing later as an opaque handshake failure on every reconnect.

use std::path::{Path, PathBuf};

use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

use super::PdError;

/// Certificates for TLS connections to PD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// PEM file with the CA certificate(s) that signed the PD servers' certificates.
    pub ca_path: PathBuf,
    /// PEM file with this client's certificate, for mutual TLS. Must be given with `key_path`.
    pub cert_path: Option<PathBuf>,
    /// PEM file with this client's private key, for mutual TLS. Must be given with `cert_path`.
    pub key_path: Option<PathBuf>,
}

impl TlsConfig {
    /// TLS that verifies the server against `ca_path`, without a client certificate.
    pub fn with_ca(ca_path: impl Into<PathBuf>) -> TlsConfig {
        TlsConfig {
            ca_path: ca_path.into(),
            cert_path: None,
            key_path: None,
        }
    }

    /// Loads and checks the files, producing tonic's client TLS settings.
    pub(crate) fn load(&self) -> Result<ClientTlsConfig, PdError> {
        let ca = read_pem(&self.ca_path, "CA certificate", "CERTIFICATE")?;
        let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
        match (&self.cert_path, &self.key_path) {
            (Some(cert_path), Some(key_path)) => {
                let cert = read_pem(cert_path, "client certificate", "CERTIFICATE")?;
                let key = read_pem(key_path, "client private key", "PRIVATE KEY")?;
                tls = tls.identity(Identity::from_pem(cert, key));
            }
            (None, None) => {}
            (Some(path), None) | (None, Some(path)) => {
                return Err(PdError::Tls {
                    path: path.clone(),
                    detail: "a client certificate and a client key must be given together".into(),
                });
            }
        }
        // Build a connector once against a placeholder address: this parses the certificates
        // and the key now, so that a bad file is reported here with its name.
        Endpoint::from_static("https://pd.invalid")
            .tls_config(tls.clone())
            .map_err(|e| PdError::Tls {
                path: self
                    .cert_path
                    .clone()
                    .unwrap_or_else(|| self.ca_path.clone()),
                detail: format!("rejected by rustls: {}", error_chain(&e)),
            })?;
        Ok(tls)
    }
}

/// Reads a PEM file and checks that it holds at least one block whose label ends with `label`
/// (so `PRIVATE KEY` accepts `RSA PRIVATE KEY` and `EC PRIVATE KEY`).
fn read_pem(path: &Path, what: &str, label: &str) -> Result<Vec<u8>, PdError> {
    let data = std::fs::read(path).map_err(|e| PdError::Tls {
        path: path.to_path_buf(),
        detail: format!("cannot read {what}: {e}"),
    })?;
    let text = String::from_utf8_lossy(&data);
    let found = text.lines().any(|line| {
        line.trim()
            .strip_prefix("-----BEGIN ")
            .and_then(|rest| rest.strip_suffix("-----"))
            .is_some_and(|l| l.ends_with(label))
    });
    if !found {
        return Err(PdError::Tls {
            path: path.to_path_buf(),
            detail: format!("no PEM \"{label}\" block found in the {what} file"),
        });
    }
    Ok(data)
}

/// An error and its sources on one line.
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_file(name: &str, contents: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("tidal-pd-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }

    #[test]
    fn missing_ca_file_is_a_clear_error() {
        let cfg = TlsConfig::with_ca("/nonexistent/tidal/ca.pem");
        let err = cfg.load().unwrap_err();
        match &err {
            PdError::Tls { path, detail } => {
                assert_eq!(path, Path::new("/nonexistent/tidal/ca.pem"));
                assert!(
                    detail.starts_with("cannot read CA certificate: "),
                    "{detail}"
                );
            }
            other => panic!("unexpected error {other:?}"),
        }
        assert!(err.to_string().contains("/nonexistent/tidal/ca.pem"));
    }

    #[test]
    fn ca_file_without_certificate_is_rejected() {
        let path = temp_file("not-a-cert.pem", "hello\n");
        let err = TlsConfig::with_ca(&path).load().unwrap_err();
        assert_eq!(
            err,
            PdError::Tls {
                path: path.clone(),
                detail: "no PEM \"CERTIFICATE\" block found in the CA certificate file".into()
            }
        );
    }

    #[test]
    fn cert_without_key_is_rejected() {
        let ca = temp_file(
            "ca-only.pem",
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        );
        let cfg = TlsConfig {
            ca_path: ca,
            cert_path: Some(PathBuf::from("/x/client.pem")),
            key_path: None,
        };
        let err = cfg.load().unwrap_err();
        assert_eq!(
            err,
            PdError::Tls {
                path: PathBuf::from("/x/client.pem"),
                detail: "a client certificate and a client key must be given together".into()
            }
        );
    }

    #[test]
    fn pem_labels_are_matched_by_suffix() {
        let key = temp_file(
            "key.pem",
            "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n",
        );
        assert!(read_pem(&key, "client private key", "PRIVATE KEY").is_ok());
        assert!(read_pem(&key, "client certificate", "CERTIFICATE").is_err());
    }
}
