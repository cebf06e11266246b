//! What nodes say to each other: a JSON header line, then the raw payload bytes (so a
//! broadcast's data is never re-encoded).

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use crate::{ClusterSessionId, ClusterSessionInfo, NodeId};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub(crate) enum Header {
    /// Every heartbeat interval (and sooner when the count changed); `hello` asks peers to
    /// answer with theirs at once (sent at start and after the bus comes back).
    Heartbeat {
        from: NodeId,
        count: u64,
        hello: bool,
    },
    /// A clean shutdown.
    Bye {
        from: NodeId,
    },
    Broadcast {
        from: NodeId,
        except: Option<ClusterSessionId>,
        disconnect_slow: bool,
    },
    Group {
        from: NodeId,
        group: String,
        except: Option<ClusterSessionId>,
    },
    Send {
        from: NodeId,
        session: u64,
    },
    Kick {
        from: NodeId,
        req: u64,
        session: u64,
        graceful: bool,
    },
    List {
        from: NodeId,
        req: u64,
    },
    Get {
        from: NodeId,
        req: u64,
        session: u64,
    },
    Reply {
        from: NodeId,
        req: u64,
        body: Reply,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Reply {
    List(Vec<ClusterSessionInfo>),
    Get(Option<ClusterSessionInfo>),
    Kick(bool),
}

pub(crate) fn encode(header: &Header, payload: &[u8]) -> Bytes {
    // Serializing these plain types cannot fail.
    let json = serde_json::to_vec(header).unwrap_or_default();
    let mut out = BytesMut::with_capacity(json.len() + 1 + payload.len());
    out.put_slice(&json);
    out.put_u8(b'\n');
    out.put_slice(payload);
    out.freeze()
}

pub(crate) fn decode(message: Bytes) -> Option<(Header, Bytes)> {
    let split = memchr_newline(&message)?;
    let header = serde_json::from_slice(&message[..split]).ok()?;
    Some((header, message.slice(split + 1..)))
}

fn memchr_newline(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|&b| b == b'\n')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_with_newlines_survives() {
        let from = NodeId::new("a").unwrap();
        let bytes = encode(
            &Header::Send {
                from: from.clone(),
                session: 7,
            },
            b"x\ny\n",
        );
        let (header, payload) = decode(bytes).unwrap();
        assert!(matches!(header, Header::Send { session: 7, from: f } if f == from));
        assert_eq!(&payload[..], b"x\ny\n");
        assert!(decode(Bytes::from_static(b"{not json}\n")).is_none());
        assert!(decode(Bytes::from_static(b"no newline")).is_none());
    }
}
