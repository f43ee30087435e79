//! The daemon speaks systemd's notify protocol: READY=1 once serving, STATUS= with the
//! leader, WATCHDOG=1 from the raft loop at half of WatchdogSec, STOPPING=1 on SIGTERM,
//! and a clean exit.

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use sitewatch_tests::Cluster;

fn receive_for(sock: &UnixDatagram, how_long: Duration) -> Vec<String> {
    let mut out = Vec::new();
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    while start.elapsed() < how_long {
        if let Ok(n) = sock.recv(&mut buf) {
            out.push(String::from_utf8_lossy(&buf[..n]).trim().to_string());
        }
    }
    out
}

#[test]
fn ready_status_watchdog_and_stopping() {
    let mut c = Cluster::three();
    let path = c.dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).expect("bind notify socket");
    sock.set_read_timeout(Some(Duration::from_millis(100))).expect("timeout");
    let notify = path.to_str().expect("utf-8").to_string();
    c.node("witness").start_with_env(&[("NOTIFY_SOCKET", &notify), ("WATCHDOG_USEC", "1000000")]);
    c.node("agent-1").start();
    c.node("agent-2").start();
    c.wait_leader(Duration::from_secs(15));

    // Everything sent so far is queued on the socket; drain it, then count pets over
    // a fixed window.
    let startup = receive_for(&sock, Duration::from_millis(150));
    let window = receive_for(&sock, Duration::from_secs(2));
    assert_eq!(startup.first().map(String::as_str), Some("READY=1"), "READY=1 comes first: {startup:?}");
    let pets = window.iter().filter(|m| *m == "WATCHDOG=1").count();
    // WatchdogSec=1s means a pet every 0.5 s: four in two seconds, give or take one.
    assert!((3..=5).contains(&pets), "{pets} watchdog pets in 2 s: {window:?}");
    let last_status = startup.iter().chain(&window).rev().find(|m| m.starts_with("STATUS=")).cloned();
    let last_status = last_status.expect("a STATUS= line");
    assert!(last_status.contains("STATUS=leader agent-"), "the status line names the leader: {last_status}");
    assert!(last_status.contains("voters reachable 3/3"), "{last_status}");

    let status = c.node("witness").terminate();
    assert!(status.success(), "SIGTERM is a clean stop: {status:?}");
    let after = receive_for(&sock, Duration::from_millis(300));
    assert!(after.iter().any(|m| m == "STOPPING=1"), "{after:?}");
}
