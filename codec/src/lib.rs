//! Framing codecs for Switchboard's TCP connections.
//!
//! A codec cuts the bytes read from a connection into items, and turns items to send
//! into bytes. The three here implement tokio-util's
//! [`Decoder`](tokio_util::codec::Decoder) and [`Encoder`](tokio_util::codec::Encoder),
//! and do not depend on any actor framework.
//!
//! | Codec      | Item decoded            | On the wire                                          | Limit (default)      |
//! |------------|-------------------------|------------------------------------------------------|----------------------|
//! | [`Raw`]    | [`Bytes`](bytes::Bytes) | no framing: whatever has arrived (Qt's `readAll`)    | none                 |
//! | [`Lines`]  | [`String`]              | UTF-8 text ending in `\n`, `\r\n` accepted (Qt's `readLine`) | line, 64 KiB |
//! | [`Frames`] | [`Bytes`](bytes::Bytes) | a 4-byte big-endian `u32` length, then the payload   | frame, 1 MiB         |
//!
//! Limits are on by default and apply to both directions. Every codec reports
//! failures as a [`CodecError`]; its docs tell which errors leave the codec usable.
//!
//! Nothing in Switchboard needs these three in particular: any type that implements
//! both tokio-util's `Decoder` and `Encoder` can be used instead, such as
//! [`LengthDelimitedCodec`](tokio_util::codec::LengthDelimitedCodec) for other header
//! layouts.
//!
//! # Examples
//!
//! ```
//! use bytes::BytesMut;
//! use switchboard_codec::{Frames, Lines};
//! use tokio_util::codec::{Decoder, Encoder};
//!
//! // Lines: text protocols.
//! let mut lines = Lines::new();
//! let mut buf = BytesMut::from("HELO there\r\nQUIT\n");
//! assert_eq!(lines.decode(&mut buf)?.as_deref(), Some("HELO there"));
//! assert_eq!(lines.decode(&mut buf)?.as_deref(), Some("QUIT"));
//!
//! // Frames: binary messages.
//! let mut frames = Frames::new();
//! let mut out = BytesMut::new();
//! frames.encode(&b"\x01\x02"[..], &mut out)?;
//! assert_eq!(&frames.decode(&mut out)?.unwrap()[..], b"\x01\x02");
//! # Ok::<(), switchboard_codec::CodecError>(())
//! ```

#![doc(test(attr(deny(warnings))))]
// docs.rs (nightly, `--cfg docsrs`) labels feature-gated items with the feature they need.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    unreachable_pub
)]

mod error;
mod frames;
mod lines;
mod raw;

pub use error::CodecError;
pub use frames::Frames;
pub use lines::Lines;
pub use raw::Raw;

/// The README's example, compiled as a doctest so it cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
