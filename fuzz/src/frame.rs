//! What must hold of the frame decoder ([`sitewatch_proto::decode_frame`]) for any frame
//! body a peer sends: it returns rather than panics, within a small stack, and a frame it
//! accepts survives a trip through [`sitewatch_proto::encode_frame`] and back unchanged.

use std::sync::mpsc::{SyncSender, sync_channel};
use std::sync::{Mutex, OnceLock};

use sitewatch_proto::{Frame, FrameError, MAX_FRAME_LEN, decode_frame, encode_frame};

/// The transport decodes on a tokio worker (2 MiB of stack, shared with everything else
/// the task does); the decoder must fit in a fraction of that, even in a debug build.
const DECODE_STACK: usize = 256 << 10;

pub fn check(body: &[u8]) {
    let Ok(frame) = decode_on_small_stack(body) else {
        return;
    };
    assert!(body.len() <= MAX_FRAME_LEN, "a body over the limit decoded");
    let bytes = encode_frame(&frame).expect("a decoded frame encodes");
    let again = decode_frame(&bytes).expect("an encoded frame decodes");
    // The encodings are compared, not only the frames: a peer may send NaN, which is not
    // equal to itself, but must still come back as the same bits.
    let bytes_again = encode_frame(&again).expect("a decoded frame encodes");
    assert!(bytes == bytes_again, "re-encoding changed the frame's bytes: {frame:?} became {again:?}");
    if comparable(&frame) {
        assert_eq!(again, frame, "re-encoding changed the frame");
    }
}

/// Decode on a thread with [`DECODE_STACK`] of stack: deep recursion overflows it and
/// kills the process, which fails the fuzz run or the test. One thread serves every call
/// (starting a thread per input cost the fuzzer nine tenths of its speed).
fn decode_on_small_stack(body: &[u8]) -> Result<Frame, FrameError> {
    type Job = (Vec<u8>, SyncSender<Result<Frame, FrameError>>);
    static DECODER: OnceLock<Mutex<SyncSender<Job>>> = OnceLock::new();
    let jobs = DECODER.get_or_init(|| {
        let (jobs, queue) = sync_channel::<Job>(0);
        std::thread::Builder::new()
            .stack_size(DECODE_STACK)
            .spawn(move || {
                for (body, reply) in queue {
                    let _ = reply.send(decode_frame(&body));
                }
            })
            .expect("the decoding thread starts");
        Mutex::new(jobs)
    });
    let (reply, answer) = sync_channel(1);
    jobs.lock().expect("decoder lock").send((body.to_vec(), reply)).expect("the decoding thread runs");
    // A panic while decoding drops `reply` unanswered (and its message is printed).
    answer.recv().expect("the decoder panicked")
}

/// False when the frame holds a NaN, the one value that is not equal to itself.
#[allow(clippy::eq_op)]
fn comparable(frame: &Frame) -> bool {
    frame == frame
}
