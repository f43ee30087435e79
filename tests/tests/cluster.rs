//! Real processes over real TLS on loopback: election, kill -9 failover, catch-up after
//! restart, and hostile connections that must cost nothing but themselves.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use sitewatch_proto::{Frame, Hello, PROTOCOL_VERSION};
use sitewatch_tests::{Cluster, make_node, sitewatch, wait_for};

const ELECTION_LIMIT: Duration = Duration::from_secs(15);

fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

#[test]
fn elects_fails_over_after_kill_9_and_the_killed_node_catches_up() {
    let mut c = Cluster::three();
    // agent-1 probes the witness's cluster port with TCP connects, as an operator would.
    let witness_port = c.node("witness").spec.port;
    let probe = format!(
        "\n[[probe]]\nname = \"witness-tcp\"\ntarget = \"127.0.0.1:{witness_port}\"\nkind = \"tcp\"\ninterval = \"200ms\"\n"
    );
    let agent_config = c.node("agent-1").config.clone();
    let text = std::fs::read_to_string(&agent_config).expect("config") + &probe;
    std::fs::write(&agent_config, text).expect("write config");
    c.start_all();
    let (first, term) = c.wait_leader(ELECTION_LIMIT);
    assert_ne!(first, "witness", "with both agents up, an agent leads (priority)");
    for n in &c.nodes {
        let s = n.status().expect("status");
        assert_eq!(s["schema_version"], 1);
        assert_eq!(s["quorum"]["quorate"], true);
        let observation = &s["observation"];
        if n.spec.role == "witness" {
            assert!(observation.is_null(), "the witness observes nothing of the site: {observation}");
        } else {
            assert_eq!(observation["node"], n.spec.name.as_str());
            assert!(observation["host"]["uptime_s"].as_u64().is_some_and(|u| u > 0), "{observation}");
            let seq = observation["seq"].as_u64().expect("seq");
            let later = wait_for(Duration::from_secs(5), "a newer observation", || {
                let s = n.status()?;
                let next = s["observation"]["seq"].as_u64()?;
                (next > seq).then_some(next)
            });
            assert!(later > seq);
        }
    }
    // Peer pings feed each peer's link window: answered, none lost on loopback.
    let link = wait_for(ELECTION_LIMIT, "a ping answered by every peer", || {
        let s = c.node(&first).status()?;
        let peers = s["peers"].as_array()?.clone();
        peers.iter().all(|p| p["link"]["replies"].as_u64() > Some(0)).then_some(peers)
    });
    for p in &link {
        assert_eq!(p["link"]["lost"], 0, "{p}");
        assert_eq!(p["link"]["reach"].as_u64().map(|r| r & 1), Some(1), "{p}");
        assert!(p["rtt_ms"].as_f64().is_some_and(|r| r < 1000.0), "{p}");
    }
    // The links the verdict judges travel in each agent's observation, ready for the
    // leader: its link to the witness, never its links to other agents (the witness's
    // observations carry its links to the agents; a witness's status shows none).
    for agent in ["agent-1", "agent-2"] {
        let observed = wait_for(ELECTION_LIMIT, "an observation with an answered link", || {
            let s = c.node(agent).status()?;
            let peers = s["observation"]["peers"].as_array()?.clone();
            peers.iter().all(|p| p["link"]["replies"].as_u64() > Some(0)).then_some(peers)
        });
        let names: Vec<&str> = observed.iter().filter_map(|p| p["name"].as_str()).collect();
        assert_eq!(names, ["witness"], "{agent}: {observed:?}");
        assert_eq!(observed[0]["connected"], true, "{agent}: {observed:?}");
    }
    // The agent's probe shows in its status, and the probed witness does not log each
    // probe as a refused peer.
    let probe = wait_for(ELECTION_LIMIT, "agent-1's probe of the witness answered", || {
        let s = c.node("agent-1").status()?;
        let p = s["observation"]["probes"].get(0)?.clone();
        // Three answered in a row (the first may find the witness not yet listening).
        (p["summary"]["reach"].as_u64()? & 0b111 == 0b111).then_some(p)
    });
    assert_eq!((&probe["name"], &probe["method"]), (&"witness-tcp".into(), &"tcp".into()), "{probe}");
    assert!(probe["summary"]["rtt_median_ms"].as_f64().is_some_and(|r| r < 1000.0), "{probe}");
    let witness_logs = c.node("witness").logs();
    assert_eq!(count(&witness_logs, "refused cluster connection"), 0, "{witness_logs}");
    let agent_2 = c.node("agent-2").status().expect("status");
    assert!(agent_2["observation"]["probes"].as_array().is_some_and(|p| p.is_empty()), "{agent_2}");

    c.node(&first).kill9();
    let lost = Instant::now();
    let (second, second_term) = wait_for(ELECTION_LIMIT, "a new leader after kill -9", || {
        c.agreed_leader().filter(|(l, _)| *l != first)
    });
    println!("new leader {second} after {:?}", lost.elapsed());
    assert!(second_term > term, "a new leader means a new term");
    assert_ne!(second, "witness", "the surviving agent is preferred over the witness");

    let leader_commit =
        c.node(&second).status().expect("leader status")["raft"]["commit"].as_u64().expect("commit");
    assert!(leader_commit >= 2, "each leader commits an entry of its term");
    c.node(&first).start();
    let caught_up = wait_for(ELECTION_LIMIT, "the restarted node to catch up", || {
        let s = c.node(&first).status()?;
        let follows = s["raft"]["leader_name"].as_str()? == second;
        let applied = s["raft"]["applied"].as_u64()?;
        (follows && applied >= leader_commit).then_some(applied)
    });
    assert!(caught_up >= leader_commit);
    // Nobody took over from the new leader when the old one came back.
    assert_eq!(c.agreed_leader().map(|(l, _)| l), Some(second.clone()));
    let logs = c.node(&second).logs();
    assert!(logs.contains("leadership changed"), "greppable leadership line:\n{logs}");
}

