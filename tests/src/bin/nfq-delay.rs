//! Delay, jitter and loss without netem: packets sent to an NFQUEUE are held for
//! delay ± jitter (uniform) in a min-heap keyed by release time, then accepted; or dropped
//! at once with probability `loss`.
//!
//! iptables -A OUTPUT -d 10.77.0.1 -j NFQUEUE --queue-num 3 --queue-bypass
//! nfq-delay --queue 3 --delay-ms 50 --jitter-ms 5 --loss 0.0
//!
//! Runs until killed (or for `--exit-after-s`, a safety bound for tests). The `nfq` crate
//! speaks the netlink protocol; its messages are not Send, so everything happens on one
//! thread that polls the queue without blocking and sleeps at most `POLL` between polls
//! (which adds at most that much to each delay).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use rand::Rng;
use tokio::time::Instant;

const POLL: Duration = Duration::from_micros(200);

#[derive(Parser)]
struct Args {
    #[arg(long)]
    queue: u16,
    #[arg(long, default_value_t = 0.0)]
    delay_ms: f64,
    #[arg(long, default_value_t = 0.0)]
    jitter_ms: f64,
    /// Probability in 0..=1 of dropping a packet.
    #[arg(long, default_value_t = 0.0)]
    loss: f64,
    #[arg(long)]
    exit_after_s: Option<u64>,
}

/// A held packet, ordered by release time (ties by arrival) for the min-heap.
struct Held {
    release: Instant,
    arrival: u64,
    msg: nfq::Message,
}

impl PartialEq for Held {
    fn eq(&self, other: &Self) -> bool {
        (self.release, self.arrival) == (other.release, other.arrival)
    }
}
impl Eq for Held {}
impl PartialOrd for Held {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Held {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.release, self.arrival).cmp(&(other.release, other.arrival))
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!((0.0..=1.0).contains(&args.loss), "--loss is a probability in 0..=1");
    anyhow::ensure!(args.delay_ms >= args.jitter_ms && args.jitter_ms >= 0.0, "need delay >= jitter >= 0");
    // tokio's Instant needs no runtime for now() and keeps clippy's std Instant ban honest.
    let started = Instant::now();
    let mut queue = nfq::Queue::open().context("opening the netfilter queue socket")?;
    queue.bind(args.queue).with_context(|| format!("binding NFQUEUE {}", args.queue))?;
    queue.set_nonblocking(true);
    println!(
        "nfq-delay: queue {} delay {} ms ± {} ms loss {}",
        args.queue, args.delay_ms, args.jitter_ms, args.loss
    );
    let mut rng = rand::rng();
    let mut heap: BinaryHeap<Reverse<Held>> = BinaryHeap::new();
    let mut arrivals = 0u64;
    let (mut accepted, mut dropped) = (0u64, 0u64);
    loop {
        if args.exit_after_s.is_some_and(|s| started.elapsed() > Duration::from_secs(s)) {
            break;
        }
        let mut idle = true;
        match queue.recv() {
            Ok(mut msg) => {
                idle = false;
                arrivals += 1;
                if args.loss > 0.0 && rng.random_bool(args.loss) {
                    msg.set_verdict(nfq::Verdict::Drop);
                    queue.verdict(msg).context("verdict")?;
                    dropped += 1;
                } else {
                    let offset = if args.jitter_ms > 0.0 {
                        rng.random_range(-args.jitter_ms..=args.jitter_ms)
                    } else {
                        0.0
                    };
                    let hold = Duration::from_secs_f64((args.delay_ms + offset).max(0.0) / 1000.0);
                    heap.push(Reverse(Held { release: Instant::now() + hold, arrival: arrivals, msg }));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e).context("receiving from the queue"),
        }
        let now = Instant::now();
        while heap.peek().is_some_and(|Reverse(h)| h.release <= now) {
            if let Some(Reverse(mut held)) = heap.pop() {
                held.msg.set_verdict(nfq::Verdict::Accept);
                queue.verdict(held.msg).context("verdict")?;
                accepted += 1;
                idle = false;
            }
        }
        if idle {
            let until_next = heap.peek().map_or(POLL, |Reverse(h)| h.release.saturating_duration_since(now));
            std::thread::sleep(until_next.min(POLL));
        }
    }
    println!("nfq-delay: {arrivals} packets, {accepted} accepted, {dropped} dropped");
    Ok(())
}
