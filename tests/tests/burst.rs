//! End to end with real processes: two agents reading a real upsd (dummy-ups), a
//! witness, moto's server as the AWS Auto Scaling endpoint, a webhook receiver that
//! checks signatures, and an exec hook. A power cut bursts the group to the burst size
//! after burst-after; power back gives it back after scale-down-after, not before.

use std::time::{Duration, Instant};

use sitewatch_tests::moto::{self, Moto};
use sitewatch_tests::receiver::Receiver;
use sitewatch_tests::upsd::{Upsd, UpsdOptions, unavailable};
use sitewatch_tests::{Cluster, wait_for};

const GROUP: &str = "burst-asg";
const HOOK_SECRET: &[u8] = b"e2e-webhook-signing-key";
const BURST_AFTER_S: u64 = 5;
const SCALE_DOWN_AFTER_S: u64 = 20;

/// Whether this machine has every piece; where it does not, says so (or fails, where
/// CI requires the piece).
fn have_pieces(test: &str) -> bool {
    if let Some(why) = unavailable(false) {
        sitewatch_tests::skip(test, "SITEWATCH_REQUIRE_NUT", &why);
        return false;
    }
    if let Err(why) = moto::moto_server() {
        sitewatch_tests::skip(test, "SITEWATCH_REQUIRE_MOTO", &why);
        return false;
    }
    true
}

