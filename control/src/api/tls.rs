//! HTTPS for the API: loading a PEM certificate chain and key, and a TLS listener for axum.
//!
//! The API carries credentials (basic auth, sink URIs in create requests), so when a
//! certificate is configured the node serves HTTPS only: a plain-HTTP request to the port fails
//! the handshake and is dropped. rustls with the `ring` provider is used explicitly (never the
//! process-wide default provider), because other crates in the process may enable a different
//! one.
//!
//! Handshakes run in their own tasks with a deadline, so a client that connects and sends
//! nothing cannot hold up other connections; only completed handshakes reach the HTTP server.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// How long a client may take to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Completed handshakes waiting for the HTTP server to pick them up.
const ACCEPT_QUEUE: usize = 64;

/// Why the certificate or key could not be used. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file could not be read.
    #[error("{what} {path}: cannot read: {source}")]
    Read {
        /// `tls-cert` or `tls-key`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid PEM of the expected kind.
    #[error("{what} {path}: {detail}")]
    Invalid {
        /// `tls-cert` or `tls-key`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// rustls refused the pair (e.g. the key does not match the certificate).
    #[error("tls-cert {cert} / tls-key {key}: {detail}")]
    Config {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What rustls said.
        detail: String,
    },
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })
}

/// Parses a PEM certificate chain (leaf first). `path` is only for error messages.
pub fn parse_cert_chain(pem: &[u8], path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let invalid = |detail: String| TlsError::Invalid {
        what: "tls-cert",
        path: path.to_path_buf(),
        detail,
    };
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(format!("invalid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(invalid("no CERTIFICATE block found".into()));
    }
    Ok(certs)
}

/// Parses a PEM private key (PKCS#8, PKCS#1 or SEC1). `path` is only for error messages.
pub fn parse_private_key(pem: &[u8], path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| TlsError::Invalid {
        what: "tls-key",
        path: path.to_path_buf(),
        detail: match e {
            rustls::pki_types::pem::Error::NoItemsFound => "no PRIVATE KEY block found".into(),
            e => format!("invalid PEM: {e}"),
        },
    })
}

/// Builds the rustls server configuration from in-memory PEM (ALPN offers HTTP/1.1).
pub fn server_config_from_pem(
    cert_pem: &[u8],
    key_pem: &[u8],
    cert_path: &Path,
    key_path: &Path,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let certs = parse_cert_chain(cert_pem, cert_path)?;
    let key = parse_private_key(key_pem, key_path)?;
    let config_err = |detail: String| TlsError::Config {
        cert: cert_path.to_path_buf(),
        key: key_path.to_path_buf(),
        detail,
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| config_err(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| config_err(e.to_string()))?;
    // The router is served with HTTP/1.1 only (axum without its `http2` feature): offering h2
    // would let clients such as curl negotiate a protocol the server then cannot speak.
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// Reads `cert` and `key` (PEM files) into a rustls server configuration.
pub fn load_server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let cert_pem = read("tls-cert", cert)?;
    let key_pem = read("tls-key", key)?;
    server_config_from_pem(&cert_pem, &key_pem, cert, key)
}

/// A listener that yields TLS streams; plug it into `axum::serve`.
#[derive(Debug)]
pub struct TlsListener {
    local: SocketAddr,
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    acceptor_task: JoinHandle<()>,
}

impl TlsListener {
    /// Wraps a bound TCP listener; starts accepting at once (handshakes run in the background).
    pub fn new(listener: TcpListener, config: Arc<rustls::ServerConfig>) -> std::io::Result<Self> {
        let local = listener.local_addr()?;
        let (tx, ready) = mpsc::channel(ACCEPT_QUEUE);
        let acceptor = TlsAcceptor::from(config);
        let acceptor_task = tokio::spawn(accept_loop(listener, acceptor, tx));
        Ok(TlsListener {
            local,
            ready,
            acceptor_task,
        })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.acceptor_task.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    tx: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "API accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if tx.is_closed() {
            return;
        }
        let acceptor = acceptor.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => {
                    let _ = tx.send((tls, peer)).await;
                }
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                }
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The accept loop only ends when this listener is dropped; never yield then.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_file() {
        let p = Path::new("/nonexistent/cert.pem");
        let e = load_server_config(p, Path::new("/nonexistent/key.pem")).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.starts_with("tls-cert /nonexistent/cert.pem: cannot read"),
            "{msg}"
        );

        let e = parse_cert_chain(b"hello", Path::new("c.pem")).unwrap_err();
        assert_eq!(e.to_string(), "tls-cert c.pem: no CERTIFICATE block found");
        let e = parse_private_key(b"", Path::new("k.pem")).unwrap_err();
        assert_eq!(e.to_string(), "tls-key k.pem: no PRIVATE KEY block found");
        let bad = b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n";
        let e = parse_cert_chain(bad, Path::new("c.pem")).unwrap_err();
        assert!(
            e.to_string().starts_with("tls-cert c.pem: invalid PEM"),
            "{e}"
        );
    }

    #[test]
    fn valid_pair_builds_http1_config() {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let cert = ck.cert.pem();
        let key = ck.key_pair.serialize_pem();
        let cfg = server_config_from_pem(
            cert.as_bytes(),
            key.as_bytes(),
            Path::new("c.pem"),
            Path::new("k.pem"),
        )
        .unwrap();
        assert_eq!(cfg.alpn_protocols, vec![b"http/1.1".to_vec()]);
        // A key of another certificate is refused, naming both files.
        let other = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let e = server_config_from_pem(
            cert.as_bytes(),
            other.key_pair.serialize_pem().as_bytes(),
            Path::new("c.pem"),
            Path::new("k.pem"),
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("tls-cert c.pem / tls-key k.pem: "),
            "{e}"
        );
    }

    #[test]
    fn mismatched_or_garbage_der_is_refused() {
        // Well-formed PEM whose content is not a certificate/key that rustls accepts.
        let cert = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let key = b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        let e =
            server_config_from_pem(cert, key, Path::new("c.pem"), Path::new("k.pem")).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("tls-cert c.pem / tls-key k.pem: "),
            "{e}"
        );
    }
}
