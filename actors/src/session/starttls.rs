//! STARTTLS (Qt's `startServerEncryption` / `startClientEncryption`): a running plaintext
//! session upgraded to TLS in place.
//!
//! The switch happens at one point in the byte streams, in both directions:
//! - **Out:** what was written before the call goes out in plaintext; the session flushes that
//!   much, then starts the handshake. What is written after the call (answers, `Write`, registry
//!   deliveries) waits in the write buffer and goes out encrypted.
//! - **In:** no frame is decoded after the call. Bytes already read but not decoded (a client
//!   that sent its ClientHello right behind the command) are handed to the TLS handshake, not
//!   read as plaintext.
//!
//! The handshake runs inside the session's driver under the handshake timeout; a failure ends
//! the session with [`DisconnectReason::Tls`] or [`DisconnectReason::HandshakeTimeout`].

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{self, Poll},
};

use actix::{Context, Handler, Message, ResponseFuture};
use tokio::sync::oneshot;

use super::{DisconnectReason, Flags, Rare, Session, SessionCodec, SessionHandler, State};
use crate::{
    transport::{Prefixed, Stream},
    SessionError, TlsAcceptor, TlsConnector, TlsInfo,
};

/// Which end of the TLS handshake this session plays.
#[derive(Debug, Clone)]
enum Side {
    Server(TlsAcceptor),
    Client {
        connector: TlsConnector,
        server_name: String,
    },
}

type Handshake = Pin<Box<dyn Future<Output = Result<Stream, DisconnectReason>>>>;

/// An upgrade asked for and not finished yet.
pub(crate) struct Upgrade {
    /// Bytes at the front of the write buffer that were written before the upgrade was asked
    /// for: they go out in plaintext before the handshake starts.
    pub(super) plaintext: usize,
    side: Side,
    handshake: Option<Handshake>,
    /// `StartTls` senders waiting for the outcome.
    waiters: Vec<oneshot::Sender<Result<TlsInfo, SessionError>>>,
}

impl std::fmt::Debug for Upgrade {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upgrade")
            .field("plaintext", &self.plaintext)
            .field("side", &self.side)
            .field("handshaking", &self.handshake.is_some())
            .finish()
    }
}

impl<C: SessionCodec> super::Core<C> {
    /// Asks for the upgrade; the driver carries it out.
    fn request_upgrade(&mut self, side: Side) -> Result<(), SessionError> {
        if self.upgrade().is_some() || self.meta.tls().is_some() {
            return Err(SessionError::AlreadyEncrypted);
        }
        if self.state != State::Open || !self.takes_writes() || self.flags.has(Flags::EOF) {
            return Err(SessionError::Closing);
        }
        if !matches!(self.stream, Some(Stream::Plain(_))) {
            // Only the in-memory test stream gets here.
            return Err(SessionError::AlreadyEncrypted);
        }
        self.rare().upgrade = Some(Box::new(Upgrade {
            plaintext: self.write_buf.len(),
            side,
            handshake: None,
            waiters: Vec::new(),
        }));
        Ok(())
    }
}

impl<C: SessionCodec, H: SessionHandler<C>> super::Conn<'_, C, H> {
    /// Starts TLS as the server on this plaintext session (Qt's `startServerEncryption`):
    /// what was written before this call goes out in plaintext, then the handshake runs, and
    /// what is written afterwards goes out encrypted. No frame is decoded until the handshake
    /// is done; bytes already read behind the current frame go to the handshake.
    /// [`SessionHandler::encrypted`] is called once it succeeds; a failed or timed-out
    /// handshake ends the session with [`DisconnectReason::Tls`] or
    /// [`DisconnectReason::HandshakeTimeout`].
    ///
    /// # Errors
    ///
    /// [`SessionError::AlreadyEncrypted`] when the session runs over TLS already or an upgrade
    /// is under way, [`SessionError::Closing`] once it is closing or its peer finished sending.
    ///
    /// # Examples
    ///
    /// A line protocol whose `STARTTLS` command switches to TLS after the `OK`:
    ///
    /// ```
    /// use switchboard::{Conn, SessionHandler, TlsAcceptor};
    /// use switchboard_codec::Lines;
    ///
    /// struct Smtpish {
    ///     tls: TlsAcceptor,
    /// }
    ///
    /// impl SessionHandler<Lines> for Smtpish {
    ///     fn ready_read(&mut self, line: String, conn: &mut Conn<'_, Lines, Self>) {
    ///         if line == "STARTTLS" && !conn.transport().is_tls() {
    ///             let _ = conn.write("OK".to_string()); // plaintext: written before the call
    ///             if conn.start_server_encryption(&self.tls).is_err() {
    ///                 conn.disconnect_from_host();
    ///             }
    ///         } else {
    ///             let _ = conn.write(line);
    ///         }
    ///     }
    /// }
    /// # let _ = |tls: TlsAcceptor| Smtpish { tls };
    /// ```
    pub fn start_server_encryption(&mut self, acceptor: &TlsAcceptor) -> Result<(), SessionError> {
        self.core.request_upgrade(Side::Server(acceptor.clone()))
    }

    /// Starts TLS as the client on this plaintext session (Qt's `startClientEncryption`),
    /// verifying the server's certificate against `server_name`; otherwise as
    /// [`start_server_encryption`](Self::start_server_encryption).
    ///
    /// # Errors
    ///
    /// As [`start_server_encryption`](Self::start_server_encryption).
    pub fn start_client_encryption(
        &mut self,
        connector: &TlsConnector,
        server_name: &str,
    ) -> Result<(), SessionError> {
        self.core.request_upgrade(Side::Client {
            connector: connector.clone(),
            server_name: server_name.to_string(),
        })
    }

    /// Whether an upgrade to TLS was asked for and has not finished yet.
    pub fn is_encrypting(&self) -> bool {
        self.core.upgrade().is_some()
    }
}

