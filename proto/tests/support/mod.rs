//! Terse builders for the verdict tests: observations (`agent("a").on_battery_for(20)`),
//! the evidence a judge holds, and a committed log to apply decisions to.
#![allow(dead_code)] // each test file uses its own share

use std::time::Duration;

use sitewatch_proto::host::GoingDown;
use sitewatch_proto::link::{LinkSummary, ProbeKind, ProbeMethod, ProbeStatus};
use sitewatch_proto::observation::{BatterySummary, Observation, PeerLink};
use sitewatch_proto::state::Command;
use sitewatch_proto::ups::{Power, UpsReading};
use sitewatch_proto::verdict::{AgentView, Evidence};
use sitewatch_proto::{Decision, FencingToken, SiteState, Verdict};

/// The witness every site in these tests has.
pub const WITNESS: &str = "w";
/// 2026-11-23T00:00:00Z: far from a month boundary for timelines of hours.
pub const NOV_23_MS: u64 = 1_795_392_000_000;

pub fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// A window of `sent` probes with `loss` lost and a 95th-percentile RTT.
pub fn window(sent: u32, loss: f64, p95_ms: f64) -> LinkSummary {
    let lost = (f64::from(sent) * loss).round() as u32;
    LinkSummary {
        sent,
        replies: sent - lost,
        lost,
        loss: Some(loss),
        rtt_median_ms: Some(p95_ms / 2.0),
        rtt_p95_ms: Some(p95_ms),
        ..Default::default()
    }
}

/// A connected cluster link to `name` over a full window with `loss`.
pub fn peer(name: &str, loss: f64) -> PeerLink {
    PeerLink { name: name.into(), connected: true, link: window(60, loss, 20.0), last_contact_ms: Some(0) }
}

/// One agent as the judge holds it: its latest observation (if any) and its age.
#[derive(Debug, Clone)]
pub struct AgentSpec {
    pub name: String,
    pub obs: Option<Observation>,
    pub age: Duration,
}

/// An agent heard just now, on line power, with a good link to the witness.
pub fn agent(name: &str) -> AgentSpec {
    let obs = Observation {
        node: name.into(),
        seq: 1,
        taken_at_unix_ms: NOV_23_MS,
        clock_ms: 0,
        host: Default::default(),
        ups: vec![],
        power: Power::Line,
        power_for_ms: 3_600_000,
        battery: None,
        probes: vec![],
        peers: vec![peer(WITNESS, 0.0)],
    };
    AgentSpec { name: name.into(), obs: Some(obs), age: Duration::ZERO }
}

/// A configured agent the judge has never heard.
pub fn never_heard(name: &str) -> AgentSpec {
    AgentSpec { name: name.into(), obs: None, age: Duration::ZERO }
}

impl AgentSpec {
    fn obs(&mut self) -> &mut Observation {
        self.obs.as_mut().expect("a never-heard agent has no observation to shape")
    }

    /// On battery for this long when the observation was taken, with plenty of runtime.
    pub fn on_battery_for(self, secs: u64) -> Self {
        self.on_battery_for_ms(secs * 1000)
    }

    pub fn on_battery_for_ms(mut self, ms: u64) -> Self {
        let o = self.obs();
        o.power = Power::Battery;
        o.power_for_ms = ms;
        o.battery.get_or_insert_with(|| BatterySummary { runtime_s: Some(3600), ..Default::default() });
        self
    }

    pub fn runtime(mut self, s: u64) -> Self {
        self.obs().battery.get_or_insert_with(Default::default).runtime_s = Some(s);
        self
    }

    /// Critical UPS flags such as `LB:rack` or `FSD:rack`.
    pub fn flags<const N: usize>(mut self, flags: [&str; N]) -> Self {
        self.obs().battery.get_or_insert_with(Default::default).critical =
            flags.iter().map(|f| (*f).to_owned()).collect();
        self
    }

    /// Heard `secs` ago on the judge's clock.
    pub fn heard(mut self, secs: u64) -> Self {
        self.age = Duration::from_secs(secs);
        self
    }

    pub fn going_down(mut self, why: GoingDown) -> Self {
        self.obs().host.going_down = Some(why);
        self
    }

    /// The agent's own window on its link to the witness.
    pub fn witness_link(mut self, loss: f64, p95_ms: f64) -> Self {
        let o = self.obs();
        o.peers = vec![PeerLink { link: window(60, loss, p95_ms), ..peer(WITNESS, 0.0) }];
        self
    }

