//! `switchboard serve` prints the shutdown report in its summary line. On SIGTERM with one
//! client reading its echo and one that stopped reading, the reader is drained (it receives
//! every answer, then EOF) and the other is aborted at `--drain-timeout`: the summary says
//! `drained 1, aborted 1, unflushed U bytes` with U > 0, and the process exits 0 after about
//! the drain timeout.
//!
//! `cli_serve.rs` proves the summary of a drain that completes (`aborted 0`).

#[path = "cli_support.rs"]
mod cli_support;

use std::{
    io::{ErrorKind, Read, Write},
    net::TcpStream,
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc, Arc,
    },
    time::{Duration, Instant},
};

use cli_support::{Server, STEP};

fn summary_value(summary: &str, name: &str) -> u64 {
    let words: Vec<&str> = summary
        .split([' ', ','])
        .filter(|w| !w.is_empty())
        .collect();
    let at = words
        .iter()
        .position(|w| *w == name)
        .unwrap_or_else(|| panic!("no `{name}` in `{summary}`"));
    // `drained D`, `aborted A`, `unflushed U bytes`: the number follows the name.
    words[at + 1]
        .parse()
        .unwrap_or_else(|_| panic!("no number after `{name}` in `{summary}`"))
}

#[test]
fn summary_reports_drained_aborted_and_unflushed() {
    let drain = Duration::from_secs(1);
    let server = Server::start(&["--mode", "echo", "--codec", "raw", "--drain-timeout", "1"]);

    // The reader: sends without pause on one thread, reads the echo to EOF on another.
    let reader = TcpStream::connect(server.addr).unwrap();
    reader.set_read_timeout(Some(STEP)).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let mut writer = reader.try_clone().unwrap();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let chunk = [0x42u8; 16 * 1024];
            while !stop.load(Ordering::SeqCst) && writer.write_all(&chunk).is_ok() {}
        })
    };
    let (flowing_tx, flowing) = mpsc::channel();
    let receiver = {
        let mut reader = reader.try_clone().unwrap();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut got = 0u64;
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match reader.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        assert!(buf[..n].iter().all(|&b| b == 0x42));
                        got += n as u64;
                        let _ = flowing_tx.send(());
                    }
                    Err(e) => panic!("the reader's echo failed after {got} bytes: {e}"),
                }
            }
            stop.store(true, Ordering::SeqCst);
            got
        })
    };
    flowing.recv_timeout(STEP).expect("the echo flows");

    // The stalled client: writes until the server stops taking its bytes.
    let mut stalled = TcpStream::connect(server.addr).unwrap();
    // One echo first: its session runs before the shutdown, so it is one to drain (a socket
    // still waiting for its worker would fill the kernel's buffers just the same).
    stalled.set_read_timeout(Some(STEP)).unwrap();
    stalled.write_all(&[0x17]).unwrap();
    let mut first = [0u8; 1];
    stalled.read_exact(&mut first).unwrap();
    assert_eq!(first, [0x17]);
    stalled
        .set_write_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let chunk = [0x17u8; 64 * 1024];
    loop {
        match stalled.write(&chunk) {
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
            Err(e) => panic!("the stalled client: {e}"),
        }
    }

    let signalled = Instant::now();
    server.proc.signal(libc::SIGTERM);
    let got = receiver.join().unwrap();
    sender.join().unwrap();
    drop(reader);
    let finished = server.proc.wait(STEP);
    let took = signalled.elapsed();
    drop(stalled);

    assert!(finished.status.success(), "{finished:?}");
    let summary = finished
        .stdout
        .iter()
        .find(|l| l.starts_with("shutdown: "))
        .unwrap_or_else(|| panic!("no summary: {finished:?}"));
    assert_eq!(summary_value(summary, "drained"), 1, "{summary}");
    assert_eq!(summary_value(summary, "aborted"), 1, "{summary}");
    assert!(summary_value(summary, "unflushed") > 0, "{summary}");
    assert!(got > 0);
    assert!(took >= drain, "exited {took:?} after SIGTERM");
    assert!(
        took < drain + Duration::from_secs(5),
        "exited {took:?} after SIGTERM"
    );
    println!("{summary} (exit {took:?} after SIGTERM, the reader got {got} bytes)");
}
