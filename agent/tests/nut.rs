//! The UPS monitor against a real upsd (Debian's nut-server) with dummy-ups drivers.
//!
//! Each test builds its own NUT config directory and upsd on a free loopback port
//! (/work/shared/recipes/nut-upsd.md), so tests run in parallel and clean up in Drop.
//! Without root or nut-server installed, each test prints `SKIPPED: <reason>` and passes;
//! CI runs as root, installs nut-server first and sets SITEWATCH_REQUIRE_NUT=1, which
//! turns a skip into a failure.

// Test code: a panic is how a failure is reported.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use sitewatch_agent::clock::Clock;
use sitewatch_agent::ups::{NutConnection, UpsReadings, spawn_monitors};
use sitewatch_proto::ups::{Power, StatusFlag, UpsConfig, UpsReading, UpsState, feeds_of, host_power};
use sitewatch_tests::upsd::{self, Upsd, UpsdOptions, signal};
use tokio::sync::watch;
use tokio::time::{Instant, sleep, timeout};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// upsd's staleness limit. 15 s is the recipe's; upsd accepts less, and 5 s keeps the
/// stale test short while leaving a healthy 1 s driver far from it.
const MAXAGE_S: u64 = 5;
/// The dummy-ups poll interval: how often the driver re-reads its .dev file.
const DRIVER_POLL: Duration = Duration::from_secs(1);
/// The monitors' settings in these tests: quick polls, a short deadline.
const POLL: Duration = Duration::from_millis(200);
const DEADLINE: Duration = Duration::from_millis(500);
/// How fresh a reading must be to count, for the power rule.
const MAX_AGE: Duration = Duration::from_secs(2);

/// A real upsd for one test, with the write spacing dummy-ups needs.
struct Nut {
    upsd: Upsd,
    /// When each UPS's .dev file was last written: dummy-ups misses a rewrite within the
    /// same second as its last read, so writes are spaced.
    last_write: Vec<(String, Instant)>,
}

impl std::ops::Deref for Nut {
    type Target = Upsd;
    fn deref(&self) -> &Upsd {
        &self.upsd
    }
}

fn skip(reason: &str) -> Option<Nut> {
    // CI sets this after installing nut-server: there a skip would hide a failure.
    if std::env::var_os("SITEWATCH_REQUIRE_NUT").is_some() {
        panic!("SITEWATCH_REQUIRE_NUT is set but {reason}");
    }
    // Straight to the stderr handle, not eprintln!: libtest captures the macros'
    // output of passing tests, and a skip must be seen.
    let _ = writeln!(std::io::stderr(), "\n*** SKIPPED: {reason} ***\n");
    None
}

impl Nut {
    /// Start upsd with one dummy-ups section per name, every UPS on line; None (after a
    /// loud SKIPPED line) when this machine cannot run NUT.
    async fn start(names: &[&str]) -> Option<Nut> {
        Nut::launch(names, false).await
    }

    /// As `start`, and upsd offers STARTTLS with a certificate signed by `Upsd::ca`.
    async fn start_tls(names: &[&str]) -> Option<Nut> {
        Nut::launch(names, true).await
    }

    async fn launch(names: &[&str], tls: bool) -> Option<Nut> {
        if let Some(why) = upsd::unavailable(tls) {
            return skip(&why);
        }
        let options = UpsdOptions { maxage_s: MAXAGE_S, driver_poll_s: DRIVER_POLL.as_secs(), tls };
        let upsd = Upsd::launch(names, options);
        let now = Instant::now();
        let nut = Nut { upsd, last_write: names.iter().map(|n| (n.to_string(), now)).collect() };
        for name in names {
            nut.wait_for_data(name).await;
        }
        Some(nut)
    }

    fn config(&self, name: &str) -> UpsConfig {
        let mut config = UpsConfig::new(name);
        config.server = self.server();
        config.poll_interval = POLL;
        config.timeout = DEADLINE;
        config
    }

    /// Poll directly until upsd has real data for `name` (drivers say WAIT at first).
    async fn wait_for_data(&self, name: &str) {
        let config = self.config(name);
        let started = Instant::now();
        loop {
            if let Ok(mut connection) = NutConnection::connect(&config, None).await
                && let Ok(UpsState::Data(_)) = connection.poll(name).await
            {
                return;
            }
            assert!(started.elapsed() < Duration::from_secs(15), "upsd never had data for {name}");
            sleep(Duration::from_millis(100)).await;
        }
    }