fn pem_certs(path: &std::path::Path) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_file_iter(path).expect("pem file").collect::<Result<_, _>>().expect("pem certs")
}

/// A TLS client with `member`'s certificate from `cert_dir`, trusting the cluster CA.
fn tls_client(
    c: &Cluster,
    cert_dir: &std::path::Path,
    member: &str,
    port: u16,
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let certs = pem_certs(&cert_dir.join(format!("{member}.pem")));
    let key = PrivateKeyDer::from_pem_file(cert_dir.join(format!("{member}.key"))).expect("key");
    let mut roots = rustls::RootCertStore::empty();
    for ca in pem_certs(&c.ca.join("ca.pem")) {
        roots.add(ca).expect("add ca");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("tls13")
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)
        .expect("client auth");
    let conn =
        rustls::ClientConnection::new(Arc::new(config), ServerName::try_from("witness").expect("name"))
            .expect("client connection");
    let tcp = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    rustls::StreamOwned::new(conn, tcp)
}

fn write_frame(s: &mut impl Write, f: &Frame) {
    let body = rmp_serde::to_vec(f).expect("encode");
    s.write_all(&(body.len() as u32).to_be_bytes()).expect("write len");
    s.write_all(&body).expect("write body");
    s.flush().expect("flush");
}

fn read_frame(s: &mut impl Read) -> Option<Frame> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).ok()?;
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut body).ok()?;
    rmp_serde::from_slice(&body).ok()
}

/// Reads until the peer closes (or the read times out, which fails the caller's check).
fn closed_by_peer(s: &mut impl Read) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) => {
                return e.kind() != std::io::ErrorKind::WouldBlock
                    && e.kind() != std::io::ErrorKind::TimedOut;
            }
        }
    }
}

