//! The hand-over in one process, through the library: `Takeover` against an `Admin` on a Unix
//! socket, the sockets adopted by a second `Listener`, one hand-over at a time, the commit, the
//! old listener released with its socket files kept, and the admin socket taken over in turn.

use std::{
    io::{BufRead, BufReader, Write},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    time::Duration,
};

use switchboard::{
    admin::{Admin, Reply},
    handover::{HandoverError, SocketRole, Takeover},
    Conn, IsListening, Listener, ListenerHandle, SessionHandler, StdListener,
};
use switchboard_codec::Lines;

const STEP: Duration = Duration::from_secs(20);

struct Echo;
impl SessionHandler<Lines> for Echo {
    fn ready_read(&mut self, line: String, conn: &mut Conn<'_, Lines, Self>) {
        let _ = conn.write(line);
    }
}

fn echo_on(builder: switchboard::ListenerBuilder) -> ListenerHandle {
    builder.workers(1).serve(Lines::new(), || Echo).unwrap()
}

/// Sends a line on the Unix socket at `path` and returns the echo.
fn echo_unix(path: &Path, line: &str) -> String {
    let mut stream = UnixStream::connect(path).unwrap();
    stream.set_read_timeout(Some(STEP)).unwrap();
    writeln!(stream, "{line}").unwrap();
    let mut echo = String::new();
    BufReader::new(stream).read_line(&mut echo).unwrap();
    echo.trim_end().to_string()
}

/// Blocking work off the actix thread.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::time::timeout(STEP, tokio::task::spawn_blocking(work))
        .await
        .expect("in time")
        .unwrap()
}

struct Dir(PathBuf);
impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[actix_rt::test]
async fn sockets_move_to_a_second_listener_and_the_admin_socket_chains() {
    let dir =
        Dir(std::env::temp_dir().join(format!("sb-listener-handover-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&dir.0);
    std::fs::create_dir_all(&dir.0).unwrap();
    let echo_path = dir.0.join("echo.sock");
    let admin_path = dir.0.join("admin.sock");

    let old = echo_on(Listener::bind("127.0.0.1:0").also_bind(echo_path.as_path()));
    let old_admin = Admin::with_details(&old, "old", None, Duration::from_secs(2));
    let _old_admin_socket = old_admin.serve_unix(&admin_path).unwrap();
    assert_eq!(
        old_admin.execute("handover").await,
        Reply::Error("`handover` needs a connection to a Unix admin socket".into())
    );

    let path = admin_path.clone();
    let mut takeover = blocking(move || Takeover::connect(&path, STEP))
        .await
        .unwrap();
    let roles: Vec<(SocketRole, String)> = takeover
        .sockets()
        .iter()
        .map(|s| (s.description.role, s.description.address.clone()))
        .collect();
    let mut expected: Vec<(SocketRole, String)> = old
        .addresses()
        .iter()
        .map(|a| (SocketRole::Listen, a.to_string()))
        .collect();
    expected.push((SocketRole::Admin, format!("unix:{}", admin_path.display())));
    assert_eq!(roles, expected);

    // One hand-over at a time.
    let path = admin_path.clone();
    let second = blocking(move || Takeover::connect(&path, STEP))
        .await
        .unwrap_err();
    assert!(
        matches!(&second, HandoverError::Refused { reason, .. } if reason.contains("under way")),
        "{second}"
    );

    let new = echo_on(Listener::adopt(takeover.take_listen_sockets()));
    assert_eq!(new.addresses(), old.addresses());
    let admin_socket: Vec<StdListener> = takeover
        .take_sockets()
        .into_iter()
        .map(|s| s.socket)
        .collect();
    // Both accept until the commit.
    assert!(old.address().send(IsListening).await.unwrap());

    let answer = blocking(move || takeover.commit()).await.unwrap();
    assert!(
        answer.starts_with("handed over: released 2 listening sockets"),
        "{answer}"
    );
    assert!(!old.address().send(IsListening).await.unwrap());
    let report = tokio::time::timeout(STEP, old_admin.drained())
        .await
        .unwrap();
    assert_eq!((report.drained, report.aborted), (0, 0));

    // The files stayed, and what connects now reaches the new listener.
    assert!(echo_path.exists() && admin_path.exists());
    let path = echo_path.clone();
    assert_eq!(blocking(move || echo_unix(&path, "hello")).await, "hello");
    assert_eq!(new.registry().stats().connected, 1);
    assert_eq!(old.registry().stats().connected, 0);

    // The admin socket, served by the new process, hands over in turn.
    let new_admin = Admin::with_details(&new, "new", None, Duration::from_secs(2));
    let _new_admin_socket = new_admin
        .serve_adopted(admin_socket.into_iter().next().unwrap())
        .unwrap();
    let path = admin_path.clone();
    let again = blocking(move || Takeover::connect(&path, STEP))
        .await
        .unwrap();
    assert_eq!(again.sockets().len(), 3);
}