    /// Replace `name`'s .dev file, at least a second and a bit after the previous write.
    /// Returns when the new file is in place.
    async fn set_status(&mut self, name: &str, status: &str, charge: u32) -> Instant {
        let slot = self.last_write.iter_mut().find(|(n, _)| n == name).expect("a UPS of this test");
        tokio::time::sleep_until(slot.1 + Duration::from_millis(1100)).await;
        self.upsd.write_status(name, status, charge);
        slot.1 = Instant::now();
        slot.1
    }
}

/// Monitors for `configs`, with the tracker and token to stop them.
struct Monitors {
    readings: watch::Receiver<UpsReadings>,
    cancel: CancellationToken,
    tracker: TaskTracker,
}

impl Monitors {
    fn start(configs: &[UpsConfig]) -> Monitors {
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        let readings = spawn_monitors(configs, Clock::start(), &cancel, &tracker).unwrap();
        tracker.close();
        Monitors { readings, cancel, tracker }
    }

    fn latest(&self, name: &str) -> UpsReading {
        self.readings.borrow()[name].clone()
    }

    /// Wait until `name`'s reading satisfies `want`; fail with the last reading after `within`.
    async fn wait_for(
        &mut self,
        name: &str,
        within: Duration,
        what: &str,
        want: impl Fn(&UpsReading) -> bool,
    ) -> UpsReading {
        let started = Instant::now();
        let found = timeout(within, async {
            loop {
                let reading = self.readings.borrow_and_update()[name].clone();
                if want(&reading) {
                    return reading;
                }
                self.readings.changed().await.expect("monitors alive");
            }
        })
        .await;
        match found {
            Ok(reading) => {
                eprintln!("{name}: {what} after {} ms", started.elapsed().as_millis());
                reading
            }
            Err(_) => panic!("{name}: no {what} within {within:?}; last: {:?}", self.latest(name)),
        }
    }

    async fn stop(self) {
        self.cancel.cancel();
        timeout(Duration::from_secs(1), self.tracker.wait()).await.expect("monitors stop promptly");
    }
}

fn has_status(reading: &UpsReading, flags: &[StatusFlag], absent: &[StatusFlag]) -> bool {
    match &reading.state {
        UpsState::Data(d) => {
            flags.iter().all(|f| d.status.has(*f)) && absent.iter().all(|f| !d.status.has(*f))
        }
        _ => false,
    }
}

use StatusFlag::{LB, OB, OL};

#[tokio::test]
async fn status_changes_are_seen_within_two_driver_polls() {
    let Some(mut nut) = Nut::start(&["site"]).await else { return };
    let mut monitors = Monitors::start(&[nut.config("site")]);
    let first =
        monitors.wait_for("site", Duration::from_secs(3), "OL", |r| has_status(r, &[OL], &[OB])).await;
    let UpsState::Data(data) = &first.state else { unreachable!() };
    assert_eq!(data.battery_charge, Some(100.0));
    assert_eq!(data.battery_runtime_s, Some(1800));
    assert_eq!(data.battery_runtime_low_s, Some(300));
    assert_eq!(data.input_voltage, Some(230.0));
    assert_eq!(data.load, Some(25.0));

    let steps: [(&str, u32, &[StatusFlag], &[StatusFlag]); 3] = [
        ("OB DISCHRG", 80, &[OB], &[OL, LB]),
        ("OB LB", 10, &[OB, LB], &[OL]),
        ("OL CHRG", 15, &[OL], &[OB, LB]),
    ];
    let mut worst = Duration::ZERO;
    for (status, charge, flags, absent) in steps {
        let written = nut.set_status("site", status, charge).await;
        let reading = monitors
            .wait_for("site", 2 * DRIVER_POLL, status, |r| {
                has_status(r, flags, absent)
                    && matches!(&r.state, UpsState::Data(d) if d.battery_charge == Some(charge.into()))
            })
            .await;
        assert!(reading.is_fresh(reading.observed_at_ms, MAX_AGE));
        worst = worst.max(written.elapsed());
    }
    eprintln!("worst change-to-observation latency: {} ms", worst.as_millis());
    monitors.stop().await;
}

#[tokio::test]
async fn a_frozen_driver_goes_stale_and_comes_back() {
    let Some(nut) = Nut::start(&["site"]).await else { return };
    let mut monitors = Monitors::start(&[nut.config("site")]);
    monitors.wait_for("site", Duration::from_secs(3), "data", |r| has_status(r, &[OL], &[])).await;
    let driver = nut.driver_pid("site");
    signal(driver, "STOP");
    // upsd calls it stale between MAXAGE/3-ish and MAXAGE plus its own 2 s check period.
    let stale = monitors
        .wait_for("site", Duration::from_secs(MAXAGE_S + 5), "stale", |r| r.state == UpsState::Stale)
        .await;
    assert!(!stale.is_fresh(stale.observed_at_ms, MAX_AGE), "a stale reading is never fresh");
    assert!(stale.last_data_ms.is_some_and(|t| t < stale.observed_at_ms), "keeps when data was last seen");
    assert_eq!(stale.power(stale.observed_at_ms, MAX_AGE), Power::Unknown);
    signal(driver, "CONT");
    let back =
        monitors.wait_for("site", Duration::from_secs(3), "data again", |r| has_status(r, &[OL], &[])).await;
    assert!(back.is_fresh(back.observed_at_ms, MAX_AGE));
    monitors.stop().await;
}

