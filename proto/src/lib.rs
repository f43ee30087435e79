//! The sans-IO core of sitewatch: what travels between nodes and what a committed
//! log entry does to the replicated site state. No tasks, no sockets, no clocks:
//! every function here takes its inputs (including "now") as arguments.

pub mod burst;
pub mod host;
pub mod link;
pub mod observation;
pub mod policy;
pub mod spend;
pub mod state;
pub mod ups;
pub mod verdict;
pub mod wire;

pub use state::{Command, Decision, DecisionRecord, FencingToken, SiteState, Verdict};
pub use wire::{Frame, FrameError, Hello, MAX_FRAME_LEN, PROTOCOL_VERSION, decode_frame, encode_frame};