    /// The agent's connection to the witness dropped `ms` ago (its window still looks fine).
    pub fn witness_disconnected_for(mut self, ms: u64) -> Self {
        let o = self.obs();
        o.peers = vec![PeerLink { connected: false, last_contact_ms: Some(ms), ..peer(WITNESS, 0.0) }];
        self
    }

    /// A `[[probe]]` target's window.
    pub fn probe(mut self, name: &str, loss: f64, p95_ms: f64) -> Self {
        self.obs().probes.push(ProbeStatus {
            name: name.into(),
            target: format!("{name}:443"),
            kind: ProbeKind::Tcp,
            method: ProbeMethod::Tcp,
            summary: window(60, loss, p95_ms),
            last_error: None,
        });
        self
    }

    /// Reads a UPS but cannot tell the host's power (and has not for an hour).
    pub fn power_unknown(self) -> Self {
        self.power_unknown_for(3600)
    }

    /// Cannot tell the host's power, for `secs` (a UPS driver still starting, say).
    pub fn power_unknown_for(mut self, secs: u64) -> Self {
        let o = self.obs();
        o.ups = vec![UpsReading::unknown("rack", 0)];
        o.power = Power::Unknown;
        o.power_for_ms = secs * 1000;
        self
    }
}

/// What a judge holds: the agents, the witness's own observation, how long it listened.
#[derive(Debug, Clone)]
pub struct Site {
    pub agents: Vec<AgentSpec>,
    pub witness: Observation,
    pub listening: Duration,
}

pub fn site(agents: impl IntoIterator<Item = AgentSpec>) -> Site {
    let agents: Vec<AgentSpec> = agents.into_iter().collect();
    let mut witness = agent(WITNESS).obs.expect("heard");
    witness.peers = agents.iter().map(|a| peer(&a.name, 0.0)).collect();
    Site { agents, witness, listening: Duration::from_secs(3600) }
}

impl Site {
    /// The witness's own window on its link to `agent`.
    pub fn witness_sees(mut self, agent: &str, loss: f64) -> Self {
        for p in self.witness.peers.iter_mut().filter(|p| p.name == agent) {
            p.link = window(60, loss, 20.0);
        }
        self
    }

    pub fn listening_for(mut self, secs: u64) -> Self {
        self.listening = Duration::from_secs(secs);
        self
    }

    pub fn evidence(&self) -> Evidence<'_> {
        Evidence {
            agents: self
                .agents
                .iter()
                .map(|a| AgentView { name: &a.name, latest: a.obs.as_ref().map(|o| (o, a.age)) })
                .collect(),
            witnesses: vec![(WITNESS, Some(&self.witness))],
            listening_for: self.listening,
        }
    }
}

/// A committed log: applies commands in order with increasing fencing tokens.
#[derive(Debug, Clone, Default)]
pub struct Log {
    pub state: SiteState,
    pub term: u64,
}

impl Log {
    pub fn new() -> Log {
        let mut log = Log::default();
        log.elect();
        log
    }

    pub fn next_token(&self) -> FencingToken {
        FencingToken { term: self.term, index: self.state.applied.index + 1 }
    }

    /// A new term begins with its leader's empty entry.
    pub fn elect(&mut self) -> u64 {
        self.term += 1;
        let token = self.next_token();
        self.state.apply(token, &[]);
        self.term
    }

    /// A new term whose leader has not had its empty entry applied yet.
    pub fn elect_unapplied(&mut self) -> u64 {
        self.term += 1;
        self.term
    }

    pub fn commit(&mut self, command: &Command) -> FencingToken {
        let token = self.next_token();
        let bytes = command.encode().expect("commands encode");
        self.state.apply(token, &bytes);
        token
    }

    pub fn decide(&mut self, verdict: Verdict, capacity: u32, at_ms: u64) -> FencingToken {
        self.commit(&Command::Decision(Decision {
            verdict,
            desired_capacity: capacity,
            reasons: vec![],
            decided_at_ms: at_ms,
            evidence: vec![],
            spend_level: 0,
        }))
    }
}

/// A committed state with this verdict and capacity in force.
pub fn committed(verdict: Verdict, capacity: u32) -> SiteState {
    let mut log = Log::new();
    log.decide(verdict, capacity, NOV_23_MS);
    log.state
}