#[tokio::test]
async fn a_killed_driver_is_driver_gone() {
    let Some(nut) = Nut::start(&["site"]).await else { return };
    let mut monitors = Monitors::start(&[nut.config("site")]);
    monitors.wait_for("site", Duration::from_secs(3), "data", |r| has_status(r, &[OL], &[])).await;
    signal(nut.driver_pid("site"), "KILL");
    let gone = monitors
        .wait_for("site", Duration::from_secs(2), "driver gone", |r| r.state == UpsState::DriverGone)
        .await;
    assert_eq!(gone.power(gone.observed_at_ms, MAX_AGE), Power::Unknown);
    monitors.stop().await;
}

#[tokio::test]
async fn the_monitor_reconnects_after_upsd_restarts() {
    let Some(nut) = Nut::start(&["site"]).await else { return };
    let mut monitors = Monitors::start(&[nut.config("site")]);
    let before =
        monitors.wait_for("site", Duration::from_secs(3), "data", |r| has_status(r, &[OL], &[])).await;
    signal(nut.upsd_pid(), "KILL");
    let down = monitors
        .wait_for("site", Duration::from_secs(2), "unreachable", |r| {
            matches!(r.state, UpsState::Unreachable { .. })
        })
        .await;
    assert!(down.last_data_ms >= before.last_data_ms);
    // Down for a few backoff rounds, then back on the same port.
    sleep(Duration::from_secs(2)).await;
    nut.start_upsd();
    let back = monitors
        .wait_for("site", Duration::from_secs(8), "data after restart", |r| {
            has_status(r, &[OL], &[]) && r.observed_at_ms > down.observed_at_ms
        })
        .await;
    assert!(back.last_data_ms > before.last_data_ms);
    monitors.stop().await;
}

#[tokio::test]
async fn a_hung_upsd_is_unreachable_within_the_deadline_and_blocks_nothing() {
    let Some(hung) = Nut::start(&["site"]).await else { return };
    let Some(healthy) = Nut::start(&["other"]).await else { return };
    let mut monitors = Monitors::start(&[hung.config("site"), healthy.config("other")]);
    monitors.wait_for("site", Duration::from_secs(3), "data", |r| has_status(r, &[OL], &[])).await;
    monitors.wait_for("other", Duration::from_secs(3), "data", |r| has_status(r, &[OL], &[])).await;
    // Stopped, upsd still accepts connections (the kernel does) but never answers.
    signal(hung.upsd_pid(), "STOP");
    let stopped_at = Instant::now();
    let down = monitors
        .wait_for("site", POLL + DEADLINE + Duration::from_millis(500), "unreachable", |r| {
            matches!(r.state, UpsState::Unreachable { .. })
        })
        .await;
    let UpsState::Unreachable { error } = &down.state else { unreachable!() };
    assert!(error.contains("within"), "the error names the deadline: {error}");
    // The hung UPS's monitor keeps trying (new attempts get published) ...
    monitors
        .wait_for("site", Duration::from_secs(8), "another attempt", |r| {
            r.observed_at_ms > down.observed_at_ms && matches!(r.state, UpsState::Unreachable { .. })
        })
        .await;
    // ... while the other UPS kept being polled the whole time.
    let other = monitors.latest("other");
    assert!(other.is_fresh(down.observed_at_ms, Duration::from_millis(600)), "{other:?}");
    assert!(stopped_at.elapsed() < Duration::from_secs(10));
    // And shutdown is not held up by a read in progress.
    monitors.stop().await;
    signal(hung.upsd_pid(), "CONT");
}

#[tokio::test]
async fn an_unknown_ups_name_is_reported_as_such() {
    let Some(nut) = Nut::start(&["site"]).await else { return };
    let mut monitors = Monitors::start(&[nut.config("nope")]);
    let reading = monitors
        .wait_for("nope", Duration::from_secs(2), "unknown ups", |r| r.state == UpsState::UnknownUps)
        .await;
    assert!(reading.state.to_string().contains("knows no UPS"), "{}", reading.state);
    monitors.stop().await;
}

