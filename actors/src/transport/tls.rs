//! TLS (Qt's `QSslSocket` / `QSslServer`) with `tokio-rustls` and the `ring` provider, chosen
//! explicitly when each config is built, so another provider elsewhere in a program's
//! dependencies cannot make start-up panic.

use std::{fmt, io, path::Path, sync::Arc};

use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::{self, server::WebPkiClientVerifier, RootCertStore};

use super::Plain;
use crate::TlsError;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Result<Vec<_>, _> = CertificateDer::pem_file_iter(path)
        .map_err(|e| TlsError::file(path, e))?
        .collect();
    let certs = certs.map_err(|e| TlsError::file(path, e))?;
    if certs.is_empty() {
        return Err(TlsError::Config(format!(
            "{} holds no certificate",
            path.display()
        )));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::file(path, e))
}

fn roots_from(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs(path)? {
        roots
            .add(cert)
            .map_err(|e| TlsError::Config(format!("{}: {e}", path.display())))?;
    }
    Ok(roots)
}

/// Whether a TLS server lets clients resume earlier sessions (a shorter handshake, with no
/// certificate sent or checked again).
///
/// # Examples
///
/// ```no_run
/// use switchboard::{TlsAcceptor, TlsResumption};
/// let acceptor = TlsAcceptor::from_pem_files("cert.pem", "key.pem")
///     .unwrap()
///     .with_resumption(TlsResumption::Off)
///     .unwrap();
/// # let _ = acceptor;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum TlsResumption {
    /// Stateless session tickets (the default): the server keeps nothing per client; tickets
    /// are encrypted with ChaCha20-Poly1305 under keys made at start and rotated every 6 hours
    /// (so a restart, or another process, does not resume earlier sessions), and live 12
    /// hours at most.
    #[default]
    Tickets,
    /// No resumption: every handshake is a full one, and no ticket is sent.
    Off,
}

/// The server side of TLS: a certificate chain and key, optionally a CA that client
/// certificates must chain to (mutual TLS), ALPN protocols, and session resumption
/// ([`TlsResumption::Tickets`] unless [`with_resumption`](Self::with_resumption) says
/// otherwise).
///
/// # Examples
///
/// ```no_run
/// let acceptor = switchboard::TlsAcceptor::from_pem_files("cert.pem", "key.pem")
///     .unwrap()
///     .with_alpn(&["h2", "http/1.1"]);
/// # let _ = acceptor;
/// ```
#[derive(Clone)]
pub struct TlsAcceptor {
    config: Arc<rustls::ServerConfig>,
}

impl fmt::Debug for TlsAcceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsAcceptor")
            .field("alpn", &self.config.alpn_protocols)
            .finish()
    }
}

impl TlsAcceptor {
    /// A server with the certificate chain and private key in PEM files; no client
    /// certificates asked for.
    ///
    /// # Errors
    ///
    /// [`TlsError`] when a file cannot be read or parsed, or the key does not fit.
    pub fn from_pem_files(
        cert: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Result<TlsAcceptor, TlsError> {
        Self::build(cert.as_ref(), key.as_ref(), None)
    }

    /// As [`from_pem_files`](Self::from_pem_files), and every client must present a
    /// certificate that chains to a CA in `client_ca` (mutual TLS); its identity appears in
    /// [`SessionInfo::tls`](crate::SessionInfo::tls).
    ///
    /// # Errors
    ///
    /// As [`from_pem_files`](Self::from_pem_files).
    pub fn with_client_auth(
        cert: impl AsRef<Path>,
        key: impl AsRef<Path>,
        client_ca: impl AsRef<Path>,
    ) -> Result<TlsAcceptor, TlsError> {
        Self::build(cert.as_ref(), key.as_ref(), Some(client_ca.as_ref()))
    }

    fn build(cert: &Path, key: &Path, client_ca: Option<&Path>) -> Result<TlsAcceptor, TlsError> {
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?;
        let builder = match client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let verifier = WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots_from(ca)?),
                    provider(),
                )
                .build()
                .map_err(|e| TlsError::Config(e.to_string()))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let config = builder
            .with_single_cert(read_certs(cert)?, read_key(key)?)
            .map_err(|e| TlsError::Config(format!("certificate and key: {e}")))?;
        TlsAcceptor {
            config: Arc::new(config),
        }
        .with_resumption(TlsResumption::default())
    }

    /// Lets clients resume earlier sessions, or not (default: [`TlsResumption::Tickets`]).
    ///
    /// # Errors
    ///
    /// [`TlsError::Config`] when the ticket keys cannot be made (the system's random source
    /// failed).
    pub fn with_resumption(mut self, resumption: TlsResumption) -> Result<TlsAcceptor, TlsError> {
        let config = Arc::make_mut(&mut self.config);
        match resumption {
            TlsResumption::Tickets => {
                config.ticketer = rustls::crypto::ring::Ticketer::new()
                    .map_err(|e| TlsError::Config(format!("session tickets: {e}")))?;
                // Tickets carry the session: nothing to keep per client on this side.
                config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
                config.send_tls13_tickets = 2;
            }
            TlsResumption::Off => {
                config.ticketer = Arc::new(NoTickets);
                config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
                config.send_tls13_tickets = 0;
            }
        }
        Ok(self)
    }

    /// Offers these ALPN protocols, in order of preference.
    pub fn with_alpn(mut self, protocols: &[&str]) -> TlsAcceptor {
        let config = Arc::make_mut(&mut self.config);
        config.alpn_protocols = protocols.iter().map(|p| p.as_bytes().to_vec()).collect();
        self
    }

    pub(crate) async fn accept(&self, stream: Plain) -> io::Result<tokio_rustls::TlsStream<Plain>> {
        let acceptor = tokio_rustls::TlsAcceptor::from(self.config.clone());
        Ok(acceptor.accept(stream).await?.into())
    }
}

