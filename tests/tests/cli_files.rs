//! `switchboard serve --mode files` with `switchboard send`, and the upload protocol spoken by
//! hand: concurrent uploads with checksums, refused names, no overwrite, and nothing left
//! behind by a failed or cut-off upload.

#[path = "cli_support.rs"]
mod support;

use std::{
    collections::BTreeSet,
    fs,
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    path::Path,
};

use sha2::{Digest, Sha256};
use support::{pattern, Proc, Server, TempDir, STEP};

fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Every name in `dir`, hidden ones included.
fn names(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// A files server storing into `<tmp>/recv`.
fn files_server(tmp: &TempDir) -> (Server, std::path::PathBuf) {
    let recv = tmp.path().join("recv");
    let server = Server::start(&["--mode", "files", "--dir", recv.to_str().unwrap()]);
    (server, recv)
}

/// The upload protocol by hand: frames are a 4-byte big-endian length and the payload.
struct Wire(TcpStream);

impl Wire {
    fn connect(addr: SocketAddr) -> Wire {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(STEP)).unwrap();
        Wire(stream)
    }

    fn send(&mut self, payload: &[u8]) {
        let len = u32::try_from(payload.len()).unwrap().to_be_bytes();
        self.0.write_all(&len).unwrap();
        self.0.write_all(payload).unwrap();
    }

    fn recv(&mut self) -> String {
        let mut len = [0; 4];
        self.0.read_exact(&mut len).expect("a reply frame");
        let mut payload = vec![0; u32::from_be_bytes(len) as usize];
        self.0.read_exact(&mut payload).unwrap();
        String::from_utf8(payload).unwrap()
    }
}

#[test]
fn three_concurrent_uploads_arrive_with_matching_checksums() {
    let tmp = TempDir::new("upload");
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    let files = [
        ("empty.txt", Vec::new()),
        ("notes.txt", b"some notes\n".repeat(10_000)),
        ("big.bin", pattern(50 * 1024 * 1024, 11)),
    ];
    for (name, data) in &files {
        fs::write(src.join(name), data).unwrap();
    }
    let (server, recv) = files_server(&tmp);

    let paths: Vec<String> = files
        .iter()
        .map(|(name, _)| src.join(name).to_str().unwrap().to_string())
        .collect();
    let mut args = vec!["send", "--parallel", "3"];
    let target = server.target();
    args.push(&target);
    args.extend(paths.iter().map(String::as_str));
    let mut send = Proc::spawn(&args);
    send.close_stdin();
    let finished = send.wait(STEP * 3);
    assert!(finished.status.success(), "{finished:?}");

    for (name, data) in &files {
        let expected = sha256_hex(data);
        // The sender printed the checksum the server confirmed...
        let line = finished
            .stdout
            .iter()
            .find(|l| l.starts_with(&format!("ok      {name} ")))
            .unwrap_or_else(|| panic!("no result for {name}: {finished:?}"));
        assert!(line.ends_with(&format!("sha256 {expected}")), "{line}");
        assert!(line.contains(&format!(" {} bytes ", data.len())), "{line}");
        // ...and the stored file is the same bytes (so it has that checksum too).
        let stored = fs::read(recv.join(name)).unwrap();
        assert_eq!(stored.len(), data.len(), "{name}");
        assert!(stored == *data, "{name} differs");
    }
    assert!(finished
        .stdout
        .last()
        .unwrap()
        .starts_with("sent 3 of 3 files, 52538800 bytes"));
    // Nothing else in the directory: no temporary file left.
    let expected: BTreeSet<String> = files.iter().map(|(n, _)| n.to_string()).collect();
    assert_eq!(names(&recv), expected);

    // The three were received at once: each had started before the big one was stored.
    let log = server.proc.stderr_so_far();
    let stored_big = log
        .iter()
        .position(|l| l.contains("file stored") && l.contains("name=big.bin"))
        .expect("big.bin stored");
    for (name, _) in &files {
        let started = log
            .iter()
            .position(|l| l.contains("receiving") && l.contains(&format!("name={name} ")))
            .unwrap_or_else(|| panic!("{name} never started: {log:#?}"));
        assert!(
            started < stored_big,
            "{name} started after big.bin was done"
        );
    }

    let finished = server.terminate();
    assert!(finished.status.success(), "{finished:?}");
}

