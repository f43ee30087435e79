//! The daemon configuration file (TOML, kebab-case keys, unknown keys refused).
//!
//! `Config::load(path)` parses and then validates; every error names the file, the line
//! and the key, so `sitewatch check-config` (run as ExecStartPre) tells an operator
//! exactly what to fix before the daemon starts.

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use sitewatch_proto::link::ProbeConfig;
use sitewatch_proto::policy::PolicyConfig;
use sitewatch_proto::ups::{self, UpsConfig};

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Config {
    /// Every node of one cluster carries the same id; a hello with another is refused.
    pub cluster_id: String,
    /// This node's name: one of the members.
    pub node: String,
    /// Where this node accepts cluster connections.
    pub listen: SocketAddr,
    /// Raft log, hard state and snapshots live here (systemd StateDirectory).
    pub data_dir: PathBuf,
    /// The local status socket (systemd RuntimeDirectory).
    #[serde(default = "default_status_socket")]
    pub status_socket: PathBuf,
    /// Prometheus metrics (`GET /metrics`) on this address; off when absent. Keep it on
    /// localhost or a management network: it tells who leads and what the site does.
    #[serde(default)]
    pub metrics_listen: Option<SocketAddr>,
    pub tls: TlsConfig,
    #[serde(default)]
    pub timing: Timing,
    #[serde(rename = "member")]
    pub members: Vec<Member>,
    /// The UPSes this agent watches through upsd.
    #[serde(default, rename = "ups")]
    pub ups: Vec<UpsConfig>,
    /// Link-quality probes this node runs (`[[probe]]`); none by default.
    #[serde(default, rename = "probe")]
    pub probes: Vec<ProbeConfig>,
    /// When the site counts as down and how much to burst. Every voter must have the
    /// same policy: whichever leads applies its own.
    #[serde(default)]
    pub policy: PolicyConfig,
    /// What brings a decision about (`[[actuator]]`); none by default.
    #[serde(default, rename = "actuator")]
    pub actuators: Vec<crate::actuator::ActuatorConfig>,
    /// Who hears about changes (`[[notify]]`); none by default.
    #[serde(default, rename = "notify")]
    pub notifiers: Vec<crate::notifier::NotifierConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct TlsConfig {
    /// The cluster CA (PEM) that signs every member's certificate.
    pub ca: PathBuf,
    /// This node's certificate chain (PEM); its DNS name must equal the node name.
    pub cert: PathBuf,
    /// This node's private key (PEM).
    pub key: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Member {
    pub name: String,
    pub id: u64,
    /// host:port the member listens on. Agents dial witnesses (never the other way,
    /// so agents behind NAT work); between agents the lower id dials.
    pub address: String,
    pub role: Role,
    #[serde(default = "default_true")]
    pub voter: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    Agent,
    Witness,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Agent => "agent",
            Role::Witness => "witness",
        })
    }
}

/// Raft and transport timing. The defaults suit a VPS witness over the internet
/// (etcd's guidance: heartbeat about one RTT, election at least ten): with a 100 ms tick a
/// follower gives up on a silent leader after 1.1 to 2.0 s, and a new leader stands one
/// pre-vote and one vote round trip later.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct Timing {
    #[serde(with = "humantime_serde")]
    pub tick: Duration,
    pub heartbeat_ticks: usize,
    pub election_ticks: usize,
    /// Application ping on every cluster connection; gives each peer's RTT.
    #[serde(with = "humantime_serde")]
    pub ping_interval: Duration,
    /// A connection that brought nothing for this long is closed and redialled.
    #[serde(with = "humantime_serde")]
    pub peer_timeout: Duration,
    /// Take a snapshot of the site state and compact the log every this many entries.
    pub snapshot_every: u64,
    /// An agent assembles and publishes one observation of its site this often.
    #[serde(with = "humantime_serde")]
    pub observe_interval: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            tick: Duration::from_millis(100),
            heartbeat_ticks: 2,
            election_ticks: 10,
            ping_interval: Duration::from_secs(1),
            peer_timeout: Duration::from_secs(5),
            snapshot_every: 1000,
            observe_interval: Duration::from_secs(1),
        }
    }
}

