//! Opens idle connections and holds them: the client side of the memory and scale scenarios.
//!
//! Connections come from `127.0.0.FIRST`, `127.0.0.FIRST+1`, … (`--source-count` addresses, in
//! turn), at most `--concurrency` connects at a time. Once all are tried it prints one JSON line,
//! `{"opened": N, "failed": M, "ms": T}`, then holds them, reading nothing, until stdin ends or
//! `--hold` seconds pass, and exits (which closes them all).
//!
//! ```text
//! hold_clients HOST:PORT --count N [--source-first 2] [--source-count 1] [--concurrency 128]
//!                        [--hold 300]
//! ```

use std::{
    io::Write as _,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use switchboard_benches::{connect_from, loopback_source, parse_seconds, raise_nofile, Args};
use tokio::{io::AsyncReadExt, sync::Semaphore};

const USAGE: &str = "usage: hold_clients HOST:PORT [--count 1000] [--source-first 2] [--source-count 1]\n                               [--concurrency 128] [--hold 300]";

fn main() -> std::io::Result<()> {
    let args = Args::from_env();
    let server: SocketAddr = args.address_then_check(
        USAGE,
        &[],
        &[
            "--count",
            "--source-first",
            "--source-count",
            "--concurrency",
            "--hold",
        ],
    );
    let count: usize = args.get("--count", 1000);
    let first: u32 = args.get("--source-first", 2);
    let sources: u32 = args.get("--source-count", 1);
    let concurrency: usize = args.get("--concurrency", 128).max(1);
    let hold = parse_seconds(args.value("--hold").unwrap_or("300")).expect("--hold");
    raise_nofile()?;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let start = Instant::now();
        let permits = Arc::new(Semaphore::new(concurrency));
        let tasks: Vec<_> = (0..count)
            .map(|i| {
                let permits = permits.clone();
                let source = loopback_source(first, sources, i as u32);
                tokio::spawn(async move {
                    let _permit = permits.acquire_owned().await.expect("open semaphore");
                    tokio::time::timeout(
                        Duration::from_secs(10),
                        connect_from(Some(source), server),
                    )
                    .await
                    .ok()
                    .and_then(Result::ok)
                })
            })
            .collect();
        let mut held = Vec::with_capacity(count);
        let mut failed = 0;
        for task in tasks {
            match task.await.ok().flatten() {
                Some(stream) => held.push(stream),
                None => failed += 1,
            }
        }
        {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(
                out,
                "{{\"opened\": {}, \"failed\": {}, \"ms\": {:.1}}}",
                held.len(),
                failed,
                start.elapsed().as_secs_f64() * 1e3
            );
            let _ = out.flush();
        }
        // Hold until stdin ends or the deadline; whatever the server sends is left unread.
        let mut stdin = tokio::io::stdin();
        let mut sink = [0u8; 256];
        let waiting = async { while matches!(stdin.read(&mut sink).await, Ok(n) if n > 0) {} };
        let _ = tokio::time::timeout(hold, waiting).await;
        drop(held);
    });
    Ok(())
}