#[test]
fn a_power_cut_bursts_the_group_and_recovery_gives_it_back_after_the_grace() {
    if !have_pieces("burst") {
        return;
    }
    let upsd = Upsd::launch(&["site"], UpsdOptions::default());
    let moto = Moto::launch().expect("moto_server starts");
    moto.create_group(GROUP, 0, 4);
    let receiver = Receiver::start(HOOK_SECRET);
    let mut c = Cluster::three();
    let exec_log = c.dir.path().join("exec-calls.log");
    let hook = c.dir.path().join("burst-hook.sh");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\nbody=$(cat)\necho \"$BURST_IDEMPOTENCY_KEY $BURST_DESIRED_CAPACITY $BURST_VERDICT ${{#body}}\" >> {}\n",
            exec_log.display()
        ),
    )
    .expect("hook");
    std::process::Command::new("chmod").arg("755").arg(&hook).status().expect("chmod");
    let secret_file = c.dir.path().join("hook.secret");
    std::fs::write(&secret_file, HOOK_SECRET).expect("secret");

    let common = format!(
        "\n[policy]\nburst-after = \"{BURST_AFTER_S}s\"\nscale-down-after = \"{SCALE_DOWN_AFTER_S}s\"\n\
         host-lost-after = \"10s\"\n[policy.capacity]\nmax = 4\n\
         \n[[actuator]]\nkind = \"aws-asg\"\nname = \"cloud\"\nregion = \"{region}\"\ngroup = \"{GROUP}\"\n\
         endpoint = \"{endpoint}\"\naccess-key-id = \"{key}\"\nsecret-access-key-env = \"E2E_AWS_SECRET\"\n\
         \n[[actuator]]\nkind = \"webhook\"\nname = \"hook\"\nurl = \"{url}\"\nsecret-file = \"{secret}\"\n\
         \n[[actuator]]\nkind = \"exec\"\nname = \"script\"\ncommand = [\"{script}\"]\n",
        region = moto::REGION,
        endpoint = moto.endpoint(),
        key = moto::ANY_KEY_ID,
        url = receiver.url(),
        secret = secret_file.display(),
        script = hook.display(),
    );
    let ups =
        format!("\n[[ups]]\nname = \"site\"\nserver = \"{}\"\npoll-interval = \"500ms\"\n", upsd.server());
    for n in ["agent-1", "agent-2"] {
        c.node(n).append_config(&ups);
    }
    for n in ["agent-1", "agent-2", "witness"] {
        c.node(n).append_config(&common);
        c.node(n).start_with_env(&[("E2E_AWS_SECRET", moto::ANY_SECRET)]);
    }
    let (leader, _) = c.wait_leader(Duration::from_secs(15));
    wait_for(Duration::from_secs(20), "every voter to judge the site healthy", || {
        for n in ["agent-1", "agent-2", "witness"] {
            let s = c.node(n).status()?;
            let a = &s["burst"]["assessment"];
            (a["settled"].as_bool()? && a["verdict"] == "healthy").then_some(())?;
        }
        Some(())
    });
    assert_eq!(moto.desired_capacity(GROUP), 0);

    // Power cut: both agents' UPS on battery.
    upsd.write_status("site", "OB DISCHRG", 95);
    let cut = Instant::now();
    wait_for(Duration::from_secs(BURST_AFTER_S + 15), "the group to burst to 2", || {
        (moto.desired_capacity(GROUP) == 2).then_some(())
    });
    let burst_after = cut.elapsed();
    eprintln!("power cut -> group desired 2 in {burst_after:?} (burst-after {BURST_AFTER_S} s)");
    assert!(
        burst_after >= Duration::from_secs(BURST_AFTER_S) - Duration::from_millis(600),
        "{burst_after:?}"
    );
    let s = c.node(&leader).status().expect("leader status");
    assert_eq!(s["site"]["verdict"], "down", "{s}");
    let token = (
        s["site"]["decision"]["term"].as_u64().expect("term"),
        s["site"]["decision"]["index"].as_u64().expect("index"),
    );
    let key = format!("e2e-{}-{}", token.0, token.1);
    wait_for(Duration::from_secs(10), "every actuator's result to commit", || {
        let s = c.node("witness").status()?;
        ["cloud", "hook", "script"]
            .iter()
            .all(|t| {
                s["site"]["actions"][t]["ok"] == true && s["site"]["actions"][t]["token"]["index"] == token.1
            })
            .then_some(())
    });
    assert_eq!(moto.instance_count(GROUP), 2, "moto runs the burst instances");

    // The webhook: signed, keyed by the fencing token, once per decision.
    let deliveries = receiver.deliveries();
    assert!(deliveries.iter().all(|d| d.signature_ok), "{deliveries:?}");
    let burst: Vec<_> = deliveries.iter().filter(|d| d.body["desired_capacity"] == 2).collect();
    assert_eq!(burst.len(), 1, "one delivery for the burst decision: {deliveries:?}");
    assert_eq!(burst[0].id, key);
    assert_eq!(burst[0].idempotency_key.as_deref(), Some(key.as_str()));
    assert_eq!(burst[0].body["verdict"], "down");
    assert_eq!(burst[0].body["token"]["index"], token.1);
    // The exec hook: its environment and the JSON on stdin.
    let calls = std::fs::read_to_string(&exec_log).expect("exec log");
    let burst_calls: Vec<&str> = calls.lines().filter(|l| l.starts_with(&format!("{key} "))).collect();
    assert_eq!(burst_calls.len(), 1, "{calls}");
    let fields: Vec<&str> = burst_calls[0].split(' ').collect();
    assert_eq!(&fields[1..3], ["2", "down"], "{calls}");
    assert!(fields[3].parse::<usize>().expect("stdin length") > 50, "the action JSON on stdin: {calls}");

    // Power back: recovering, capacity kept through the grace, then given back.
    std::thread::sleep(Duration::from_millis(1200)); // dummy-ups takes writes a second apart
    upsd.write_status("site", "OL CHRG", 95);
    let back = Instant::now();
    wait_for(Duration::from_secs(10), "a committed recovering verdict", || {
        (c.node("agent-1").status()?["site"]["verdict"] == "recovering").then_some(())
    });
    std::thread::sleep(
        Duration::from_secs(SCALE_DOWN_AFTER_S).saturating_sub(back.elapsed() + Duration::from_secs(3)),
    );
    assert_eq!(
        moto.desired_capacity(GROUP),
        2,
        "no scale-down inside the grace ({:?} after power back)",
        back.elapsed()
    );
    wait_for(Duration::from_secs(20), "the group to return to 0", || {
        (moto.desired_capacity(GROUP) == 0).then_some(())
    });
    let given_back = back.elapsed();
    eprintln!("power back -> group desired 0 in {given_back:?} (scale-down-after {SCALE_DOWN_AFTER_S} s)");
    assert!(given_back >= Duration::from_secs(SCALE_DOWN_AFTER_S), "{given_back:?}");
    let history = c.node("agent-2").status().expect("status");
    assert_eq!(history["site"]["verdict"], "healthy");
    assert_eq!(history["site"]["previous_capacity"], 2);
}