fn default_true() -> bool {
    true
}

fn default_status_socket() -> PathBuf {
    PathBuf::from("/run/sitewatch/sitewatch.sock")
}

/// A configuration error, located as precisely as the file allows.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: Option<usize>,
    /// Dotted path of the offending key, e.g. `member[2].id`.
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ": key `{key}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// One step of a key path, for locating a key in the document.
#[derive(Debug, Clone)]
enum KeyStep {
    Key(&'static str),
    Index(usize),
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_owned(),
            line: None,
            key: None,
            message: format!("cannot read: {e}"),
        })?;
        Config::parse(&text, path)
    }

    /// Parse and validate `text`; `origin` names the file in errors.
    pub fn parse(text: &str, origin: &Path) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| line_of(text, s.start));
            ConfigError {
                file: origin.to_owned(),
                line,
                key: unknown_key(e.message()),
                message: e.message().trim().to_owned(),
            }
        })?;
        config.validate().map_err(|(path, message)| {
            let line = locate(text, &path);
            ConfigError { file: origin.to_owned(), line, key: Some(render_path(&path)), message }
        })?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), (Vec<KeyStep>, String)> {
        use KeyStep::{Index, Key};
        let at = |path: Vec<KeyStep>, msg: String| Err((path, msg));
        if self.cluster_id.trim().is_empty() {
            return at(vec![Key("cluster-id")], "must not be empty".into());
        }
        if self.members.is_empty() {
            return at(vec![Key("member")], "at least one [[member]] is needed".into());
        }
        let mut names = HashSet::new();
        let mut ids = HashSet::new();
        for (i, m) in self.members.iter().enumerate() {
            if let Err(why) = check_member_name(&m.name) {
                return at(vec![Key("member"), Index(i), Key("name")], why);
            }
            if !names.insert(m.name.as_str()) {
                return at(vec![Key("member"), Index(i), Key("name")], format!("`{}` appears twice", m.name));
            }
            if m.id == 0 {
                return at(vec![Key("member"), Index(i), Key("id")], "0 is reserved; ids start at 1".into());
            }
            if !ids.insert(m.id) {
                return at(vec![Key("member"), Index(i), Key("id")], format!("id {} appears twice", m.id));
            }
            if m.address
                .rsplit_once(':')
                .is_none_or(|(host, port)| host.is_empty() || port.parse::<u16>().is_err())
            {
                return at(
                    vec![Key("member"), Index(i), Key("address")],
                    format!("`{}` needs host:port", m.address),
                );
            }
            if m.role == Role::Witness && !m.voter {
                return at(
                    vec![Key("member"), Index(i), Key("voter")],
                    "a witness is a tie-breaking voter; `voter = false` makes it useless".into(),
                );
            }
        }
        if !self.members.iter().any(|m| m.voter) {
            return at(vec![Key("member")], "no member is a voter".into());
        }
        if self.member(&self.node).is_none() {
            return at(vec![Key("node")], format!("`{}` is not one of the [[member]] names", self.node));
        }
        let t = &self.timing;
        if t.tick.is_zero() {
            return at(vec![Key("timing"), Key("tick")], "must be above zero".into());
        }
        if t.heartbeat_ticks == 0 {
            return at(vec![Key("timing"), Key("heartbeat-ticks")], "must be at least 1".into());
        }
        if t.election_ticks <= t.heartbeat_ticks {
            return at(
                vec![Key("timing"), Key("election-ticks")],
                format!("must be above heartbeat-ticks ({})", t.heartbeat_ticks),
            );
        }
        if t.ping_interval.is_zero() {
            return at(vec![Key("timing"), Key("ping-interval")], "must be above zero".into());
        }
        if t.peer_timeout <= t.ping_interval {
            return at(vec![Key("timing"), Key("peer-timeout")], "must be longer than ping-interval".into());
        }
        if t.observe_interval.is_zero() {
            return at(vec![Key("timing"), Key("observe-interval")], "must be above zero".into());
        }
        if t.snapshot_every == 0 {
            return at(vec![Key("timing"), Key("snapshot-every")], "must be at least 1".into());
        }
        crate::actuator::check_actuators(&self.actuators)
            .map_err(|(i, key, why)| (vec![Key("actuator"), Index(i), Key(key)], why))?;
        crate::notifier::check_notifiers(&self.notifiers)
            .map_err(|(i, key, why)| (vec![Key("notify"), Index(i), Key(key)], why))?;
        self.validate_probes()?;
        if let Err((key, why)) = self.policy.check() {
            let mut path = vec![Key("policy")];
            path.extend(key.split('.').map(Key));
            return at(path, why);
        }
        self.validate_ups()
    }

    fn validate_ups(&self) -> Result<(), (Vec<KeyStep>, String)> {
        use KeyStep::{Index, Key};
        let mut names = HashSet::new();
        for (i, u) in self.ups.iter().enumerate() {
            let key = |k: &'static str| vec![Key("ups"), Index(i), Key(k)];
            ups::check_ups_name(&u.name).map_err(|why| (key("name"), why))?;
            // Readings are keyed by UPS name; two upsd servers with same-named UPSes
            // would need a qualified name, which nobody has asked for yet.
            if !names.insert(u.name.as_str()) {
                return Err((key("name"), format!("`{}` appears twice", u.name)));
            }
            ups::check_server(&u.server).map_err(|why| (key("server"), why))?;
            for (j, host) in u.feeds.iter().enumerate() {
                if self.member(host).is_none() {
                    return Err((
                        vec![Key("ups"), Index(i), Key("feeds"), Index(j)],
                        format!("`{host}` is not one of the [[member]] names"),
                    ));
                }
            }
            if u.poll_interval.is_zero() {
                return Err((key("poll-interval"), "must be above zero".into()));
            }
            if u.timeout.is_zero() {
                return Err((key("timeout"), "must be above zero".into()));
            }
            if u.starttls && u.ca.is_none() {
                return Err((key("starttls"), "needs `ca`, the CA that signed upsd's certificate".into()));
            }
            if !u.starttls && u.ca.is_some() {
                return Err((key("ca"), "is only used with `starttls = true`".into()));
            }
        }
        Ok(())
    }

    fn validate_probes(&self) -> Result<(), (Vec<KeyStep>, String)> {
        use KeyStep::{Index, Key};
        let at = |path: Vec<KeyStep>, msg: String| Err((path, msg));
        let mut probe_names = HashSet::new();
        for (i, p) in self.probes.iter().enumerate() {
            if let Some((key, why)) = p.problem() {
                return at(vec![Key("probe"), Index(i), Key(key)], why);
            }
            if !probe_names.insert(p.name.as_str()) {
                return at(vec![Key("probe"), Index(i), Key("name")], format!("`{}` appears twice", p.name));
            }
        }
        Ok(())
    }

    pub fn member(&self, name: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.name == name)
    }

    pub fn member_by_id(&self, id: u64) -> Option<&Member> {
        self.members.iter().find(|m| m.id == id)
    }

    /// This node's own entry; validated to exist.
    pub fn me(&self) -> &Member {
        // validate() refused a config whose node is not a member.
        self.member(&self.node).expect("validated: node is a member")
    }

    /// A digest of the member list that every node must share. Order in the file does
    /// not matter; names, ids, roles, votes and the cluster id do.
    pub fn members_digest(&self) -> u64 {
        let mut members: Vec<&Member> = self.members.iter().collect();
        members.sort_by_key(|m| m.id);
        let mut canonical = format!("cluster={}\n", self.cluster_id);
        for m in members {
            canonical.push_str(&format!("{} {} {} {}\n", m.id, m.name, m.role, m.voter));
        }
        let digest = ring::digest::digest(&ring::digest::SHA256, canonical.as_bytes());
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest.as_ref()[..8]);
        u64::from_be_bytes(first)
    }
}