#[tokio::test]
async fn a_host_on_two_upses_is_on_battery_only_when_both_are() {
    let Some(mut nut) = Nut::start(&["left", "right"]).await else { return };
    let configs: Vec<UpsConfig> = ["left", "right"]
        .iter()
        .map(|name| UpsConfig { feeds: vec!["host-1".into()], ..nut.config(name) })
        .collect();
    let mut monitors = Monitors::start(&configs);
    let clock_now = |r: &UpsReadings| r.values().map(|r| r.observed_at_ms).max().unwrap_or(0);
    let power = |readings: &UpsReadings| {
        let feeds = feeds_of(&configs, "host-1", "this-node").map(|c| readings.get(&c.name));
        host_power(feeds, clock_now(readings), MAX_AGE)
    };
    for name in ["left", "right"] {
        monitors.wait_for(name, Duration::from_secs(3), "OL", |r| has_status(r, &[OL], &[])).await;
    }
    assert_eq!(power(&monitors.readings.borrow()), Power::Line);

    nut.set_status("left", "OB", 90).await;
    monitors.wait_for("left", 2 * DRIVER_POLL, "OB", |r| has_status(r, &[OB], &[])).await;
    assert_eq!(power(&monitors.readings.borrow()), Power::Line, "one UPS on line still powers the host");

    nut.set_status("right", "OB", 90).await;
    monitors.wait_for("right", 2 * DRIVER_POLL, "OB", |r| has_status(r, &[OB], &[])).await;
    assert_eq!(power(&monitors.readings.borrow()), Power::Battery);

    nut.set_status("left", "OL", 90).await;
    monitors.wait_for("left", 2 * DRIVER_POLL, "OL", |r| has_status(r, &[OL], &[])).await;
    assert_eq!(power(&monitors.readings.borrow()), Power::Line);

    // A feed that goes dark is unknown, not on line: both OB, then one driver killed.
    nut.set_status("left", "OB", 80).await;
    monitors.wait_for("left", 2 * DRIVER_POLL, "OB", |r| has_status(r, &[OB], &[])).await;
    signal(nut.driver_pid("right"), "KILL");
    monitors
        .wait_for("right", Duration::from_secs(2), "driver gone", |r| r.state == UpsState::DriverGone)
        .await;
    assert_eq!(power(&monitors.readings.borrow()), Power::Unknown);
    monitors.stop().await;
}

#[tokio::test]
async fn starttls_reads_from_upsd_and_refuses_a_certificate_from_another_ca() {
    let Some(nut) = Nut::start_tls(&["site"]).await else { return };
    let config = UpsConfig { starttls: true, ca: Some(nut.ca()), ..nut.config("site") };
    let mut monitors = Monitors::start(std::slice::from_ref(&config));
    let reading = monitors
        .wait_for("site", Duration::from_secs(3), "data over TLS", |r| has_status(r, &[OL], &[]))
        .await;
    assert!(reading.is_fresh(reading.observed_at_ms, MAX_AGE));
    monitors.stop().await;

    // The same upsd, trusted through some other CA: the handshake must fail.
    let other = tempfile::tempdir().unwrap();
    write_unrelated_ca(other.path());
    let connector = sitewatch_agent::ups::tls_connector(&other.path().join("ca.pem")).unwrap();
    let e = NutConnection::connect(&config, Some(&connector)).await.err().expect("refused");
    assert!(e.to_string().contains("certificate"), "{e}");
}

/// Just a CA certificate at `dir/ca.pem`, unrelated to any upsd.
fn write_unrelated_ca(dir: &Path) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    std::fs::write(dir.join("ca.pem"), params.self_signed(&key).unwrap().pem()).unwrap();
}

/// Seen once by hand, kept for whoever changes the reconnect logic: upsd drops a client
/// after 60 s of silence (hard-coded), and the monitor must see that as a hang-up, which
/// it answers with an immediate reconnect instead of an unreachable reading.
#[tokio::test]
#[ignore = "takes 65 s: upsd's idle limit is 60 s; run with --ignored"]
async fn upsd_hangs_up_on_a_client_idle_for_a_minute() {
    let Some(nut) = Nut::start(&["site"]).await else { return };
    let config = nut.config("site");
    let mut connection = NutConnection::connect(&config, None).await.unwrap();
    assert!(matches!(connection.poll("site").await.unwrap(), UpsState::Data(_)));
    sleep(Duration::from_secs(62)).await;
    let e = connection.poll("site").await.expect_err("upsd closed the idle connection");
    assert!(e.is_hang_up(), "{e}");
}
