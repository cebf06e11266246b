//! Lines from stdin, read on a plain thread and handed to async code through a bounded channel.
//!
//! Reading stdin blocks, so it gets a thread of its own (not tokio's blocking pool, whose
//! threads the runtime waits for on exit). When the channel is full the thread stops reading:
//! a fast pipe into stdin is paced by the connection it feeds.

use std::io::{self, BufRead};

use tokio::sync::mpsc;

/// Starts the reader thread. Each item is one line without its `\n` (and without a `\r` right
/// before it). The channel closes when stdin ends or fails.
///
/// # Errors
///
/// The thread could not be started.
pub(crate) fn lines() -> io::Result<mpsc::Receiver<Vec<u8>>> {
    let (tx, rx) = mpsc::channel(64);
    std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || {
            let stdin = io::stdin();
            let mut stdin = stdin.lock();
            loop {
                let mut line = Vec::new();
                match stdin.read_until(b'\n', &mut line) {
                    Ok(0) => break,
                    Ok(_) => {
                        if line.last() == Some(&b'\n') {
                            line.pop();
                            if line.last() == Some(&b'\r') {
                                line.pop();
                            }
                        }
                        if tx.blocking_send(line).is_err() {
                            break;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(error) => {
                        // EIO: a background process reading its terminal.
                        tracing::info!(%error, "cannot read stdin; ignoring it");
                        break;
                    }
                }
            }
        })?;
    Ok(rx)
}