fn members_digest(c: &Cluster, member: &str) -> u64 {
    let config = c.dir.path().join(member).join("config.toml");
    let out = sitewatch(&["check-config", config.to_str().expect("utf-8")]);
    assert!(out.status.success(), "check-config: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let hex = text.rsplit("members digest ").next().expect("digest in output").trim();
    u64::from_str_radix(hex, 16).expect("hex digest")
}

#[test]
fn hostile_connections_are_refused_with_one_line_each_and_harm_nothing() {
    // `spare` is a configured learner that never runs: its certificate lets the test speak
    // raw frames as a member without displacing a live member's connection.
    let mut c = Cluster::new(&[
        ("agent-1", "agent", true),
        ("agent-2", "agent", true),
        ("witness", "witness", true),
        ("spare", "agent", false),
    ]);
    for name in ["agent-1", "agent-2", "witness"] {
        c.node(name).start();
    }
    let (leader, term) = wait_for(ELECTION_LIMIT, "a leader", || {
        c.agreed_leader().filter(|_| c.nodes.iter().filter(|n| n.is_running()).all(|n| n.status().is_some()))
    });
    let witness_port = c.node("witness").spec.port;
    let refused = "refused cluster connection";
    let before = count(&c.node("witness").logs(), refused);

    // 1. Garbage that is not TLS at all.
    let mut raw = TcpStream::connect(("127.0.0.1", witness_port)).expect("connect");
    raw.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    raw.write_all(b"GET / HTTP/1.1\r\nHost: witness\r\n\r\n\x00\xff\x16\x03").expect("write");
    assert!(closed_by_peer(&mut raw), "garbage must be disconnected");
    let logs = wait_for(Duration::from_secs(5), "the garbage refusal", || {
        let l = c.node("witness").logs();
        (count(&l, refused) == before + 1).then_some(l)
    });
    assert!(logs.lines().any(|l| l.contains(refused) && l.contains("TLS handshake failed")), "{logs}");

    let spare_dir = c.dir.path().join("spare");
    // 2. A member certificate, but a hello for another cluster: refused with a reason.
    let mut s = tls_client(&c, &spare_dir, "spare", witness_port);
    let hello = Hello {
        cluster_id: "someone-else".into(),
        node_id: 4,
        node_name: "spare".into(),
        protocol_version: PROTOCOL_VERSION,
        members_digest: members_digest(&c, "spare"),
    };
    write_frame(&mut s, &Frame::Hello(hello.clone()));
    match read_frame(&mut s) {
        Some(Frame::Reject { reason }) => assert!(reason.contains("someone-else"), "{reason}"),
        other => panic!("expected a reject, got {other:?}"),
    }
    assert!(closed_by_peer(&mut s));

    // 3. The right cluster, but another member list: refused, both sides told why.
    let mut s = tls_client(&c, &spare_dir, "spare", witness_port);
    write_frame(
        &mut s,
        &Frame::Hello(Hello { cluster_id: "e2e".into(), members_digest: 7, ..hello.clone() }),
    );
    match read_frame(&mut s) {
        Some(Frame::Reject { reason }) => assert!(reason.contains("member list differs"), "{reason}"),
        other => panic!("expected a reject, got {other:?}"),
    }

    // 4. A proper hello, then an oversized frame: the connection is closed.
    let mut s = tls_client(&c, &spare_dir, "spare", witness_port);
    write_frame(&mut s, &Frame::Hello(Hello { cluster_id: "e2e".into(), ..hello.clone() }));
    assert!(matches!(read_frame(&mut s), Some(Frame::Hello(h)) if h.node_name == "witness"));
    s.write_all(&(8u32 << 20).to_be_bytes()).expect("write huge length");
    s.write_all(&[0u8; 1024]).expect("write some body");
    s.flush().expect("flush");
    assert!(closed_by_peer(&mut s), "an oversized frame must close the connection");

    // 5. A client certificate from another CA, named like a member: refused in the
    // handshake by the witness itself.
    let other_ca = c.dir.path().join("other-ca");
    let forged = c.dir.path().join("forged");
    assert!(sitewatch(&["ca", "init", "--dir", other_ca.to_str().expect("utf-8")]).status.success());
    let issue = ["cert", "issue", "spare", "--ca", other_ca.to_str().expect("utf-8"), "--out"];
    assert!(sitewatch(&[&issue[..], &[forged.to_str().expect("utf-8")]].concat()).status.success());
    let mut s = tls_client(&c, &forged, "spare", witness_port);
    let sent = s.write_all(b"x").and_then(|_| s.flush());
    assert!(sent.is_err() || closed_by_peer(&mut s), "a foreign client certificate must be refused");

    // 6. A real daemon posing as agent-2 with a certificate from another CA.
    let mut spec = c.node("agent-2").spec.clone();
    spec.port = sitewatch_tests::free_port();
    let specs: Vec<_> = c.nodes.iter().map(|n| n.spec.clone()).collect();
    let impostor_root = c.dir.path().join("impostor");
    std::fs::create_dir_all(&impostor_root).expect("dir");
    let mut impostor = make_node(&impostor_root, &other_ca, &spec, &specs, "e2e");
    impostor.start();

    let logs = wait_for(Duration::from_secs(10), "the witness to refuse both foreign certificates", || {
        let l = c.node("witness").logs();
        (count(&l, refused) >= before + 5).then_some(l)
    });
    let lines: Vec<&str> = logs.lines().filter(|l| l.contains(refused)).collect();
    let has = |what: &str| lines.iter().any(|l| l.contains(what));
    assert!(has("TLS handshake failed: received corrupt message"), "garbage is named:\n{logs}");
    assert!(has("belongs to cluster `someone-else`"), "the wrong cluster id is named:\n{logs}");
    assert!(has("its member list differs from ours"), "the member list mismatch is named:\n{logs}");
    assert!(has("invalid peer certificate: UnknownIssuer"), "the foreign CA is named:\n{logs}");
    // The impostor distrusts the witness's certificate: it either says so with an alert or
    // hangs up mid-handshake, depending on timing.
    assert!(
        has("received fatal alert: UnknownCA") || has("does it trust this node's CA?"),
        "the impostor's refusal is explained:\n{logs}"
    );
    assert!(logs.contains("malformed frame: frame size too big"), "the oversized frame is named:\n{logs}");
    let impostor_status = wait_for(Duration::from_secs(10), "the impostor's status", || impostor.status());
    let joined = impostor_status["peers"].as_array().expect("peers").iter().any(|p| p["connected"] == true);
    assert!(!joined, "a node with a foreign CA must not connect to anyone: {impostor_status}");
    assert!(impostor.logs().contains("UnknownIssuer"), "the impostor says why it cannot connect");
    impostor.kill9();

    // Nothing else was harmed: same leader, same term, every real peer still connected.
    assert_eq!(c.agreed_leader(), Some((leader, term)), "no election was triggered");
    for name in ["agent-1", "agent-2", "witness"] {
        let s = c.node(name).status().expect("status");
        let peers = s["peers"].as_array().expect("peers");
        for p in peers.iter().filter(|p| p["name"] != "spare") {
            assert_eq!(p["connected"], true, "{name} lost {}", p["name"]);
        }
    }
}
