//! The frame and NUT fuzz targets' checks, run by `cargo test` on every stored input: the
//! crashes kept under fuzz/regressions/<target>/ (each once a bug, since fixed) and the
//! seeds under fuzz/corpus/<target>/. The checks are the fuzz crate's own source files.

#[path = "../../fuzz/src/frame.rs"]
mod frame;
#[path = "../../fuzz/src/nut.rs"]
mod nut;
#[path = "../../fuzz/src/replay.rs"]
mod replay;

use std::path::{Path, PathBuf};

use sitewatch_proto::host::{GoingDown, HostFacts};
use sitewatch_proto::link::{LinkSummary, ProbeKind, ProbeMethod, ProbeStatus};
use sitewatch_proto::observation::{BatterySummary, Observation, PeerLink};
use sitewatch_proto::ups::{Power, StatusFlag, UpsData, UpsReading, UpsState, UpsStatus};
use sitewatch_proto::{Frame, Hello, PROTOCOL_VERSION, encode_frame};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

#[test]
fn frame_inputs_pass_the_fuzz_checks() {
    assert!(replay::replay(&fuzz_dir(), "frame", frame::check) > 0, "no frame seeds");
}

#[test]
fn nut_inputs_pass_the_fuzz_checks() {
    assert!(replay::replay(&fuzz_dir(), "nut", nut::check) > 0, "no NUT seeds");
}

/// The frame seeds are these frames as the real encoder writes them. When a frame changes,
/// rewrite them with `SITEWATCH_WRITE_SEEDS=1 cargo test -p sitewatch-proto --test fuzz_regressions`.
#[test]
fn frame_seeds_are_what_the_encoder_writes() {
    let dir = fuzz_dir().join("corpus/frame");
    let write = std::env::var_os("SITEWATCH_WRITE_SEEDS").is_some();
    for (name, frame) in seed_frames() {
        let path = dir.join(name);
        let bytes = encode_frame(&frame).expect("encode");
        if write {
            std::fs::write(&path, &bytes).expect("write seed");
        }
        let stored = std::fs::read(&path).unwrap_or_default();
        assert!(stored == bytes, "{} is stale: set SITEWATCH_WRITE_SEEDS=1 to rewrite it", path.display());
    }
}

fn seed_frames() -> Vec<(&'static str, Frame)> {
    let hello = Hello {
        cluster_id: "home".into(),
        node_id: 1,
        node_name: "agent-1".into(),
        protocol_version: PROTOCOL_VERSION,
        members_digest: 0x5a17_e5ee_d00d_f00d,
    };
    // raft-rs's eraftpb::Message for a heartbeat from 1 to 2 in term 3 with commit 5, as
    // protobuf encodes it: msg_type (1) = MsgHeartbeat (8), to (2), from (3), term (4),
    // commit (8).
    let heartbeat = vec![0x08, 0x08, 0x10, 0x02, 0x18, 0x01, 0x20, 0x03, 0x40, 0x05];
    vec![
        ("hello", Frame::Hello(hello)),
        ("reject", Frame::Reject { reason: "another cluster: `lab`, not `home`".into() }),
        ("raft-heartbeat", Frame::Raft(heartbeat)),
        ("ping", Frame::Ping { nonce: 42 }),
        ("pong", Frame::Pong { nonce: u64::MAX }),
        ("observation-on-line", Frame::Observation(Box::new(observation(false)))),
        ("observation-on-battery", Frame::Observation(Box::new(observation(true)))),
    ]
}

/// An agent's observation as the observer assembles it: host facts, two UPS readings (one
/// with data, one stale), a probe and a peer link.
fn observation(on_battery: bool) -> Observation {
    let link = LinkSummary {
        sent: 60,
        replies: 58,
        lost: 1,
        late: 1,
        loss: Some(1.0 / 60.0),
        rtt_median_ms: Some(21.5),
        rtt_p95_ms: Some(48.0),
        jitter_ms: Some(2.25),
        last_rtt_ms: Some(19.0),
        reach: 0o377,
    };
    let flags =
        if on_battery { [StatusFlag::OB, StatusFlag::DISCHRG] } else { [StatusFlag::OL, StatusFlag::CHRG] };
    let data = UpsData {
        status: UpsStatus {
            flags: flags.into_iter().collect(),
            unknown: ["ECO".to_owned()].into_iter().collect(),
        },
        battery_charge: Some(if on_battery { 87.0 } else { 100.0 }),
        battery_runtime_s: Some(1800),
        battery_runtime_low_s: Some(300),
        input_voltage: Some(if on_battery { 0.0 } else { 230.0 }),
        load: Some(25.0),
    };
    let rack = UpsReading::unknown("rack", 1_000).next(UpsState::Data(data), 61_000);
    let spare = UpsReading::unknown("spare", 1_000).next(UpsState::Stale, 61_000);
    Observation {
        node: "agent-1".into(),
        seq: 61,
        taken_at_unix_ms: 1_767_225_600_000,
        clock_ms: 61_000,
        host: HostFacts {
            hostname: Some("agent-1.lan".into()),
            boot_id: Some("6f1c2d6e-3b5a-4e0b-9a57-0c1d2e3f4a5b".into()),
            uptime_s: 86_400,
            load: [0.5, 0.25, 0.125],
            memory_total_kib: 16_384_000,
            memory_available_kib: 8_192_000,
            going_down: on_battery.then(|| GoingDown::ShutdownScheduled {
                mode: "poweroff".into(),
                at_unix_ms: Some(1_767_225_900_000),
            }),
        },
        ups: vec![rack, spare],
        power: if on_battery { Power::Battery } else { Power::Line },
        power_for_ms: 30_000,
        battery: on_battery.then(|| BatterySummary {
            critical: vec!["LB:rack".into()],
            runtime_s: Some(1800),
            charge_pct: Some(87.0),
        }),
        probes: vec![ProbeStatus {
            name: "gateway".into(),
            target: "192.168.1.1".into(),
            kind: ProbeKind::Icmp,
            method: ProbeMethod::TcpFallback,
            summary: link.clone(),
            last_error: Some("ping socket refused: net.ipv4.ping_group_range".into()),
        }],
        peers: vec![PeerLink { name: "witness".into(), connected: true, link, last_contact_ms: Some(120) }],
    }
}
