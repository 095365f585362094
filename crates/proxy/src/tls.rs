//! TLS: termination on listeners and origination to upstreams (rustls).
//!
//! A TLS listener offers ALPN `h2` only, over TLS 1.3 and 1.2. That is what a
//! Classic ELB could not do for gRPC ("Missing selected ALPN property"): a
//! gRPC client insists that the server select `h2`. A client that offers only
//! other protocols is refused in the handshake with the `no_application_protocol`
//! alert; one that offers none gets the same treatment as on a cleartext port
//! (HTTP/1.x is answered 505).
//!
//! Certificates are reloaded without dropping connections: every handshake
//! takes the configuration current at that moment, and a reload (SIGHUP, or
//! the files changing on disk) swaps it. A reload that fails (a half-written
//! file, a key that does not match) keeps the old certificate and says why.

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// The ALPN protocol id of HTTP/2.
pub const H2: &[u8] = b"h2";
/// The ALPN protocol id of HTTP/1.1, offered (after h2) on listeners that
/// serve gRPC-Web.
pub const HTTP11: &[u8] = b"http/1.1";

/// A TLS file or setting that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("no {what} found in {path} (expected PEM)")]
    Empty { what: &'static str, path: PathBuf },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("the key {key} does not belong to the certificate {cert}")]
    Mismatch { cert: PathBuf, key: PathBuf },
    #[error("TLS set-up failed: {0}")]
    Rustls(#[from] rustls::Error),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let what = "certificate chain";
    let bytes = std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_owned(),
        source,
    })?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Invalid {
            path: path.to_owned(),
            message: format!("not a PEM certificate chain: {e}"),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Empty {
            what,
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = std::fs::read(path).map_err(|source| TlsError::Read {
        what: "private key",
        path: path.to_owned(),
        source,
    })?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|_| TlsError::Empty {
        what: "private key",
        path: path.to_owned(),
    })
}

/// A server configuration for `cert` (a PEM chain, leaf first) and `key`.
pub fn server_config(cert: &Path, key: &Path) -> Result<rustls::ServerConfig, TlsError> {
    let certs = read_certs(cert)?;
    let private_key = read_key(key)?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_single_cert(certs, private_key)
        .map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => TlsError::Mismatch {
                cert: cert.to_owned(),
                key: key.to_owned(),
            },
            other => TlsError::Invalid {
                path: key.to_owned(),
                message: other.to_string(),
            },
        })?;
    config.alpn_protocols = vec![H2.to_vec()];
    Ok(config)
}

/// A client configuration trusting the roots in `ca`, offering ALPN h2.
pub fn client_config(ca: &Path) -> Result<rustls::ClientConfig, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in read_certs(ca)? {
        roots.add(cert).map_err(|e| TlsError::Invalid {
            path: ca.to_owned(),
            message: format!("not a usable CA certificate: {e}"),
        })?;
    }
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![H2.to_vec()];
    Ok(config)
}

/// A listener's certificate, swapped on reload.
#[derive(Debug)]
pub struct ServerTls {
    cert: PathBuf,
    key: PathBuf,
    current: ArcSwap<Offers>,
    /// Modification times of the files when last loaded.
    loaded: Mutex<(Option<SystemTime>, Option<SystemTime>)>,
}

/// One certificate's server configurations: ALPN h2 only, and h2 then
/// http/1.1 (for gRPC-Web listeners; rustls picks the server's first that
/// the client offers, so h2 wherever the client has it).
#[derive(Debug)]
struct Offers {
    h2: Arc<rustls::ServerConfig>,
    h2_http11: Arc<rustls::ServerConfig>,
}

impl Offers {
    fn new(config: rustls::ServerConfig) -> Self {
        let mut both = config.clone();
        both.alpn_protocols = vec![H2.to_vec(), HTTP11.to_vec()];
        Offers {
            h2: Arc::new(config),
            h2_http11: Arc::new(both),
        }
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

impl ServerTls {
    pub fn load(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let stamps = (modified(cert), modified(key));
        let config = server_config(cert, key)?;
        Ok(ServerTls {
            cert: cert.to_owned(),
            key: key.to_owned(),
            current: ArcSwap::from_pointee(Offers::new(config)),
            loaded: Mutex::new(stamps),
        })
    }

    /// The acceptor for the next handshake, offering http/1.1 after h2 when
    /// `http1` (the listener serves gRPC-Web).
    pub fn acceptor(&self, http1: bool) -> tokio_rustls::TlsAcceptor {
        let offers = self.current.load();
        tokio_rustls::TlsAcceptor::from(Arc::clone(if http1 {
            &offers.h2_http11
        } else {
            &offers.h2
        }))
    }

    /// Loads the files again; on failure the old certificate stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let stamps = (modified(&self.cert), modified(&self.key));
        let config = server_config(&self.cert, &self.key)?;
        self.current.store(Arc::new(Offers::new(config)));
        *self.loaded.lock().unwrap_or_else(PoisonError::into_inner) = stamps;
        Ok(())
    }

    /// Whether either file changed on disk since the last (attempted) load.
    pub fn changed_on_disk(&self) -> bool {
        let now = (modified(&self.cert), modified(&self.key));
        let mut loaded = self.loaded.lock().unwrap_or_else(PoisonError::into_inner);
        if *loaded == now {
            return false;
        }
        // Remember it, so that a file that fails to load is not retried in a loop.
        *loaded = now;
        true
    }

    pub fn cert_path(&self) -> &Path {
        &self.cert
    }
}

/// TLS towards a cluster's hosts.
#[derive(Clone)]
pub struct ClientTls {
    connector: tokio_rustls::TlsConnector,
    /// The name to verify (and send as SNI); the upstream's host name if None.
    server_name: Option<String>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl ClientTls {
    pub fn new(ca: &Path, server_name: Option<String>) -> Result<Self, TlsError> {
        Ok(ClientTls {
            connector: tokio_rustls::TlsConnector::from(Arc::new(client_config(ca)?)),
            server_name,
        })
    }

    /// Runs the handshake with a host known by `hostname` (a DNS name or an IP).
    pub async fn connect(&self, tcp: TcpStream, hostname: &str) -> Result<Io, String> {
        let name = self.server_name.as_deref().unwrap_or(hostname);
        let server_name = ServerName::try_from(name.to_owned())
            .map_err(|_| format!("{name:?} is not a valid TLS server name"))?;
        let tls = self
            .connector
            .connect(server_name, tcp)
            .await
            .map_err(|e| format!("TLS handshake with {name}: {e}"))?;
        if tls.get_ref().1.alpn_protocol() != Some(H2) {
            return Err(format!("{name} did not select ALPN h2"));
        }
        Ok(Io::ClientTls(Box::new(tls)))
    }
}

/// A connection, with or without TLS.
#[derive(Debug)]
pub enum Io {
    Plain(TcpStream),
    ClientTls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::ClientTls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::ClientTls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::ClientTls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }
    fn is_write_vectored(&self) -> bool {
        match self {
            Io::Plain(s) => s.is_write_vectored(),
            Io::ClientTls(s) => s.is_write_vectored(),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::ClientTls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::ClientTls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
