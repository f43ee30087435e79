//! Run the agent's real probe code against one target for a while, printing the probe's
//! status as a JSON line every `--report-ms` and once more at the end, for the network
//! namespace tests (`ip netns exec NS probe-once ...`).
//!
//! probe-once --kind icmp --target 10.77.0.3 [--port 7] --interval-ms 10 --timeout-ms 200 \
//!            --window 600 --run-ms 6000

use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use sitewatch_proto::link::{ProbeConfig, ProbeKind};
use tokio::time::{Instant, MissedTickBehavior, interval};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

#[derive(Parser)]
struct Args {
    #[arg(long, value_parser = ["tcp", "icmp"])]
    kind: String,
    #[arg(long)]
    target: String,
    #[arg(long)]
    port: Option<u16>,
    #[arg(long, default_value_t = 10)]
    interval_ms: u64,
    #[arg(long, default_value_t = 200)]
    timeout_ms: u64,
    #[arg(long, default_value_t = 600)]
    window: usize,
    /// How long to probe before the final line (which comes one timeout later).
    #[arg(long, default_value_t = 5000)]
    run_ms: u64,
    #[arg(long, default_value_t = 50)]
    report_ms: u64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config = ProbeConfig {
        name: "probe-once".into(),
        target: args.target,
        kind: if args.kind == "icmp" { ProbeKind::Icmp } else { ProbeKind::Tcp },
        port: args.port,
        interval: Duration::from_millis(args.interval_ms),
        timeout: Duration::from_millis(args.timeout_ms),
        window: args.window,
    };
    if let Some((key, why)) = config.problem() {
        anyhow::bail!("--{key}: {why}");
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().context("runtime")?;
    runtime.block_on(async {
        let tracker = TaskTracker::new();
        let cancel = CancellationToken::new();
        let rx = sitewatch_agent::probe::start(vec![config], &tracker, &cancel);
        let start = Instant::now();
        let stop_sending = start + Duration::from_millis(args.run_ms);
        let mut report = interval(Duration::from_millis(args.report_ms));
        report.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = report.tick() => print_line(&rx.borrow(), start, false)?,
                _ = tokio::time::sleep_until(stop_sending) => break,
            }
        }
        // The final figures are taken one timeout later, so that every probe sent before
        // `run_ms` has its outcome; probes sent during that timeout and still in flight
        // are not counted (the summary counts settled probes only).
        tokio::time::sleep(Duration::from_millis(args.timeout_ms)).await;
        let last = rx.borrow().clone();
        cancel.cancel();
        tracker.close();
        tracker.wait().await;
        print_line(&last, start, true)
    })
}

fn print_line(all: &[sitewatch_proto::link::ProbeStatus], start: Instant, last: bool) -> anyhow::Result<()> {
    let line = serde_json::json!({
        "elapsed_ms": start.elapsed().as_secs_f64() * 1000.0,
        "final": last,
        "probe": all.first(),
    });
    println!("{line}");
    Ok(())
}