/// Tickets are never made (rustls's own "never" ticketer is not public).
#[derive(Debug)]
struct NoTickets;

impl rustls::server::ProducesTickets for NoTickets {
    fn enabled(&self) -> bool {
        false
    }
    fn lifetime(&self) -> u32 {
        0
    }
    fn encrypt(&self, _: &[u8]) -> Option<Vec<u8>> {
        None
    }
    fn decrypt(&self, _: &[u8]) -> Option<Vec<u8>> {
        None
    }
}

/// The client side of TLS: the roots server certificates must chain to (a CA file, or the
/// Mozilla roots from `webpki-roots`, compiled in so the result does not depend on the
/// machine), an optional client certificate, ALPN protocols, and a cache of sessions to
/// resume (256 servers by default; see
/// [`with_session_cache`](Self::with_session_cache)). Clones share the cache, so every
/// connection a [`Connector`](crate::Connector) makes with one `TlsConnector` can resume.
///
/// # Examples
///
/// ```
/// let connector = switchboard::TlsConnector::webpki_roots().with_alpn(&["h2"]);
/// # let _ = connector;
/// ```
#[derive(Clone)]
pub struct TlsConnector {
    config: Arc<rustls::ClientConfig>,
}

impl fmt::Debug for TlsConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConnector")
            .field("alpn", &self.config.alpn_protocols)
            .finish()
    }
}

impl TlsConnector {
    fn with_roots(
        roots: RootCertStore,
        identity: Option<(&Path, &Path)>,
    ) -> Result<TlsConnector, TlsError> {
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_root_certificates(roots);
        let config = match identity {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => builder
                .with_client_auth_cert(read_certs(cert)?, read_key(key)?)
                .map_err(|e| TlsError::Config(format!("client certificate and key: {e}")))?,
        };
        Ok(TlsConnector {
            config: Arc::new(config),
        })
    }

    /// Trusts the Mozilla root CAs (`webpki-roots`).
    pub fn webpki_roots() -> TlsConnector {
        let roots = RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        Self::with_roots(roots, None).expect("the default protocol versions are supported")
    }

    /// Trusts the CAs in a PEM file.
    ///
    /// # Errors
    ///
    /// [`TlsError`] when the file cannot be read or holds no usable certificate.
    pub fn from_ca_file(ca: impl AsRef<Path>) -> Result<TlsConnector, TlsError> {
        Self::with_roots(roots_from(ca.as_ref())?, None)
    }

