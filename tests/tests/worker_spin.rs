//! Latency mode ([`ListenerBuilder::worker_spin`](switchboard::ListenerBuilder::worker_spin)):
//! a worker that served traffic keeps polling for a bounded window, then sleeps and uses no
//! CPU, even with its client still connected; windows it cannot honour are refused.

use std::{
    io::BufReader,
    sync::{
        atomic::{AtomicI32, Ordering},
        Arc,
    },
    time::Duration,
};

use switchboard::{ConfigError, ListenError, Listener, WorkerPool};
use switchboard_codec::Lines;
use switchboard_tests::{any_port, blocking, echo_line, std_connect, Action, Probes};

/// CPU time (user + system) of thread `tid` of this process: from `schedstat` (nanoseconds)
/// where the kernel has it, else from `stat` (clock ticks, 10 ms).
fn thread_cpu(tid: i32) -> Duration {
    if let Ok(text) = std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat")) {
        let ns: u64 = text.split_whitespace().next().unwrap().parse().unwrap();
        if ns > 0 {
            return Duration::from_nanos(ns);
        }
    }
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap();
    // Fields after the parenthesised name: utime and stime are the 12th and 13th.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .map(|f| f.parse().unwrap())
        .collect();
    Duration::from_millis((fields[0] + fields[1]) * 10)
}

#[actix_rt::test]
async fn a_spinning_worker_sleeps_once_traffic_stops() {
    let worker_tid = Arc::new(AtomicI32::new(0));
    let seen = worker_tid.clone();
    let (probes, mut events) = Probes::<Lines>::new(move |_| {
        // SAFETY: gettid has no preconditions. The script runs on the session's worker.
        seen.store(unsafe { libc::gettid() }, Ordering::Relaxed);
        Action::Echo
    });
    let window = Duration::from_millis(50);
    let server = Listener::bind(any_port())
        .workers(1)
        .worker_spin(window)
        .serve(Lines::new(), probes.factory())
        .unwrap();
    assert_eq!(server.pool().spin(), Some(window));
    let mut client = BufReader::new(std_connect(server.local_addr()));
    events.connected().await;

    // Traffic, then the worker's CPU over most of the window after the last echo: it polls.
    // A spinner gives way when it is descheduled (it then sleeps ten windows before it spins
    // again), so on a machine busy with other tests one window can show little: up to eight
    // tries, each after that back-off, one of which must show the spin.
    let tid = worker_tid.clone();
    let (client, tries) = blocking("echoes, then the spin window", move || {
        let mut tries = Vec::new();
        for _ in 0..8 {
            for i in 0..20 {
                assert_eq!(echo_line(&mut client, &format!("m{i}")), format!("m{i}"));
            }
            let tid = tid.load(Ordering::Relaxed);
            let start = thread_cpu(tid);
            // A measuring window, not a wait for an event.
            std::thread::sleep(Duration::from_millis(40));
            tries.push(thread_cpu(tid) - start);
            if tries.last() >= Some(&Duration::from_millis(5)) {
                break;
            }
            // Past a back-off before the next try (a pause of the load, not a wait for an
            // event: the spinner announces nothing).
            std::thread::sleep(window * 10 + Duration::from_millis(20));
        }
        (client, tries)
    })
    .await;
    assert!(
        tries.last() >= Some(&Duration::from_millis(5)),
        "the worker did not spin after traffic: {tries:?} of CPU in 40 ms windows"
    );

    // Past the window, with the client still connected and quiet: the worker sleeps.
    let tid = worker_tid.load(Ordering::Relaxed);
    tokio::time::sleep(window + Duration::from_millis(20)).await;
    let start = thread_cpu(tid);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let idle = thread_cpu(tid) - start;
    assert!(
        idle < Duration::from_millis(30),
        "an idle worker used {idle:?} of CPU in 300 ms"
    );
    drop(client);
}

#[actix_rt::test]
async fn spin_windows_it_cannot_honour_are_refused() {
    let too_long = Duration::from_millis(101);
    assert!(matches!(
        WorkerPool::builder().threads(1).spin(too_long).build(),
        Err(ConfigError::Invalid { option: "spin", .. })
    ));
    let refused = Listener::bind(any_port())
        .workers(1)
        .worker_spin(too_long)
        .serve(Lines::new(), || Probes::<Lines>::echo().0.make());
    assert!(matches!(
        refused,
        Err(ListenError::Config(ConfigError::Invalid {
            option: "worker_spin",
            ..
        }))
    ));
    // A given pool carries its own setting: setting it on the listener too is an error, not
    // silently ignored.
    let pool = WorkerPool::new(1).unwrap();
    let both = Listener::bind(any_port())
        .pool(pool)
        .worker_spin(Duration::from_micros(100))
        .serve(Lines::new(), || Probes::<Lines>::echo().0.make());
    assert!(matches!(
        both,
        Err(ListenError::Config(ConfigError::Invalid {
            option: "worker_spin",
            ..
        }))
    ));
    // Zero is off.
    let off = WorkerPool::builder()
        .threads(1)
        .spin(Duration::ZERO)
        .build()
        .unwrap();
    assert_eq!(off.spin(), None);
}
