//! Safe defaults: every limit is on out of the box, with the documented value. A server built
//! with no options times out idle and half-sent connections, caps lines, frames and
//! connections (sized to the process's descriptor limit), keeps the per-IP limit off (it is
//! the opt-in slowloris defence), and `switchboard serve` binds loopback only unless told.
//! The connector's connect timeout is on too.
//!
//! Files mode's confinement to its directory is proven by `cli_files.rs`
//! (`names_that_leave_the_directory_or_hide_are_refused`).

#[path = "cli_support.rs"]
mod cli_support;

use std::time::Duration;

use switchboard::{
    default_max_connections, Connector, GetListenerStats, Listener, SessionConfig, DEFAULT_BACKLOG,
    DEFAULT_MAX_PENDING,
};
use switchboard_codec::{Frames, Lines, Raw};
use switchboard_tests::{any_port, within};

fn soft_nofile() -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct passed to it.
    assert_eq!(
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) },
        0
    );
    limit.rlim_cur as usize
}

#[test]
fn session_limits_are_on_by_default() {
    let config = SessionConfig::default();
    assert_eq!(config.idle_timeout(), Some(Duration::from_secs(120)));
    assert_eq!(config.frame_timeout(), Some(Duration::from_secs(60)));
    assert_eq!(config.close_timeout(), Duration::from_secs(10));
    assert_eq!(config.high_watermark(), 64 * 1024);
    assert_eq!(config.low_watermark(), 32 * 1024);
    assert_eq!(config.read_chunk(), 64 * 1024);
    assert_eq!(config.max_read_chunk(), 256 * 1024);
    assert_eq!(config.largest_read(), 256 * 1024);
    assert_eq!(config.read_buffer_size(), 256 * 1024);
    assert!(config.validate().is_ok());
}

#[test]
fn codec_limits_are_on_by_default() {
    assert_eq!(Lines::new().max_length(), 64 * 1024);
    assert_eq!(Lines::default().max_length(), 64 * 1024);
    assert_eq!(Frames::new().max_frame_length(), 1024 * 1024);
    assert_eq!(Frames::default().max_frame_length(), 1024 * 1024);
    // Raw has no frames to limit: an item is at most one read (`SessionConfig::largest_read`,
    // 256 KiB by default).
    let _ = Raw;
}

#[test]
fn connect_timeout_is_on_by_default() {
    assert_eq!(Connector::new().connect_timeout(), Duration::from_secs(10));
    assert_eq!(Connector::DEFAULT_TIMEOUT, Duration::from_secs(10));
}

#[actix_rt::test]
async fn listener_limits_are_on_by_default_and_sized_to_the_descriptor_limit() {
    let server = Listener::bind(any_port())
        .workers(1)
        .serve(Lines::new(), || Quiet)
        .unwrap();
    let stats = within("stats", server.address().send(GetListenerStats))
        .await
        .unwrap();
    // The soft descriptor limit less 64 kept for everything that is not a connection.
    assert_eq!(stats.max_connections, soft_nofile() - 64);
    assert_eq!(stats.max_connections, default_max_connections());
    // Per-IP: available, off.
    assert_eq!(stats.max_connections_per_ip, None);
    assert_eq!(DEFAULT_BACKLOG, 1024);
    assert_eq!(DEFAULT_MAX_PENDING, 30);
}

struct Quiet;

impl switchboard::SessionHandler<Lines> for Quiet {
    fn ready_read(&mut self, _: String, _: &mut switchboard::Conn<'_, Lines, Self>) {}
}

#[test]
fn serve_binds_loopback_unless_told() {
    let server = cli_support::Server::start(&[]);
    assert!(server.addr.ip().is_loopback(), "{}", server.addr);
    assert_eq!(server.addr.ip().to_string(), "127.0.0.1");
    let finished = server.terminate();
    assert!(finished.status.success(), "{finished:?}");
}