    /// Trusts the CAs in `ca` and presents the client certificate in `cert` / `key`.
    ///
    /// # Errors
    ///
    /// As [`from_ca_file`](Self::from_ca_file), or when the certificate and key do not fit.
    pub fn with_client_cert(
        ca: impl AsRef<Path>,
        cert: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Result<TlsConnector, TlsError> {
        Self::with_roots(
            roots_from(ca.as_ref())?,
            Some((cert.as_ref(), key.as_ref())),
        )
    }

    /// Offers these ALPN protocols, in order of preference.
    pub fn with_alpn(mut self, protocols: &[&str]) -> TlsConnector {
        let config = Arc::make_mut(&mut self.config);
        config.alpn_protocols = protocols.iter().map(|p| p.as_bytes().to_vec()).collect();
        self
    }

    /// Keeps the sessions of up to `servers` server names to resume later (default 256,
    /// the oldest forgotten first); 0 turns resumption off. A new, empty cache either way.
    ///
    /// # Examples
    ///
    /// ```
    /// let connector = switchboard::TlsConnector::webpki_roots().with_session_cache(0);
    /// # let _ = connector;
    /// ```
    pub fn with_session_cache(mut self, servers: usize) -> TlsConnector {
        let config = Arc::make_mut(&mut self.config);
        config.resumption = if servers == 0 {
            rustls::client::Resumption::disabled()
        } else {
            rustls::client::Resumption::in_memory_sessions(servers)
        };
        self
    }

    pub(crate) async fn connect(
        &self,
        server_name: &str,
        stream: Plain,
    ) -> io::Result<tokio_rustls::TlsStream<Plain>> {
        let name = ServerName::try_from(server_name.to_string())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let connector = tokio_rustls::TlsConnector::from(self.config.clone());
        Ok(connector.connect(name, stream).await?.into())
    }
}

/// What a TLS session negotiated.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TlsInfo {
    /// The protocol version (`TLSv1_3`, `TLSv1_2`).
    pub version: String,
    /// The cipher suite.
    pub cipher_suite: String,
    /// The ALPN protocol agreed on, if any.
    pub alpn: Option<String>,
    /// The server name the client asked for (SNI), on the server side.
    pub server_name: Option<String>,
    /// The peer certificate's subject, when the peer presented one (mutual TLS on the server
    /// side; the server's certificate on the client side).
    pub peer_subject: Option<String>,
    /// The peer certificate's DNS and IP subject alternative names.
    pub peer_names: Vec<String>,
    /// Whether the handshake resumed an earlier session rather than running in full.
    pub resumed: bool,
}

impl TlsInfo {
    pub(crate) fn of(stream: &tokio_rustls::TlsStream<Plain>) -> TlsInfo {
        let (version, suite, alpn, peer, sni, kind) = match stream {
            tokio_rustls::TlsStream::Server(s) => {
                let c = s.get_ref().1;
                (
                    c.protocol_version(),
                    c.negotiated_cipher_suite(),
                    c.alpn_protocol().map(<[u8]>::to_vec),
                    c.peer_certificates().and_then(|c| c.first().cloned()),
                    c.server_name().map(str::to_string),
                    c.handshake_kind(),
                )
            }
            tokio_rustls::TlsStream::Client(s) => {
                let c = s.get_ref().1;
                (
                    c.protocol_version(),
                    c.negotiated_cipher_suite(),
                    c.alpn_protocol().map(<[u8]>::to_vec),
                    c.peer_certificates().and_then(|c| c.first().cloned()),
                    None,
                    c.handshake_kind(),
                )
            }
        };
        let (peer_subject, peer_names) = peer.as_ref().map(identity).unwrap_or_default();
        TlsInfo {
            version: version.map(|v| format!("{v:?}")).unwrap_or_default(),
            cipher_suite: suite
                .map(|s| format!("{:?}", s.suite()))
                .unwrap_or_default(),
            alpn: alpn.map(|p| String::from_utf8_lossy(&p).into_owned()),
            server_name: sni,
            peer_subject,
            peer_names,
            resumed: kind == Some(rustls::HandshakeKind::Resumed),
        }
    }
}

/// A certificate's subject and subject alternative names.
fn identity(cert: &CertificateDer<'_>) -> (Option<String>, Vec<String>) {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let Ok((_, parsed)) = X509Certificate::from_der(cert.as_ref()) else {
        return (None, Vec::new());
    };
    let mut names = Vec::new();
    if let Ok(Some(san)) = parsed.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(dns) => names.push((*dns).to_string()),
                GeneralName::IPAddress(ip) => match ip.len() {
                    4 => names.push(
                        std::net::Ipv4Addr::from(<[u8; 4]>::try_from(*ip).unwrap_or_default())
                            .to_string(),
                    ),
                    16 => names.push(
                        std::net::Ipv6Addr::from(<[u8; 16]>::try_from(*ip).unwrap_or_default())
                            .to_string(),
                    ),
                    _ => {}
                },
                _ => {}
            }
        }
    }
    (Some(parsed.subject().to_string()), names)
}
