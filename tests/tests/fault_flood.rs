//! A connection flood beyond `--max-connections` against the real `switchboard serve`: 300
//! clients against a limit of 50. The server holds the limit (exactly 50 are served, its
//! descriptor count never passes 50 connections), does not crash, serves the waiting clients as
//! the first ones leave, and serves a new client once the flood is gone; SIGTERM then ends it
//! with its summary, having served every client of the flood.
//!
//! `limits_max_connections.rs` proves the limit in-process with a handful of clients.

#[path = "cli_support.rs"]
mod cli_support;

use std::{
    collections::HashMap,
    net::SocketAddr,
    time::{Duration, Instant},
};

use cli_support::{Server, STEP};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::TcpStream,
    sync::{mpsc, oneshot},
};

const MAX: usize = 50;
const FLOOD: usize = 300;
/// How long the test watches for a client over the limit being served (it must not be).
const SILENCE: Duration = Duration::from_millis(500);

fn descriptors(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// A flood client: connects, sends one line, reports when it is answered, then holds its
/// connection until `leave` fires (or is dropped). Leaving closes its side (the server sees
/// the same FIN a dropped socket sends) and then waits for the server to close the connection,
/// so the task ends only once the server has accepted it and finished with it.
async fn client(
    i: usize,
    addr: SocketAddr,
    served: mpsc::UnboundedSender<usize>,
    mut leave: oneshot::Receiver<()>,
) {
    let stream = tokio::time::timeout(STEP, TcpStream::connect(addr))
        .await
        .expect("the backlog takes every handshake")
        .expect("connect");
    let mut stream = BufReader::new(stream);
    let line = format!("flood client {i}\n");
    stream.get_mut().write_all(line.as_bytes()).await.unwrap();
    let mut reply = String::new();
    tokio::select! {
        read = stream.read_line(&mut reply) => {
            if read.is_ok() && reply == line {
                let _ = served.send(i);
            }
            let _ = (&mut leave).await;
        }
        _ = &mut leave => {}
    }
    let _ = stream.get_mut().shutdown().await;
    // Whatever the server still sends (its echo, if it had not answered before), then its
    // close; an error (a reset) ends it too.
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(STEP, stream.read_to_end(&mut rest))
        .await
        .expect("the server closes every connection of the flood once its client has left");
}

async fn next_served(served: &mut mpsc::UnboundedReceiver<usize>) -> usize {
    tokio::time::timeout(STEP, served.recv())
        .await
        .expect("a client over the limit served in time")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flood_beyond_max_connections_is_held_and_served_as_clients_leave() {
    let max = MAX.to_string();
    let server = Server::start(&[
        "--mode",
        "echo",
        "--workers",
        "2",
        "--max-connections",
        &max,
    ]);
    let pid = server.proc.pid();
    let idle = descriptors(pid);

    let (served_tx, mut served) = mpsc::unbounded_channel();
    let mut leave = HashMap::new();
    let mut clients = Vec::new();
    let started = Instant::now();
    for i in 0..FLOOD {
        let (tx, rx) = oneshot::channel();
        leave.insert(i, tx);
        clients.push(tokio::spawn(client(i, server.addr, served_tx.clone(), rx)));
    }

    // Exactly the limit is served...
    let mut first = Vec::new();
    for _ in 0..MAX {
        first.push(next_served(&mut served).await);
    }
    let at_limit = started.elapsed();
    // ...and no more, while the other 250 wait in the kernel backlog.
    let extra = tokio::time::timeout(SILENCE, served.recv()).await;
    assert!(extra.is_err(), "client {extra:?} served over the limit");
    let held = descriptors(pid);
    assert!(
        held <= idle + MAX,
        "{held} descriptors open, {idle} idle + {MAX} connections"
    );
    assert!(
        held >= idle + MAX,
        "{held} descriptors: the limit is not full"
    );

    // The first 50 leave: the next 50 are served, and still no more.
    for i in &first {
        let _ = leave.remove(i).unwrap().send(());
    }
    let mut second = Vec::new();
    for _ in 0..MAX {
        second.push(next_served(&mut served).await);
    }
    let extra = tokio::time::timeout(SILENCE, served.recv()).await;
    assert!(extra.is_err(), "client {extra:?} served over the limit");
    assert!(descriptors(pid) <= idle + MAX);

    // Everyone leaves, and the server accepts and ends every waiting connection: before the
    // late client, or shutting down right after it is served could find some of them still
    // starting (those and the late one can be accepted in one batch and run on two workers).
    drop(leave);
    for client in clients {
        client.await.expect("flood client");
    }
    // A new client is served at once.
    let (late_tx, mut late_served) = mpsc::unbounded_channel();
    let (late_leave, late_rx) = oneshot::channel();
    tokio::spawn(client(FLOOD, server.addr, late_tx, late_rx));
    assert_eq!(next_served(&mut late_served).await, FLOOD);
    let _ = late_leave.send(());
    let peak = held;

    let finished = tokio::task::spawn_blocking(move || server.terminate())
        .await
        .unwrap();
    assert!(finished.status.success(), "{finished:?}");
    let summary = finished
        .stdout
        .iter()
        .find(|l| l.starts_with("shutdown: "))
        .unwrap_or_else(|| panic!("no summary: {finished:?}"));
    // Every flood client was accepted in the end (those that left while waiting were
    // accepted and ended at once), and the late one too.
    assert!(
        summary.starts_with(&format!("shutdown: served {} connections", FLOOD + 1)),
        "{summary}"
    );
    assert!(!finished.stderr_text().contains("panicked"));
    println!(
        "flood: {FLOOD} clients against --max-connections {MAX}: first {MAX} served in \
         {at_limit:?}; descriptors {idle} idle, {peak} at the limit; {summary}"
    );
}