/// Member names are certificate DNS names: lowercase letters, digits and dashes.
fn check_member_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not a valid member name: use 1-63 lowercase letters, digits and dashes \
             (it is the DNS name in the member's certificate)"
        ))
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].bytes().filter(|&b| b == b'\n').count() + 1
}

/// serde says "unknown field `foo`, expected ..."; pull out the key it names.
fn unknown_key(message: &str) -> Option<String> {
    let rest = message.split("unknown field `").nth(1).or_else(|| message.split("missing field `").nth(1))?;
    Some(toml_key(rest.split('`').next()?))
}

/// A key as it is written in TOML: bare when it can be, else quoted. An empty or dotted
/// key (`"" = 4`, `"a.b" = 4`) shown bare would read as no key or as a path.
fn toml_key(name: &str) -> String {
    if !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        name.to_owned()
    } else {
        format!("\"{}\"", name.escape_default())
    }
}

fn render_path(path: &[KeyStep]) -> String {
    let mut out = String::new();
    for step in path {
        match step {
            KeyStep::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            KeyStep::Index(i) => out.push_str(&format!("[{}]", i + 1)),
        }
    }
    out
}

/// The line of the deepest part of `path` present in the document.
fn locate(text: &str, path: &[KeyStep]) -> Option<usize> {
    let root = toml::de::DeTable::parse(text).ok()?;
    let root = toml::Spanned::new(root.span(), toml::de::DeValue::Table(root.into_inner()));
    let mut value = &root;
    let mut line = None;
    for step in path {
        let next = match step {
            KeyStep::Key(k) => value.get_ref().as_table().and_then(|t| {
                t.iter().find(|(key, _)| key.get_ref() == k).map(|(key, v)| {
                    line = Some(line_of(text, key.span().start));
                    v
                })
            }),
            KeyStep::Index(i) => value.get_ref().as_array().and_then(|a| a.get(*i)).inspect(|v| {
                line = Some(line_of(text, v.span().start));
            }),
        };
        match next {
            Some(v) => value = v,
            None => break,
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const GOOD: &str = r#"
cluster-id = "home"
node = "agent-1"
listen = "127.0.0.1:7420"
data-dir = "/var/lib/sitewatch"

[tls]
ca = "/etc/sitewatch/tls/ca.pem"
cert = "/etc/sitewatch/tls/agent-1.pem"
key = "/etc/sitewatch/tls/agent-1.key"

[[member]]
name = "agent-1"
id = 1
address = "10.0.0.1:7420"
role = "agent"

[[member]]
name = "agent-2"
id = 2
address = "10.0.0.2:7420"
role = "agent"

[[member]]
name = "witness"
id = 3
address = "vps.example.net:7420"
role = "witness"
"#;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/etc/sitewatch/agent.toml"))
    }

    #[test]
    fn a_good_config_parses_with_defaults() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.me().id, 1);
        assert_eq!(c.timing.tick, Duration::from_millis(100));
        assert!(c.members.iter().all(|m| m.voter));
        assert_eq!(c.status_socket, PathBuf::from("/run/sitewatch/sitewatch.sock"));
    }

    #[test]
    fn an_unknown_key_names_file_line_and_key() {
        let text = GOOD.replace("role = \"witness\"", "role = \"witness\"\nvoterr = true");
        let e = parse(&text).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("voterr"));
        assert_eq!(e.line, Some(29));
        let shown = e.to_string();
        assert!(shown.starts_with("/etc/sitewatch/agent.toml:29: key `voterr`"), "{shown}");
    }

    #[test]
    fn an_unknown_key_that_is_not_bare_is_shown_quoted() {
        let e = parse(&format!("\"\" = 4\n{GOOD}")).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("\"\""), "{e}");
        assert_eq!(e.line, Some(1), "{e}");
        let e = parse(&format!("\"a.b\" = 4\n{GOOD}")).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("\"a.b\""), "{e}");
    }

    #[test]
    fn a_duplicate_id_is_located() {
        let text = GOOD.replace("id = 2", "id = 1");
        let e = parse(&text).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("member[2].id"));
        assert_eq!(e.line, Some(20));
        assert!(e.message.contains("appears twice"));
    }

    #[test]
    fn a_node_that_is_not_a_member_is_refused() {
        let e = parse(&GOOD.replace("node = \"agent-1\"", "node = \"agent-9\"")).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("node"));
        assert_eq!(e.line, Some(3));
    }

    #[test]
    fn bad_values_are_refused_with_their_key() {
        let cases = [
            (GOOD.replace("role = \"witness\"", "role = \"witness\"\nvoter = false"), "member[3].voter"),
            (GOOD.replace("\"agent-2\"", "\"Agent_2\""), "member[2].name"),
            (GOOD.replace("\"10.0.0.2:7420\"", "\"10.0.0.2\""), "member[2].address"),
            (format!("{GOOD}\n[timing]\nelection-ticks = 1\n"), "timing.election-ticks"),
            (format!("{GOOD}\n[timing]\nping-interval = \"10s\"\n"), "timing.peer-timeout"),
            (format!("{GOOD}\n[timing]\nping-interval = \"0s\"\n"), "timing.ping-interval"),
            (GOOD.replace("\"10.0.0.2:7420\"", "\"10.0.0.2:http\""), "member[2].address"),
            (GOOD.replace("\"10.0.0.2:7420\"", "\":7420\""), "member[2].address"),
        ];
        for (text, key) in cases {
            let e = parse(&text).unwrap_err();
            assert_eq!(e.key.as_deref(), Some(key), "{e}");
            assert!(e.line.is_some(), "{e}");
        }
    }

    const PROBES: &str = r#"