#[test]
fn names_that_leave_the_directory_or_hide_are_refused() {
    let tmp = TempDir::new("names");
    let (server, recv) = files_server(&tmp);
    for name in [
        "../escape.txt",
        "../../escape.txt",
        "a/b.txt",
        "/tmp/abs.txt",
        "..",
        ".hidden",
        "a\\b",
        "",
    ] {
        let mut wire = Wire::connect(server.addr);
        wire.send(format!("FILE 3 {name}").as_bytes());
        let reply = wire.recv();
        assert!(reply.starts_with("ERR refused: "), "`{name}` got `{reply}`");
    }
    assert!(!tmp.path().join("escape.txt").exists());
    assert!(!tmp.path().join("abs.txt").exists());
    assert!(names(&recv).is_empty(), "{:?}", names(&recv));
    server.terminate();
}

#[test]
fn an_existing_file_is_never_overwritten() {
    let tmp = TempDir::new("exists");
    let (server, recv) = files_server(&tmp);
    let file = tmp.path().join("report.txt");
    let target = server.target();
    let path = file.to_str().unwrap();

    fs::write(&file, "first version\n").unwrap();
    let finished = support::run(&["send", &target, path], STEP);
    assert!(finished.status.success(), "{finished:?}");

    fs::write(&file, "second version\n").unwrap();
    let finished = support::run(&["send", &target, path], STEP);
    assert_eq!(finished.status.code(), Some(1), "{finished:?}");
    assert!(
        finished.stdout[0].starts_with("FAILED  report.txt: refused: `report.txt` already exists"),
        "{finished:?}"
    );
    assert_eq!(
        finished.stderr.last().unwrap(),
        "switchboard: 1 of 1 files failed"
    );
    assert_eq!(
        fs::read_to_string(recv.join("report.txt")).unwrap(),
        "first version\n"
    );
    server.terminate();
}

#[test]
fn a_checksum_mismatch_leaves_nothing() {
    let tmp = TempDir::new("mismatch");
    let (server, recv) = files_server(&tmp);
    let mut wire = Wire::connect(server.addr);
    wire.send(b"FILE 3 bad.txt");
    assert_eq!(wire.recv(), "READY");
    wire.send(b"abc");
    wire.send(format!("END {}", "0".repeat(64)).as_bytes());
    let reply = wire.recv();
    assert!(reply.starts_with("ERR checksum mismatch"), "{reply}");
    assert!(reply.contains(&sha256_hex(b"abc")), "{reply}");
    assert!(names(&recv).is_empty(), "{:?}", names(&recv));
    // Closed, not shadowed: the server's shutdown would wait for its FIN (the drain timeout).
    drop(wire);

    // The same name can then be uploaded properly, on a new connection.
    let mut wire = Wire::connect(server.addr);
    wire.send(b"FILE 3 bad.txt");
    assert_eq!(wire.recv(), "READY");
    wire.send(b"abc");
    wire.send(format!("END {}", sha256_hex(b"abc")).as_bytes());
    assert_eq!(wire.recv(), format!("OK {}", sha256_hex(b"abc")));
    assert_eq!(fs::read(recv.join("bad.txt")).unwrap(), b"abc");
    drop(wire);
    server.terminate();
}

#[test]
fn a_cut_off_upload_leaves_nothing() {
    let tmp = TempDir::new("cutoff");
    let (server, recv) = files_server(&tmp);
    let mut wire = Wire::connect(server.addr);
    wire.send(b"FILE 1000000 partial.bin");
    assert_eq!(wire.recv(), "READY");
    wire.send(&pattern(100_000, 5));
    wire.send(&pattern(100_000, 6));
    // The temporary file exists while the upload runs (hidden).
    let during = names(&recv);
    drop(wire);

    // The server logs the cut-off once the partial file is gone.
    let line = server.proc.stderr_until("upload cut off");
    assert!(line.contains("name=partial.bin"), "{line}");
    assert!(names(&recv).is_empty(), "{:?}", names(&recv));
    assert_eq!(during.len(), 1, "{during:?}");
    assert!(during.iter().all(|n| n.starts_with('.')), "{during:?}");
    server.terminate();
}
