//! A TLS echo server and client in one program (Qt's `QSslServer` / `QSslSocket`).
//!
//! ```text
//! cargo run -p switchboard --example tls_echo -- CERT.pem KEY.pem CA.pem
//! ```
//!
//! It serves TLS on 127.0.0.1 (an OS port) with the certificate and key given, connects to
//! itself trusting CA.pem, sends one line, prints the echo and what TLS negotiated, and exits.
//! The certificate must name `localhost`. To make a test set with openssl:
//!
//! ```text
//! openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
//!     -subj /CN=localhost -addext subjectAltName=DNS:localhost -keyout key.pem -out cert.pem
//! cargo run -p switchboard --example tls_echo -- cert.pem key.pem cert.pem
//! ```
//!
//! The handshake is no concern of the handlers: it runs on the session's worker before the
//! session starts, under the handshake timeout (10 s by default), and a failed one ends that
//! connection alone with `DisconnectReason::Tls`.

use std::time::Duration;

use switchboard::{
    Conn, Connector, DisconnectReason, Listener, SessionHandler, SessionInfo, TlsAcceptor,
    TlsConnector,
};
use switchboard_codec::Lines;
use tokio::sync::oneshot;

/// Writes every line back.
struct Echo;

impl SessionHandler<Lines> for Echo {
    fn ready_read(&mut self, line: String, conn: &mut Conn<'_, Lines, Self>) {
        let _ = conn.write(line);
    }
}

/// Says one line, reports the answer and the session's TLS details, closes.
struct Client(Option<oneshot::Sender<(String, SessionInfo)>>);

impl SessionHandler<Lines> for Client {
    fn connected(&mut self, conn: &mut Conn<'_, Lines, Self>) {
        let _ = conn.write("hello over TLS");
    }
    fn ready_read(&mut self, line: String, conn: &mut Conn<'_, Lines, Self>) {
        if let Some(done) = self.0.take() {
            let _ = done.send((line, conn.info()));
        }
        conn.disconnect_from_host();
    }
    fn disconnected(&mut self, reason: &DisconnectReason, _: &SessionInfo) {
        if self.0.is_some() {
            eprintln!("the client ended before an answer: {reason}");
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [cert, key, ca] = args.as_slice() else {
        return Err("usage: tls_echo CERT.pem KEY.pem CA.pem".into());
    };
    actix_rt::System::new().block_on(async {
        let server = Listener::bind("127.0.0.1:0")
            .workers(1)
            .tls(TlsAcceptor::from_pem_files(cert, key)?)
            .serve(Lines::new(), || Echo)?;
        let port = server.local_addr().port();
        println!("listening on tls://127.0.0.1:{port}");
        let (done, answer) = oneshot::channel();
        Connector::new()
            .tls(TlsConnector::from_ca_file(ca)?)
            // The host name is what the server's certificate is checked against.
            .connect(("localhost", port), Lines::new(), Client(Some(done)))
            .await?;
        let (line, info) = tokio::time::timeout(Duration::from_secs(10), answer).await??;
        println!("echo: {line}");
        if let Some(tls) = info.tls {
            println!("tls: {} {}", tls.version, tls.cipher_suite);
        }
        server.shutdown(Duration::from_secs(2)).await;
        Ok(())
    })
}
