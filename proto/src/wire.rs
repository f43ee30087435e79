//! Frames exchanged over the cluster connection.
//!
//! A frame travels as a 4-byte big-endian length prefix followed by its MessagePack
//! body; frames longer than [`MAX_FRAME_LEN`] are refused before they are read.
//! Every connection starts with a [`Hello`] from each side. [`decode_frame`] and
//! [`encode_frame`] are the body's codec: the transport runs them on every frame, and the
//! fuzzer runs the same decoder on hostile bodies.

use serde::{Deserialize, Serialize};

use crate::observation::Observation;

/// Bumped whenever a frame changes in a way an older node cannot read.
pub const PROTOCOL_VERSION: u32 = 2;

/// Largest frame body accepted or sent: 1 MiB.
pub const MAX_FRAME_LEN: usize = 1 << 20;

/// Deepest nesting of arrays and maps accepted in a frame body. The deepest real frame
/// (an observation's UPS status flags) is about ten levels down. rmp-serde's own limit,
/// 1024, let one frame recurse deep enough to overflow a tokio worker's 2 MiB stack in a
/// debug build (about 2.5 KiB a level; a quarter of that in release): each level of an
/// internally tagged enum's contents is buffered by a recursive call.
pub const MAX_FRAME_DEPTH: usize = 32;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Frame {
    /// First frame on every connection, from both sides.
    Hello(Hello),
    /// Sent instead of a Hello (or in answer to one) when the peer is refused, so both
    /// sides log the same reason. The connection closes after it.
    Reject {
        reason: String,
    },
    /// A raft-rs `eraftpb::Message` in its protobuf encoding.
    Raft(#[serde(with = "serde_bytes")] Vec<u8>),
    /// Application-level keepalive; the answer carries the same nonce back.
    Ping {
        nonce: u64,
    },
    Pong {
        nonce: u64,
    },
    /// The sender's latest observation of its site (an agent's host, UPS and links; a
    /// witness's links only), sent to every voter about once a second: whichever voter
    /// leads next already has the evidence.
    Observation(Box<Observation>),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub cluster_id: String,
    pub node_id: u64,
    pub node_name: String,
    pub protocol_version: u32,
    /// Digest of the member list as this node has it configured: every node must agree
    /// on who votes, or two majorities could exist.
    pub members_digest: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame body of {len} bytes exceeds the {MAX_FRAME_LEN}-byte limit")]
    TooLong { len: usize },
    #[error("frame body holds {extra} bytes after the frame")]
    Trailing { extra: usize },
    #[error("frame body is not a frame: {0}")]
    Decode(#[from] rmp_serde::decode::Error),
    #[error("cannot encode frame: {0}")]
    Encode(#[from] rmp_serde::encode::Error),
}

/// Decode one frame body (the bytes after the length prefix), as received from a peer.
///
/// The length codec already refuses longer bodies; refusing them here too keeps the
/// bound on what one call may allocate a property of this function alone. Beyond that,
/// allocation follows the input: rmp-serde copies strings and byte strings only as far as
/// the body holds them, and serde preallocates at most 1 MiB per sequence whatever length
/// a header claims. Recursion stops at [`MAX_FRAME_DEPTH`].
pub fn decode_frame(body: &[u8]) -> Result<Frame, FrameError> {
    if body.len() > MAX_FRAME_LEN {
        return Err(FrameError::TooLong { len: body.len() });
    }
    let mut decoder = rmp_serde::Deserializer::new(std::io::Cursor::new(body));
    decoder.set_max_depth(MAX_FRAME_DEPTH);
    let frame = Frame::deserialize(&mut decoder)?;
    // A body is one frame: bytes after it mean a sender that frames differently (or a
    // corrupted length), not something to ignore.
    let read = decoder.position() as usize;
    if read < body.len() {
        return Err(FrameError::Trailing { extra: body.len() - read });
    }
    Ok(frame)
}

/// Encode a frame body. Structs travel as arrays (field order, no names): both ends run
/// the same [`PROTOCOL_VERSION`], which the hello checks.
pub fn encode_frame(frame: &Frame) -> Result<Vec<u8>, FrameError> {
    Ok(rmp_serde::to_vec(frame)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(f: &Frame) -> Frame {
        let bytes = encode_frame(f).unwrap();
        decode_frame(&bytes).unwrap()
    }

    #[test]
    fn frames_roundtrip() {
        let hello = Frame::Hello(Hello {
            cluster_id: "home".into(),
            node_id: 3,
            node_name: "witness".into(),
            protocol_version: PROTOCOL_VERSION,
            members_digest: 0xdead_beef,
        });
        for f in [
            hello,
            Frame::Reject { reason: "wrong cluster".into() },
            Frame::Raft(vec![1, 2, 3, 255]),
            Frame::Ping { nonce: 7 },
            Frame::Pong { nonce: 7 },
        ] {
            assert_eq!(roundtrip(&f), f);
        }
    }

    #[test]
    fn raft_payload_is_a_compact_byte_string() {
        let payload = vec![0xAB; 1000];
        let bytes = encode_frame(&Frame::Raft(payload)).unwrap();
        // bin 16 header (3 bytes) + variant tag overhead; an int array would be ~2000 bytes.
        assert!(bytes.len() < 1016, "encoded size {}", bytes.len());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for junk in [&b""[..], b"\xff\xff\xff", b"GET / HTTP/1.1\r\n", &[0x92, 0xcc]] {
            assert!(decode_frame(junk).is_err());
        }
        assert!(matches!(decode_frame(&vec![0; MAX_FRAME_LEN + 1]), Err(FrameError::TooLong { .. })));
    }

    #[test]
    fn bytes_after_the_frame_are_refused() {
        let mut body = encode_frame(&Frame::Pong { nonce: 7 }).unwrap();
        assert_eq!(decode_frame(&body).unwrap(), Frame::Pong { nonce: 7 });
        // Two frames in one body (a sender framing differently), or a stray byte.
        body.extend(encode_frame(&Frame::Ping { nonce: 8 }).unwrap());
        let err = decode_frame(&body).unwrap_err();
        assert!(matches!(err, FrameError::Trailing { .. }), "{err}");
        assert!(err.to_string().contains("bytes after the frame"), "{err}");
    }

    #[test]
    fn nesting_beyond_the_limit_is_refused() {
        use crate::host::HostFacts;
        use crate::ups::{Power, UpsReading, UpsState};
        let observation = Frame::Observation(Box::new(Observation {
            node: "agent-1".into(),
            seq: 1,
            taken_at_unix_ms: 0,
            clock_ms: 0,
            host: HostFacts::default(),
            ups: vec![UpsReading {
                name: "u".into(),
                state: UpsState::Stale,
                observed_at_ms: 0,
                last_data_ms: None,
            }],
            power: Power::Unknown,
            power_for_ms: 0,
            battery: None,
            probes: vec![],
            peers: vec![],
        }));
        let plain = encode_frame(&observation).unwrap();
        // The UPS state with an extra element nested `depth` deep: serde buffers an
        // internally tagged enum's contents, one recursive call per level.
        let stale = b"\x91\xa5stale";
        let at = plain.windows(stale.len()).position(|w| w == stale).unwrap();
        let nested = |depth: usize| {
            let mut body = plain[..at].to_vec();
            body.extend_from_slice(b"\x92\xa5stale");
            body.extend(std::iter::repeat_n(0x91, depth));
            body.push(0xc0);
            body.extend_from_slice(&plain[at + stale.len()..]);
            body
        };
        let Err(FrameError::Decode(e)) = decode_frame(&nested(1000)) else { panic!("decoded") };
        assert!(matches!(e, rmp_serde::decode::Error::DepthLimitExceeded), "{e}");
        let Err(FrameError::Decode(e)) = decode_frame(&nested(MAX_FRAME_DEPTH - 8)) else {
            panic!("decoded")
        };
        assert!(!matches!(e, rmp_serde::decode::Error::DepthLimitExceeded), "{e}");
    }
}