/// Upgrades a running plaintext session to TLS from outside (as
/// [`Conn::start_server_encryption`](crate::Conn::start_server_encryption) /
/// [`Conn::start_client_encryption`](crate::Conn::start_client_encryption)); resolves with what
/// TLS negotiated once the handshake is done.
///
/// # Errors
///
/// [`SessionError::AlreadyEncrypted`], [`SessionError::Closing`], or
/// [`SessionError::Handshake`] with the reason the session ended when the handshake failed.
///
/// # Examples
///
/// ```no_run
/// # #[allow(dead_code)]
/// # async fn demo<H: switchboard::SessionHandler<switchboard_codec::Lines>>(
/// #     session: actix::Addr<switchboard::Session<switchboard_codec::Lines, H>>) {
/// use switchboard::{StartTls, TlsConnector};
///
/// let connector = TlsConnector::from_ca_file("ca.pem").unwrap();
/// let info = session
///     .send(StartTls::client(connector, "localhost"))
///     .await
///     .unwrap()
///     .unwrap();
/// println!("now over {} with {}", info.version, info.cipher_suite);
/// # }
/// ```
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<TlsInfo, SessionError>")]
pub struct StartTls(Side);

impl StartTls {
    /// Plays the server's end of the handshake.
    pub fn server(acceptor: TlsAcceptor) -> StartTls {
        StartTls(Side::Server(acceptor))
    }

    /// Plays the client's end, verifying the server's certificate against `server_name`.
    pub fn client(connector: TlsConnector, server_name: impl Into<String>) -> StartTls {
        StartTls(Side::Client {
            connector,
            server_name: server_name.into(),
        })
    }
}

impl<C: SessionCodec, H: SessionHandler<C>> Handler<StartTls> for Session<C, H> {
    type Result = ResponseFuture<Result<TlsInfo, SessionError>>;

    fn handle(&mut self, StartTls(side): StartTls, _ctx: &mut Context<Self>) -> Self::Result {
        if let Err(error) = self.core.request_upgrade(side) {
            return Box::pin(async move { Err(error) });
        }
        let (tx, rx) = oneshot::channel();
        if let Some(upgrade) = self.core.upgrade_mut() {
            upgrade.waiters.push(tx);
        }
        Box::pin(async move { rx.await.unwrap_or(Err(SessionError::Gone)) })
    }
}

impl<C: SessionCodec, H: SessionHandler<C>> Session<C, H> {
    /// Carries an asked-for upgrade forward: once the plaintext part of the write buffer is
    /// out, starts the handshake over the socket (with the bytes read but not decoded in
    /// front), and installs the TLS stream when it is done. Ready once the upgrade is over
    /// (done, or the session failed).
    pub(super) fn poll_upgrade(
        &mut self,
        ctx: &mut Context<Self>,
        cx: &mut task::Context<'_>,
    ) -> Poll<()> {
        let Some(upgrade) = Rare::upgrade_in(&mut self.core.rare) else {
            return Poll::Ready(());
        };
        if upgrade.handshake.is_none() {
            if upgrade.plaintext > 0 {
                // The flush stopped on a full socket, which wakes the driver when writable.
                return Poll::Pending;
            }
            let Some(Stream::Plain(plain)) = self.core.stream.take() else {
                // Checked when the upgrade was asked for; the stream has not changed since.
                self.fail_upgrade(DisconnectReason::Closed, ctx);
                return Poll::Ready(());
            };
            let early = self.core.read_buf.split().freeze();
            self.core.flags.set(Flags::NEEDS_DATA, true);
            let plain = Prefixed::wrap(early, plain);
            let timeout = self.core.config.handshake_timeout;
            let side = upgrade.side.clone();
            upgrade.handshake = Some(Box::pin(async move {
                let run = async {
                    match &side {
                        Side::Server(acceptor) => acceptor.accept(plain).await,
                        Side::Client {
                            connector,
                            server_name,
                        } => connector.connect(server_name, plain).await,
                    }
                };
                match tokio::time::timeout(timeout, run).await {
                    Ok(Ok(tls)) => Ok(Stream::Tls(Box::new(tls))),
                    Ok(Err(error)) => Err(DisconnectReason::Tls(Arc::new(error))),
                    Err(_) => Err(DisconnectReason::HandshakeTimeout),
                }
            }));
        }
        let Some(handshake) = upgrade.handshake.as_mut() else {
            return Poll::Ready(());
        };
        let outcome = match handshake.as_mut().poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(outcome) => outcome,
        };
        match outcome {
            Ok(stream) => {
                let info = stream.tls_info();
                self.core.stream = Some(stream);
                let upgrade = self.core.take_upgrade();
                if let Some(info) = info {
                    tracing::debug!(version = %info.version, cipher = %info.cipher_suite, "STARTTLS done");
                    self.core.meta.set_tls(info.clone());
                    for waiter in upgrade.into_iter().flat_map(|u| u.waiters) {
                        let _ = waiter.send(Ok(info.clone()));
                    }
                    self.call(ctx, |h, c| h.encrypted(&info, c));
                }
            }
            Err(reason) => {
                tracing::debug!(%reason, "STARTTLS failed");
                self.fail_upgrade(reason, ctx);
            }
        }
        Poll::Ready(())
    }

    fn fail_upgrade(&mut self, reason: DisconnectReason, ctx: &mut Context<Self>) {
        if let Some(upgrade) = self.core.take_upgrade() {
            for waiter in upgrade.waiters {
                let _ = waiter.send(Err(SessionError::Handshake(reason.clone())));
            }
        }
        self.fail(reason, ctx);
    }
}