[[probe]]
name = "witness"
target = "vps.example.net:7420"
kind = "tcp"

[[probe]]
name = "gateway"
target = "192.168.1.1"
kind = "icmp"
port = 443
interval = "250ms"
timeout = "2s"
window = 600
"#;

    #[test]
    fn probes_parse_with_defaults() {
        use sitewatch_proto::link::ProbeKind;
        let c = parse(&format!("{GOOD}{PROBES}")).unwrap();
        assert_eq!(c.probes.len(), 2);
        let w = &c.probes[0];
        assert_eq!((w.kind, w.port), (ProbeKind::Tcp, None));
        assert_eq!((w.interval, w.timeout, w.window), (Duration::from_secs(1), Duration::from_secs(1), 60));
        let g = &c.probes[1];
        assert_eq!((g.kind, g.port), (ProbeKind::Icmp, Some(443)));
        assert_eq!(
            (g.interval, g.timeout, g.window),
            (Duration::from_millis(250), Duration::from_secs(2), 600)
        );
        assert!(parse(GOOD).unwrap().probes.is_empty());
    }

    #[test]
    fn bad_probes_are_refused_with_their_key_and_line() {
        let all = format!("{GOOD}{PROBES}");
        // PROBES starts on line 30 of `all`: the second probe's keys are on lines 36-42.
        let cases = [
            (all.replace("name = \"gateway\"", "name = \"witness\""), "probe[2].name", 36),
            (all.replace("timeout = \"2s\"", "timeout = \"0s\""), "probe[2].timeout", 41),
            (all.replace("interval = \"250ms\"", "interval = \"0ms\""), "probe[2].interval", 40),
            (all.replace("window = 600", "window = 0"), "probe[2].window", 42),
            (all.replace("window = 600", "window = 3601"), "probe[2].window", 42),
            (
                all.replace("target = \"vps.example.net:7420\"", "target = \"vps.example.net\""),
                "probe[1].target",
                32,
            ),
            (all.replace("\"192.168.1.1\"", "\"192.168.1.1:80\""), "probe[2].target", 37),
        ];
        for (text, key, line) in cases {
            let e = parse(&text).unwrap_err();
            assert_eq!(e.key.as_deref(), Some(key), "{e}");
            assert_eq!(e.line, Some(line), "{e}");
        }
        let e = parse(&all.replace("kind = \"tcp\"", "kind = \"udp\"")).unwrap_err();
        assert_eq!(e.line, Some(33), "{e}");
        let e = parse(&all.replace("window = 600", "windw = 600")).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("windw"), "{e}");
    }

    #[test]
    fn a_type_error_gives_the_line() {
        let e = parse(&GOOD.replace("id = 3", "id = \"three\"")).unwrap_err();
        assert_eq!(e.line, Some(26), "{e}");
    }

    #[test]
    fn ups_tables_parse_with_defaults() {
        let text = format!(
            "{GOOD}\n[[ups]]\nname = \"site\"\n\n[[ups]]\nname = \"rack-b\"\nserver = \"nas.lan:3493\"\n\
             feeds = [\"agent-1\", \"agent-2\"]\npoll-interval = \"500ms\"\ntimeout = \"1s\"\n"
        );
        let c = parse(&text).unwrap();
        assert_eq!(c.ups.len(), 2);
        assert_eq!(c.ups[0], UpsConfig::new("site"));
        assert_eq!(c.ups[1].feeds, ["agent-1", "agent-2"]);
        assert_eq!(c.ups[1].poll_interval, Duration::from_millis(500));
        assert_eq!(c.ups[1].timeout, Duration::from_secs(1));
        assert!(parse(GOOD).unwrap().ups.is_empty());
    }

    #[test]
    fn bad_ups_tables_are_refused_with_their_key_and_line() {
        let two = |second: &str| format!("{GOOD}\n[[ups]]\nname = \"site\"\n\n[[ups]]\n{second}\n");
        // GOOD, a blank line, then the first [[ups]] (3 lines and a blank): the second
        // table's header is 5 lines after GOOD's last.
        let header = GOOD.lines().count() + 5;
        let cases = [
            (two("name = \"site\""), "ups[2].name", header + 1),
            (two("name = \"b\"\nfeeds = [\"agent-1\", \"agent-9\"]"), "ups[2].feeds[2]", header + 2),
            (two("name = \"b\"\ntimeout = \"0s\""), "ups[2].timeout", header + 2),
            (two("name = \"b\"\npoll-interval = \"0s\""), "ups[2].poll-interval", header + 2),
            (two("name = \"b c\""), "ups[2].name", header + 1),
            (two("name = \"b\"\nserver = \"localhost\""), "ups[2].server", header + 2),
            (two("name = \"b\"\nstarttls = true"), "ups[2].starttls", header + 2),
            (two("name = \"b\"\nca = \"/etc/nut/ca.pem\""), "ups[2].ca", header + 2),
        ];
        for (text, key, line) in cases {
            let e = parse(&text).unwrap_err();
            assert_eq!(e.key.as_deref(), Some(key), "{e}");
            assert_eq!(e.line, Some(line), "{e}\n{text}");
        }
    }

    #[test]
    fn the_readme_ups_example_parses() {
        let readme = include_str!("../../README.md");
        let block = readme
            .split("```toml\n")
            .filter_map(|b| b.split("```").next())
            .find(|b| b.contains("[[ups]]"))
            .expect("README has a [[ups]] example");
        let c = parse(&format!("{GOOD}\n{block}")).unwrap();
        assert_eq!(c.ups[0].name, "rack");
        assert_eq!(c.ups[0].feeds, ["agent-1", "agent-2"]);
    }

    #[test]
    fn an_unknown_ups_key_is_named() {
        let e = parse(&format!("{GOOD}\n[[ups]]\nname = \"site\"\npoll = \"1s\"\n")).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("poll"), "{e}");
        assert!(e.line.is_some(), "{e}");
    }

    #[test]
    fn actuators_and_notifiers_are_checked_and_located() {
        let c = parse(GOOD).unwrap();
        assert!(c.actuators.is_empty() && c.notifiers.is_empty());
        let twice = "[[actuator]]\nkind = \"dry-run\"\nname = \"log\"\n";
        let text = format!("{GOOD}\n{twice}\n{twice}");
        let e = parse(&text).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("actuator[2].name"), "{e}");
        assert_eq!(e.line, Some(GOOD.lines().count() + 8), "{e}");
        let text = format!(
            "{GOOD}\n[[notify]]\nkind = \"discord\"\nname = \"ops\"\nurl = \"https://discord.test/1/tok\"\n"
        );
        let e = parse(&text).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("notify[1].url"), "{e}");
        assert_eq!(e.line, Some(GOOD.lines().count() + 5), "{e}");
        assert!(!e.to_string().contains("tok\""), "{e}");
    }

    #[test]
    fn the_members_digest_ignores_order_but_not_votes() {
        let a = parse(GOOD).unwrap();
        let mut b = a.clone();
        b.members.reverse();
        assert_eq!(a.members_digest(), b.members_digest());
        b.members[0].voter = false;
        assert_ne!(a.members_digest(), b.members_digest());
    }
}
