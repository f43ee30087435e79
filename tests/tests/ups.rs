//! A real agent process reading a real upsd: the power cut shows in its status.

use std::time::Duration;

use sitewatch_tests::upsd::{Upsd, UpsdOptions, unavailable};
use sitewatch_tests::{Cluster, sitewatch, wait_for};

#[test]
fn an_agent_reports_its_ups_going_on_battery_and_back() {
    if let Some(why) = unavailable(false) {
        sitewatch_tests::skip("ups", "SITEWATCH_REQUIRE_NUT", &why);
        return;
    }
    let upsd = Upsd::launch(&["site"], UpsdOptions::default());
    let mut c = Cluster::new(&[("agent-1", "agent", true)]);
    c.node("agent-1").append_config(&format!(
        "\n[[ups]]\nname = \"site\"\nserver = \"{}\"\npoll-interval = \"500ms\"\n",
        upsd.server()
    ));
    c.node("agent-1").start();
    let on_battery_for =
        |c: &mut Cluster| c.node("agent-1").status()?["observation"]["power_for_ms"].as_u64();
    let power = |c: &mut Cluster| {
        let s = c.node("agent-1").status()?;
        Some(s["observation"]["power"].as_str()?.to_string())
    };
    wait_for(Duration::from_secs(15), "the agent to read the UPS on line", || {
        (power(&mut c)? == "line").then_some(())
    });

    upsd.write_status("site", "OB DISCHRG", 97);
    wait_for(Duration::from_secs(10), "the agent to see the UPS on battery", || {
        (power(&mut c)? == "battery").then_some(())
    });
    let socket = c.node("agent-1").socket.clone();
    let table = sitewatch(&["status", "--socket", socket.to_str().expect("utf-8")]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.contains("power    ON BATTERY"), "{text}");
    assert!(text.contains("OB DISCHRG, charge 97%"), "{text}");

    // Restarted during the outage (kill -9: no clean stop), the agent still knows how long
    // its host has been on battery; counting from 0 would delay the burst.
    let before = wait_for(Duration::from_secs(10), "3 s on battery", || {
        on_battery_for(&mut c).filter(|ms| *ms >= 3000)
    });
    c.node("agent-1").kill9();
    c.node("agent-1").start();
    let after = wait_for(Duration::from_secs(15), "the restarted agent to read the UPS on battery", || {
        (power(&mut c)? == "battery").then(|| on_battery_for(&mut c)).flatten()
    });
    assert!(after >= before, "on battery for {after} ms after the restart, {before} ms before it");

    std::thread::sleep(Duration::from_millis(1200)); // dummy-ups needs writes a second apart
    upsd.write_status("site", "OL CHRG", 97);
    wait_for(Duration::from_secs(10), "the agent to see the UPS back on line", || {
        (power(&mut c)? == "line").then_some(())
    });
}
