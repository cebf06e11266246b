//! Qt's `acceptError`: when accepting fails for want of descriptors (EMFILE) the listener
//! reports `ListenerEvent::AcceptError`, backs off, and accepts the waiting client once
//! descriptors are free again. Alone in its own test binary: it exhausts the process's
//! descriptors for a moment.

use std::{
    fs::File,
    io::BufReader,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    time::Duration,
};

use switchboard::{GetListenerStats, Listener, ListenerEvent};
use switchboard_codec::Lines;
use switchboard_tests::{any_port, blocking, echo_line, inbox, within, Probes};

fn nofile() -> libc::rlimit {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct passed to it.
    assert_eq!(
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) },
        0
    );
    limit
}

fn set_nofile(limit: libc::rlimit) {
    // SAFETY: setrlimit only reads the struct passed to it.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) }, 0);
}

/// Takes every free descriptor (duplicates of `file`) up to the soft limit.
fn exhaust(file: &File) -> Vec<OwnedFd> {
    let mut held = Vec::new();
    loop {
        // SAFETY: dup of a descriptor we own; the new one is owned by the `OwnedFd`.
        let fd = unsafe { libc::dup(file.as_raw_fd()) };
        if fd < 0 {
            let error = std::io::Error::last_os_error();
            assert_eq!(error.raw_os_error(), Some(libc::EMFILE), "{error}");
            return held;
        }
        held.push(unsafe { OwnedFd::from_raw_fd(fd) });
        assert!(held.len() < 100_000, "no descriptor limit");
    }
}

#[actix_rt::test]
async fn accept_error_is_reported_and_accepting_resumes() {
    let (owner, mut events) = inbox::<ListenerEvent>();
    let (probes, mut probe_events) = Probes::<Lines>::echo();
    let server = Listener::bind(any_port())
        .workers(1)
        .events(owner)
        .accept_backoff(Duration::from_millis(20), Duration::from_millis(100))
        .serve(Lines::new(), probes.factory())
        .unwrap();
    let addr = server.local_addr();
    // Warm up, so every thread has what it needs before descriptors run out.
    blocking("a first client", move || {
        let mut client = BufReader::new(std::net::TcpStream::connect(addr).unwrap());
        assert_eq!(echo_line(&mut client, "warm"), "warm");
    })
    .await;
    match events.next("NewConnection").await {
        ListenerEvent::NewConnection { .. } => {}
        other => panic!("{other:?}"),
    }
    // Its server side is closed only once the session is dropped: wait, or that descriptor
    // would come free while the test holds all the others.
    let (warm, _, _) = probe_events.connected().await;
    probe_events.dropped(warm.id).await;

    let saved = nofile();
    // A low limit, so exhausting it is quick.
    let open = std::fs::read_dir("/proc/self/fd").unwrap().count() as u64;
    set_nofile(libc::rlimit {
        rlim_cur: (open + 64).min(saved.rlim_cur),
        rlim_max: saved.rlim_max,
    });
    let file = File::open("/dev/null").unwrap();
    let mut held = exhaust(&file);
    // One descriptor free: the client's socket takes it, so the server's accept has none.
    held.pop();
    let client = std::net::TcpStream::connect(addr);
    let client = match client {
        Ok(client) => client,
        Err(e) => {
            drop(held);
            set_nofile(saved);
            panic!("the client could not connect: {e}");
        }
    };
    let event = events.next("AcceptError").await;
    // Free the descriptors before anything can fail.
    drop(held);
    set_nofile(saved);
    match event {
        ListenerEvent::AcceptError { error, retry_in } => {
            assert_eq!(error.raw_os_error(), Some(libc::EMFILE), "{error}");
            assert!(retry_in >= Duration::from_millis(20));
        }
        other => panic!("expected AcceptError, got {other:?}"),
    }

    // After the back-off the waiting client is accepted and served.
    client
        .set_read_timeout(Some(switchboard_tests::LIMIT))
        .unwrap();
    let reply = blocking("the waiting client", move || {
        let mut client = BufReader::new(client);
        echo_line(&mut client, "served after all")
    })
    .await;
    assert_eq!(reply, "served after all");
    let stats = within("stats", server.address().send(GetListenerStats))
        .await
        .unwrap();
    assert!(stats.accept_errors >= 1);
    // All of them for want of descriptors, filed under that kind.
    let descriptors = switchboard::ACCEPT_ERROR_KINDS
        .iter()
        .position(|k| *k == "descriptors")
        .unwrap();
    assert_eq!(
        stats.accept_errors_by_kind[descriptors],
        stats.accept_errors
    );
    assert_eq!(stats.accepted, 2);
}
