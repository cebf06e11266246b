//! Replays every input kept under `fuzz/regressions/<target>/` (crashers the fuzzer found, and
//! hand-made edge cases) through the same harnesses the fuzz targets run, on the stable
//! toolchain, so a fixed bug stays fixed.

use std::{fs, path::PathBuf};

use switchboard_tests::fuzzing;

fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/regressions")
        .join(target);
    let mut found: Vec<_> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_file())
        .map(|path| {
            let data = fs::read(&path).unwrap();
            (path, data)
        })
        .collect();
    found.sort();
    assert!(
        !found.is_empty(),
        "no regression inputs in {}",
        dir.display()
    );
    found
}

fn replay(target: &str, harness: fn(&[u8])) {
    for (path, data) in inputs(target) {
        let outcome = std::panic::catch_unwind(|| harness(&data));
        assert!(outcome.is_ok(), "{} fails again", path.display());
    }
}

#[test]
fn lines_decoder_regressions_stay_fixed() {
    replay("codec_lines", fuzzing::lines_decoder);
}

#[test]
fn frames_decoder_regressions_stay_fixed() {
    replay("codec_frames", fuzzing::frames_decoder);
}

#[test]
fn raw_decoder_regressions_stay_fixed() {
    replay("codec_raw", fuzzing::raw_decoder);
}

#[test]
fn live_session_regressions_stay_fixed() {
    replay("live_session", fuzzing::live_session);
}

#[test]
fn proxy_header_regressions_stay_fixed() {
    replay("proxy_header", fuzzing::proxy_header);
}

#[test]
fn proxy_session_regressions_stay_fixed() {
    replay("proxy_session", fuzzing::proxy_session);
}

#[test]
fn tls_session_regressions_stay_fixed() {
    replay("tls_session", fuzzing::tls_session);
}
