//! The file-transfer protocol between `switchboard send` and `switchboard serve --mode files`.
//!
//! Everything travels in [`Frames`](switchboard_codec::Frames): a 4-byte big-endian length, then
//! the payload. Control frames are UTF-8 text, single spaces between fields; data frames are
//! raw bytes. One connection carries one upload after another:
//!
//! ```text
//! sender                                   server
//!   FILE <size> <name>           ────────►           size: decimal u64; name: the rest
//!                                ◄────────  READY     or  ERR <reason> (then it closes)
//!   <data frame> ...             ────────►           exactly <size> bytes in all, each
//!                                                    frame 1..=max-frame bytes (64 KiB sent)
//!   END <sha256>                 ────────►           lowercase hex of the data's SHA-256
//!                                ◄────────  OK <sha256>  or  ERR <reason> (then it closes)
//! ```
//!
//! - An empty file is `FILE 0 name`, `READY`, `END e3b0…b855` (no data frame), `OK e3b0…b855`.
//! - The frame after the last data byte must be `END`; a data frame that goes past `<size>`
//!   is an error (`ERR more data than announced`).
//! - The server writes the data to a hidden temporary file in its directory and gives it its
//!   final name only when the size and the SHA-256 in `END` match what it received; `OK`
//!   carries the SHA-256 it computed, which the sender checks against its own. A name that
//!   exists at that moment is not overwritten (`ERR`). Any `ERR`, a closed connection or a
//!   server shutdown before `OK` removes the temporary file.
//! - Names are refused (`ERR refused: …`, before any data is sent) when [`check_name`] says so.
//! - After `OK` the sender may start the next `FILE` on the same connection or close it.

use std::fmt;

/// Data frames `send` writes: 64 KiB (the server takes up to its `--max-frame`).
pub(crate) const CHUNK: usize = 64 * 1024;

/// Longest file name accepted, in bytes (file systems allow 255; the rest is headroom).
pub(crate) const MAX_NAME: usize = 200;

/// The frame that opens an upload: `FILE <size> <name>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) size: u64,
    pub(crate) name: String,
}

impl Header {
    pub(crate) fn encode(&self) -> String {
        format!("FILE {} {}", self.size, self.name)
    }

    /// Reads a header frame. The name is not checked here (see [`check_name`]).
    pub(crate) fn parse(frame: &[u8]) -> Result<Header, String> {
        let text = std::str::from_utf8(frame).map_err(|_| "header is not UTF-8".to_string())?;
        let rest = text
            .strip_prefix("FILE ")
            .ok_or_else(|| "expected `FILE <size> <name>`".to_string())?;
        let (size, name) = rest
            .split_once(' ')
            .ok_or_else(|| "expected `FILE <size> <name>`".to_string())?;
        if size.is_empty() || !size.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("bad size `{size}`"));
        }
        let size = size.parse().map_err(|_| format!("bad size `{size}`"))?;
        Ok(Header {
            size,
            name: name.to_string(),
        })
    }
}

/// The frame that closes an upload's data: `END <sha256 hex>`.
pub(crate) fn encode_end(sha256_hex: &str) -> String {
    format!("END {sha256_hex}")
}

/// Reads an `END` frame, giving the lowercase hex digest.
pub(crate) fn parse_end(frame: &[u8]) -> Result<String, String> {
    let text = std::str::from_utf8(frame).map_err(|_| "END is not UTF-8".to_string())?;
    let hex = text
        .strip_prefix("END ")
        .ok_or_else(|| "expected `END <sha256>` after the data".to_string())?;
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("END needs a 64-digit hex SHA-256".to_string());
    }
    Ok(hex.to_ascii_lowercase())
}

/// What the server answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reply {
    Ready,
    Ok(String),
    Err(String),
}

impl Reply {
    pub(crate) fn parse(frame: &[u8]) -> Result<Reply, String> {
        let text = String::from_utf8_lossy(frame);
        if text == "READY" {
            Ok(Reply::Ready)
        } else if let Some(hex) = text.strip_prefix("OK ") {
            Ok(Reply::Ok(hex.to_string()))
        } else if let Some(reason) = text.strip_prefix("ERR ") {
            Ok(Reply::Err(reason.to_string()))
        } else {
            Err(format!("unexpected reply from the server: `{text}`"))
        }
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reply::Ready => f.write_str("READY"),
            Reply::Ok(hex) => write!(f, "OK {hex}"),
            Reply::Err(reason) => write!(f, "ERR {reason}"),
        }
    }
}

/// Whether `name` may be stored: a plain file name inside the directory, never a path.
///
/// Refused: empty; longer than [`MAX_NAME`] bytes; containing `/` or `\` (so no absolute path
/// or subdirectory); containing `..`; starting with `.` (hidden names are where partial uploads
/// live); containing a control character (NUL, newline, ...).
pub(crate) fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("empty file name".into());
    }
    if name.len() > MAX_NAME {
        return Err(format!("file name longer than {MAX_NAME} bytes"));
    }
    if name.contains('/') || name.contains('\\') {
        return Err(format!("`{name}` contains a path separator"));
    }
    if name.contains("..") {
        return Err(format!("`{name}` contains `..`"));
    }
    if name.starts_with('.') {
        return Err(format!("`{name}` starts with `.`"));
    }
    if name.chars().any(char::is_control) {
        return Err("file name contains a control character".into());
    }
    Ok(())
}

/// Lowercase hex of a digest.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use fmt::Write as _;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_with_spaces_in_the_name() {
        let header = Header {
            size: 42,
            name: "my file.txt".into(),
        };
        assert_eq!(Header::parse(header.encode().as_bytes()), Ok(header));
    }

    #[test]
    fn bad_headers_are_refused() {
        for bad in [
            &b"FILE"[..],
            b"FILE 12",
            b"FILE -1 x",
            b"FILE +1 x",
            b"FILE 99999999999999999999999 x",
            b"SEND 1 x",
            b"FILE \xff x",
        ] {
            assert!(Header::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn names_that_escape_or_hide_are_refused() {
        for bad in [
            "",
            "../x",
            "..",
            "a/b",
            "/etc/passwd",
            "a\\b",
            ".hidden",
            "x..y",
            "nul\0",
            "line\nbreak",
        ] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_name(&"x".repeat(MAX_NAME + 1)).is_err());
        for good in ["a.txt", "my file", "données.bin", &"x".repeat(MAX_NAME)] {
            assert_eq!(check_name(good), Ok(()), "{good:?}");
        }
    }

    #[test]
    fn end_needs_a_full_digest() {
        let hex = "A".repeat(64);
        assert_eq!(parse_end(encode_end(&hex).as_bytes()), Ok("a".repeat(64)));
        assert!(parse_end(b"END abc").is_err());
        assert!(parse_end(b"more data").is_err());
    }

    #[test]
    fn replies_parse() {
        assert_eq!(Reply::parse(b"READY"), Ok(Reply::Ready));
        assert_eq!(Reply::parse(b"OK ab"), Ok(Reply::Ok("ab".into())));
        assert_eq!(Reply::parse(b"ERR no"), Ok(Reply::Err("no".into())));
        assert!(Reply::parse(b"what").is_err());
        assert_eq!(Reply::Err("x y".into()).to_string(), "ERR x y");
    }
}
