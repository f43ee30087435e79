//! UPS sensing without IO: NUT upsd's text protocol, the status flags, what one poll of
//! a UPS found, and the "is this host on battery" rule.
//!
//! The agent's NUT client (agent/src/ups.rs) moves the bytes; everything that decides
//! something lives here and takes "now" as an argument (milliseconds on the caller's
//! monotonic clock), so it is tested without sockets or timers.

use std::collections::BTreeSet;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Longest reply line accepted from upsd, newline included. upsd caps a value at 256
/// bytes (ST_MAX_VALUE_LEN); escaping can double it, plus the names around it.
pub const MAX_LINE_LEN: usize = 1024;

/// The default upsd address: NUT's registered port on this host.
pub const DEFAULT_SERVER: &str = "127.0.0.1:3493";

/// The variables one poll asks for, `ups.status` first: its answer decides whether the
/// rest are worth asking.
pub const POLLED_VARS: [&str; 6] =
    ["ups.status", "battery.charge", "battery.runtime", "battery.runtime.low", "input.voltage", "ups.load"];

// ---------------------------------------------------------------------------------------
// Replies
// ---------------------------------------------------------------------------------------

/// The `ERR` codes a reading depends on; anything else is kept as sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrCode {
    /// The driver is alive but has not updated within upsd's MAXAGE.
    DataStale,
    /// upsd has no connection to the driver (it is not running).
    DriverNotConnected,
    /// upsd knows no UPS of that name.
    UnknownUps,
    AccessDenied,
    /// This UPS does not report this variable.
    VarNotSupported,
    Other(String),
}

impl ErrCode {
    pub fn parse(code: &str) -> ErrCode {
        match code {
            "DATA-STALE" => ErrCode::DataStale,
            "DRIVER-NOT-CONNECTED" => ErrCode::DriverNotConnected,
            "UNKNOWN-UPS" => ErrCode::UnknownUps,
            "ACCESS-DENIED" => ErrCode::AccessDenied,
            "VAR-NOT-SUPPORTED" => ErrCode::VarNotSupported,
            other => ErrCode::Other(other.to_owned()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            ErrCode::DataStale => "DATA-STALE",
            ErrCode::DriverNotConnected => "DRIVER-NOT-CONNECTED",
            ErrCode::UnknownUps => "UNKNOWN-UPS",
            ErrCode::AccessDenied => "ACCESS-DENIED",
            ErrCode::VarNotSupported => "VAR-NOT-SUPPORTED",
            ErrCode::Other(code) => code,
        }
    }
}

impl fmt::Display for ErrCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One reply line from upsd to a `GET VAR`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `VAR <ups> <var> "<value>"`, value unescaped.
    Var { ups: String, var: String, value: String },
    /// `ERR <CODE> [extra]`.
    Err { code: ErrCode, extra: Option<String> },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    #[error("reply line longer than {max} bytes")]
    TooLong { max: usize },
    #[error("reply is not UTF-8")]
    NotUtf8,
    #[error("empty reply line")]
    Empty,
    #[error("unterminated quoted string in reply: {line}")]
    Unterminated { line: String },
    #[error("unexpected reply: {line}")]
    Unexpected { line: String },
}

/// Shorten a hostile or broken line before it goes into an error message or a log.
fn excerpt(line: &str) -> String {
    const SHOWN: usize = 80;
    let mut out: String = line.chars().take(SHOWN).flat_map(char::escape_default).collect();
    if line.chars().count() > SHOWN {
        out.push('…');
    }
    out
}

/// Split a line into words the way upsd writes them: spaces separate, double quotes
/// group, and inside quotes a backslash makes the next character literal.
fn split_words(line: &str) -> Result<Vec<String>, ReplyError> {
    let mut words = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.next_if(|c| *c == ' ' || *c == '\t').is_some() {}
        let Some(first) = chars.next() else { return Ok(words) };
        let mut word = String::new();
        if first == '"' {
            loop {
                match chars.next() {
                    Some('"') => break,
                    Some('\\') => match chars.next() {
                        Some(c) => word.push(c),
                        None => return Err(ReplyError::Unterminated { line: excerpt(line) }),
                    },
                    Some(c) => word.push(c),
                    None => return Err(ReplyError::Unterminated { line: excerpt(line) }),
                }
            }
        } else {
            word.push(first);
            while let Some(c) = chars.next_if(|c| *c != ' ' && *c != '\t') {
                word.push(c);
            }
        }
        words.push(word);
    }
}

/// Parse one reply line (with or without its line ending). Never panics: anything that
/// is not a well-formed `VAR` or `ERR` line is an error naming what came.
pub fn parse_reply(line: &[u8]) -> Result<Reply, ReplyError> {
    if line.len() > MAX_LINE_LEN {
        return Err(ReplyError::TooLong { max: MAX_LINE_LEN });
    }
    let line = std::str::from_utf8(line).map_err(|_| ReplyError::NotUtf8)?;
    let line = line.strip_suffix('\n').unwrap_or(line);
    let line = line.strip_suffix('\r').unwrap_or(line);
    if line.trim().is_empty() {
        return Err(ReplyError::Empty);
    }
    let unexpected = || ReplyError::Unexpected { line: excerpt(line) };
    // ERR's extra text is free-form: split only the code off.
    if let Some(rest) = line.strip_prefix("ERR ") {
        let rest = rest.trim();
        let (code, extra) = match rest.split_once(' ') {
            Some((code, extra)) => (code, Some(extra.trim().to_owned()).filter(|e| !e.is_empty())),
            None => (rest, None),
        };
        if code.is_empty() {
            return Err(unexpected());
        }
        return Ok(Reply::Err { code: ErrCode::parse(code), extra });
    }
    let words = split_words(line)?;
    match <[String; 4]>::try_from(words) {
        Ok([keyword, ups, var, value]) if keyword == "VAR" && line.trim_end().ends_with('"') => {
            Ok(Reply::Var { ups, var, value })
        }
        _ => Err(unexpected()),
    }
}

impl Reply {
    /// The line upsd sends for this reply, newline included: names bare, the value quoted
    /// with `#`, `\\` and `"` escaped as upsd's `pconf_encode` does. [`parse_reply`] reads
    /// it back as the same reply (for the single-word names upsd uses).
    pub fn to_line(&self) -> String {
        match self {
            Reply::Var { ups, var, value } => {
                let mut line = format!("VAR {ups} {var} \"");
                for c in value.chars() {
                    if matches!(c, '#' | '\\' | '"') {
                        line.push('\\');
                    }
                    line.push(c);
                }
                line.push_str("\"\n");
                line
            }
            Reply::Err { code, extra: Some(extra) } => format!("ERR {code} {extra}\n"),
            Reply::Err { code, extra: None } => format!("ERR {code}\n"),
        }
    }
}

/// The request line for one variable. The UPS name is checked by [`check_ups_name`]
/// at config time and variable names are ours, so no quoting is needed.
pub fn get_var_command(ups: &str, var: &str) -> String {
    format!("GET VAR {ups} {var}\n")
}

// ---------------------------------------------------------------------------------------
// ups.status
// ---------------------------------------------------------------------------------------

/// The `ups.status` tokens NUT defines that sitewatch cares to name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum StatusFlag {
    /// On line power.
    OL,
    /// On battery.
    OB,
    /// Low battery.
    LB,
    /// High battery.
    HB,
    /// Battery needs replacing.
    RB,
    /// Charging.
    CHRG,
    /// Discharging (some models say so while on line, e.g. during a self test).
    DISCHRG,
    BYPASS,
    /// Runtime calibration.
    CAL,
    /// Output off.
    OFF,
    /// Overloaded.
    OVER,
    /// Trimming a high input voltage.
    TRIM,
    /// Boosting a low input voltage.
    BOOST,
    /// Forced shutdown in progress (latched by upsd until it restarts).
    FSD,
}

impl StatusFlag {
    const ALL: [StatusFlag; 14] = [
        StatusFlag::OL,
        StatusFlag::OB,
        StatusFlag::LB,
        StatusFlag::HB,
        StatusFlag::RB,
        StatusFlag::CHRG,
        StatusFlag::DISCHRG,
        StatusFlag::BYPASS,
        StatusFlag::CAL,
        StatusFlag::OFF,
        StatusFlag::OVER,
        StatusFlag::TRIM,
        StatusFlag::BOOST,
        StatusFlag::FSD,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            StatusFlag::OL => "OL",
            StatusFlag::OB => "OB",
            StatusFlag::LB => "LB",
            StatusFlag::HB => "HB",
            StatusFlag::RB => "RB",
            StatusFlag::CHRG => "CHRG",
            StatusFlag::DISCHRG => "DISCHRG",
            StatusFlag::BYPASS => "BYPASS",
            StatusFlag::CAL => "CAL",
            StatusFlag::OFF => "OFF",
            StatusFlag::OVER => "OVER",
            StatusFlag::TRIM => "TRIM",
            StatusFlag::BOOST => "BOOST",
            StatusFlag::FSD => "FSD",
        }
    }

    fn parse(token: &str) -> Option<StatusFlag> {
        StatusFlag::ALL.into_iter().find(|f| f.as_str() == token)
    }
}

/// `ups.status`, parsed tolerantly: order and repeats do not matter, and tokens we do
/// not know (`WAIT`, vendor extras) are kept rather than refused.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpsStatus {
    pub flags: BTreeSet<StatusFlag>,
    pub unknown: BTreeSet<String>,
}

impl UpsStatus {
    pub fn parse(text: &str) -> UpsStatus {
        let mut status = UpsStatus::default();
        for token in text.split_ascii_whitespace() {
            match StatusFlag::parse(token) {
                Some(flag) => {
                    status.flags.insert(flag);
                }
                None => {
                    status.unknown.insert(token.to_owned());
                }
            }
        }
        status
    }

    pub fn has(&self, flag: StatusFlag) -> bool {
        self.flags.contains(&flag)
    }

    /// upsd says `WAIT` for about a second after a driver (re)start, before any data.
    pub fn is_waiting(&self) -> bool {
        self.flags.is_empty() && self.unknown.contains("WAIT")
    }
}

impl fmt::Display for UpsStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let words: Vec<&str> =
            self.flags.iter().map(|f| f.as_str()).chain(self.unknown.iter().map(String::as_str)).collect();
        f.write_str(&words.join(" "))
    }
}

// ---------------------------------------------------------------------------------------
// Readings
// ---------------------------------------------------------------------------------------

/// What the UPS reported in one poll; each number is None when the UPS does not report it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UpsData {
    pub status: UpsStatus,
    /// Percent.
    pub battery_charge: Option<f64>,
    pub battery_runtime_s: Option<u64>,
    /// The runtime below which the UPS raises LB.
    pub battery_runtime_low_s: Option<u64>,
    pub input_voltage: Option<f64>,
    /// Percent of the UPS's capacity.
    pub load: Option<f64>,
}

/// What one poll of one UPS found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "state")]
pub enum UpsState {
    Data(UpsData),
    /// The driver has just (re)started and has no data yet (`ups.status` is `WAIT`).
    Waiting,
    /// The driver is alive but silent beyond upsd's MAXAGE (`ERR DATA-STALE`).
    Stale,
    /// upsd has no driver for this UPS (`ERR DRIVER-NOT-CONNECTED`).
    DriverGone,
    /// upsd knows no UPS of the configured name.
    UnknownUps,
    AccessDenied,
    /// upsd answered, but not with anything a reading can be made of.
    Unusable {
        error: String,
    },
    /// No answer from upsd: connect failed, the connection broke, or a deadline passed.
    Unreachable {
        error: String,
    },
}

impl UpsState {
    /// A short stable name for logs and change detection.
    pub fn kind(&self) -> &'static str {
        match self {
            UpsState::Data(_) => "data",
            UpsState::Waiting => "waiting",
            UpsState::Stale => "stale",
            UpsState::DriverGone => "driver-gone",
            UpsState::UnknownUps => "unknown-ups",
            UpsState::AccessDenied => "access-denied",
            UpsState::Unusable { .. } => "unusable",
            UpsState::Unreachable { .. } => "unreachable",
        }
    }

    /// The state an `ERR` reply puts a whole reading in.
    fn from_err(code: &ErrCode, extra: Option<&str>, var: &str) -> UpsState {
        match code {
            ErrCode::DataStale => UpsState::Stale,
            ErrCode::DriverNotConnected => UpsState::DriverGone,
            ErrCode::UnknownUps => UpsState::UnknownUps,
            ErrCode::AccessDenied => UpsState::AccessDenied,
            ErrCode::VarNotSupported | ErrCode::Other(_) => UpsState::Unusable {
                error: match extra {
                    Some(extra) => format!("upsd answered ERR {code} {extra} to GET VAR {var}"),
                    None => format!("upsd answered ERR {code} to GET VAR {var}"),
                },
            },
        }
    }
}

impl fmt::Display for UpsState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpsState::Data(d) => write!(f, "status {}", d.status),
            UpsState::Waiting => f.write_str("driver started, no data yet"),
            UpsState::Stale => f.write_str("data stale: the driver is silent (upsd DATA-STALE)"),
            UpsState::DriverGone => f.write_str("driver not connected to upsd"),
            UpsState::UnknownUps => {
                f.write_str("upsd knows no UPS of this name (check the section names in ups.conf)")
            }
            UpsState::AccessDenied => f.write_str("upsd denied access (check upsd.conf/upsd.users)"),
            UpsState::Unusable { error } => write!(f, "unusable answer: {error}"),
            UpsState::Unreachable { error } => write!(f, "upsd unreachable: {error}"),
        }
    }
}

/// A reply that does not belong to the request it answers: the stream is out of step
/// and the connection must not be trusted further.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("answer to GET VAR {ups} {var} was for {got}")]
pub struct OutOfStep {
    pub ups: String,
    pub var: String,
    pub got: String,
}

/// One poll of one UPS as a state machine: ask [`UpsPoll::next_command`], feed each
/// reply to [`UpsPoll::on_reply`], and take [`UpsPoll::finish`] once no command is left.
#[derive(Debug, Clone)]
pub struct UpsPoll {
    ups: String,
    next: usize,
    data: UpsData,
    /// Set when an answer settled the reading before all variables were asked.
    settled: Option<UpsState>,
}

impl UpsPoll {
    pub fn new(ups: &str) -> UpsPoll {
        UpsPoll { ups: ups.to_owned(), next: 0, data: UpsData::default(), settled: None }
    }

    /// The next request line to send, or None when the poll is complete.
    pub fn next_command(&self) -> Option<String> {
        if self.settled.is_some() {
            return None;
        }
        POLLED_VARS.get(self.next).map(|var| get_var_command(&self.ups, var))
    }

    pub fn on_reply(&mut self, reply: Reply) -> Result<(), OutOfStep> {
        let Some(&asked) = POLLED_VARS.get(self.next) else { return Ok(()) };
        if self.settled.is_some() {
            return Ok(());
        }
        self.next += 1;
        match reply {
            Reply::Var { ups, var, value } => {
                if ups != self.ups || var != asked {
                    return Err(OutOfStep {
                        ups: self.ups.clone(),
                        var: asked.to_owned(),
                        got: format!("{ups} {var}"),
                    });
                }
                self.store(asked, &value);
            }
            // Absent variables are normal; only ups.status is indispensable.
            Reply::Err { code: ErrCode::VarNotSupported, .. } if asked != "ups.status" => {}
            Reply::Err { code, extra } => {
                self.settled = Some(UpsState::from_err(&code, extra.as_deref(), asked));
            }
        }
        Ok(())
    }

    fn store(&mut self, var: &str, value: &str) {
        // A value that is not a number is treated as absent: one odd field must not
        // cost the whole reading.
        match var {
            "ups.status" => {
                let status = UpsStatus::parse(value);
                if status.is_waiting() {
                    self.settled = Some(UpsState::Waiting);
                } else if status.flags.is_empty() && status.unknown.is_empty() {
                    self.settled = Some(UpsState::Unusable { error: "ups.status is empty".into() });
                }
                self.data.status = status;
            }
            "battery.charge" => self.data.battery_charge = parse_number(value),
            "battery.runtime" => self.data.battery_runtime_s = parse_seconds(value),
            "battery.runtime.low" => self.data.battery_runtime_low_s = parse_seconds(value),
            "input.voltage" => self.data.input_voltage = parse_number(value),
            "ups.load" => self.data.load = parse_number(value),
            _ => {}
        }
    }

    pub fn finish(self) -> UpsState {
        self.settled.unwrap_or(UpsState::Data(self.data))
    }
}

fn parse_number(value: &str) -> Option<f64> {
    value.trim().parse::<f64>().ok().filter(|v| v.is_finite())
}

/// Runtimes come as "1800" or "1800.00" depending on the driver.
fn parse_seconds(value: &str) -> Option<u64> {
    // The filter keeps the cast in range; the fraction is dropped on purpose.
    parse_number(value).filter(|v| *v >= 0.0 && *v < 1e15).map(|v| v as u64)
}

/// The latest word on one UPS, stamped with the caller's monotonic clock.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpsReading {
    /// The UPS name at upsd.
    pub name: String,
    pub state: UpsState,
    /// When this state was observed, ms on the caller's clock.
    pub observed_at_ms: u64,
    /// When data (a [`UpsState::Data`]) was last seen, if ever.
    pub last_data_ms: Option<u64>,
}

impl UpsReading {
    /// The first reading of a UPS: nothing known yet.
    pub fn unknown(name: &str, now_ms: u64) -> UpsReading {
        UpsReading {
            name: name.to_owned(),
            state: UpsState::Unreachable { error: "not polled yet".into() },
            observed_at_ms: now_ms,
            last_data_ms: None,
        }
    }

    /// The reading that follows `self` when a poll at `now_ms` found `state`.
    pub fn next(&self, state: UpsState, now_ms: u64) -> UpsReading {
        let last_data_ms = if matches!(state, UpsState::Data(_)) { Some(now_ms) } else { self.last_data_ms };
        UpsReading { name: self.name.clone(), state, observed_at_ms: now_ms, last_data_ms }
    }

    pub fn age(&self, now_ms: u64) -> Duration {
        Duration::from_millis(now_ms.saturating_sub(self.observed_at_ms))
    }

    /// The data, only if this reading carries data observed within `max_age`.
    pub fn fresh_data(&self, now_ms: u64, max_age: Duration) -> Option<&UpsData> {
        match &self.state {
            UpsState::Data(data) if self.age(now_ms) <= max_age => Some(data),
            _ => None,
        }
    }

    pub fn is_fresh(&self, now_ms: u64, max_age: Duration) -> bool {
        self.fresh_data(now_ms, max_age).is_some()
    }

    /// Where this UPS draws its power from, as far as fresh data says.
    pub fn power(&self, now_ms: u64, max_age: Duration) -> Power {
        let Some(data) = self.fresh_data(now_ms, max_age) else { return Power::Unknown };
        // OB wins over a contradictory OL: missing a power cut costs more than a false alarm.
        if data.status.has(StatusFlag::OB) {
            Power::Battery
        } else if data.status.has(StatusFlag::OL) {
            Power::Line
        } else {
            Power::Unknown
        }
    }
}

/// Where power comes from. `Unknown` is never folded into `Line`: no news is not good news.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Power {
    Line,
    Battery,
    Unknown,
}

/// Is a host fed by these UPSes on battery? A host with two power supplies on two UPSes
/// keeps running on line power while either UPS has it, so:
/// - any feed fresh and on line: `Line`;
/// - every feed fresh and on battery: `Battery`;
/// - otherwise (no feeds, or some unknown and none on line): `Unknown`.
pub fn host_power<'a>(
    feeds: impl IntoIterator<Item = Option<&'a UpsReading>>,
    now_ms: u64,
    max_age: Duration,
) -> Power {
    let mut any = false;
    let mut all_battery = true;
    for reading in feeds {
        any = true;
        match reading.map_or(Power::Unknown, |r| r.power(now_ms, max_age)) {
            Power::Line => return Power::Line,
            Power::Battery => {}
            Power::Unknown => all_battery = false,
        }
    }
    if any && all_battery { Power::Battery } else { Power::Unknown }
}

/// The UPSes (by config) that feed `host`; a UPS with no `feeds` feeds `this_node`.
pub fn feeds_of<'a>(
    configs: &'a [UpsConfig],
    host: &'a str,
    this_node: &'a str,
) -> impl Iterator<Item = &'a UpsConfig> + 'a {
    configs.iter().filter(move |c| {
        if c.feeds.is_empty() { host == this_node } else { c.feeds.iter().any(|f| f == host) }
    })
}

// ---------------------------------------------------------------------------------------
// Config
// ---------------------------------------------------------------------------------------

/// One `[[ups]]` table of the daemon config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct UpsConfig {
    /// The UPS name at upsd (its section name in ups.conf).
    pub name: String,
    /// upsd's host:port.
    #[serde(default = "default_server")]
    pub server: String,
    /// Member names of the hosts this UPS powers; empty means this node.
    #[serde(default)]
    pub feeds: Vec<String>,
    #[serde(default = "default_poll_interval", with = "humantime_serde")]
    pub poll_interval: Duration,
    /// The deadline for connecting and for each answer.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Upgrade the connection with STARTTLS before reading (upsd needs CERTFILE).
    #[serde(default)]
    pub starttls: bool,
    /// The CA (PEM) that signed upsd's certificate; needed with `starttls`.
    #[serde(default)]
    pub ca: Option<PathBuf>,
}

impl UpsConfig {
    /// A config with every default, for `name`.
    pub fn new(name: &str) -> UpsConfig {
        UpsConfig {
            name: name.to_owned(),
            server: default_server(),
            feeds: Vec::new(),
            poll_interval: default_poll_interval(),
            timeout: default_timeout(),
            starttls: false,
            ca: None,
        }
    }

    /// The host part of `server`, for TLS name checks (brackets of an IPv6 literal removed).
    pub fn server_host(&self) -> &str {
        let host = self.server.rsplit_once(':').map_or(self.server.as_str(), |(host, _)| host);
        host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host)
    }
}

fn default_server() -> String {
    DEFAULT_SERVER.to_owned()
}

fn default_poll_interval() -> Duration {
    Duration::from_secs(1)
}

fn default_timeout() -> Duration {
    Duration::from_secs(2)
}

/// UPS names go into request lines unquoted: printable ASCII, no spaces or quotes.
pub fn check_ups_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\' && b != b'@');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not a valid UPS name: use 1-64 printable characters without spaces, quotes, `\\` or `@`"
        ))
    }
}

/// `server` must be host:port with a port number.
pub fn check_server(server: &str) -> Result<(), String> {
    match server.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => Ok(()),
        _ => Err(format!("`{server}` needs host:port, e.g. \"127.0.0.1:3493\"")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn var(ups: &str, var: &str, value: &str) -> Reply {
        Reply::Var { ups: ups.into(), var: var.into(), value: value.into() }
    }

    fn err(code: ErrCode) -> Reply {
        Reply::Err { code, extra: None }
    }

    #[test]
    fn var_lines_parse_with_escapes() {
        assert_eq!(parse_reply(b"VAR site ups.status \"OL\"\n").unwrap(), var("site", "ups.status", "OL"));
        assert_eq!(
            parse_reply(b"VAR site ups.status \"OB LB\"\r\n").unwrap(),
            var("site", "ups.status", "OB LB")
        );
        assert_eq!(
            parse_reply(br#"VAR site ups.mfr "say \"hi\" \\ there""#).unwrap(),
            var("site", "ups.mfr", r#"say "hi" \ there"#)
        );
        assert_eq!(parse_reply(b"VAR site x \"\"").unwrap(), var("site", "x", ""));
    }

    #[test]
    fn replies_encode_as_upsd_writes_them() {
        let mfr = var("site", "ups.mfr", r#"say "hi" \ #1"#);
        assert_eq!(mfr.to_line(), "VAR site ups.mfr \"say \\\"hi\\\" \\\\ \\#1\"\n");
        assert_eq!(parse_reply(mfr.to_line().as_bytes()).unwrap(), mfr);
        assert_eq!(err(ErrCode::DataStale).to_line(), "ERR DATA-STALE\n");
        let extra = Reply::Err { code: ErrCode::Other("UNKNOWN-COMMAND".into()), extra: Some("x y".into()) };
        assert_eq!(extra.to_line(), "ERR UNKNOWN-COMMAND x y\n");
        assert_eq!(parse_reply(extra.to_line().as_bytes()).unwrap(), extra);
    }

    #[test]
    fn err_lines_parse_into_codes() {
        let cases = [
            ("ERR DATA-STALE", ErrCode::DataStale),
            ("ERR DRIVER-NOT-CONNECTED", ErrCode::DriverNotConnected),
            ("ERR UNKNOWN-UPS", ErrCode::UnknownUps),
            ("ERR ACCESS-DENIED", ErrCode::AccessDenied),
            ("ERR VAR-NOT-SUPPORTED", ErrCode::VarNotSupported),
            ("ERR INVALID-ARGUMENT", ErrCode::Other("INVALID-ARGUMENT".into())),
        ];
        for (line, code) in cases {
            assert_eq!(parse_reply(line.as_bytes()).unwrap(), err(code), "{line}");
        }
        assert_eq!(
            parse_reply(b"ERR UNKNOWN-COMMAND some more words\n").unwrap(),
            Reply::Err {
                code: ErrCode::Other("UNKNOWN-COMMAND".into()),
                extra: Some("some more words".into())
            }
        );
    }

    #[test]
    fn garbage_lines_are_errors_not_panics() {
        let long = vec![b'A'; MAX_LINE_LEN + 1];
        let cases: [&[u8]; 14] = [
            b"",
            b"\n",
            b"   ",
            b"OK",
            b"ERR",
            b"ERR ",
            b"VAR site ups.status",
            b"VAR site ups.status OL",
            b"VAR site ups.status \"OL",
            b"VAR site ups.status \"OL\\",
            b"VAR site ups.status \"OL\" extra",
            b"BEGIN LIST VAR site",
            b"\xff\xfe VAR",
            &long,
        ];
        for line in cases {
            assert!(parse_reply(line).is_err(), "{:?} should be refused", String::from_utf8_lossy(line));
        }
        assert_eq!(parse_reply(&long), Err(ReplyError::TooLong { max: MAX_LINE_LEN }));
        assert_eq!(parse_reply(b"\xff"), Err(ReplyError::NotUtf8));
        // Errors show a bounded, escaped excerpt of what came.
        let shown =
            parse_reply(format!("HELLO\x1b[31m{}", "x".repeat(500)).as_bytes()).unwrap_err().to_string();
        assert!(shown.len() < 200 && !shown.contains('\x1b'), "{shown}");
    }

    #[test]
    fn status_is_parsed_tolerantly() {
        let s = UpsStatus::parse("FSD OB OFF OB");
        assert_eq!(s.flags, [StatusFlag::OB, StatusFlag::OFF, StatusFlag::FSD].into_iter().collect());
        assert!(s.unknown.is_empty());
        let s = UpsStatus::parse("OL DISCHRG");
        assert!(s.has(StatusFlag::OL) && s.has(StatusFlag::DISCHRG) && !s.has(StatusFlag::OB));
        let s = UpsStatus::parse("WAIT");
        assert!(s.is_waiting() && s.flags.is_empty());
        let s = UpsStatus::parse("  OL  CHRG ALARM ALARM ");
        assert_eq!(s.unknown, ["ALARM".to_owned()].into_iter().collect());
        assert_eq!(s.to_string(), "OL CHRG ALARM");
        assert!(!UpsStatus::parse("OL WAIT").is_waiting());
        let all = "OL OB LB HB RB CHRG DISCHRG BYPASS CAL OFF OVER TRIM BOOST FSD";
        assert_eq!(UpsStatus::parse(all).flags.len(), 14);
    }

    fn run_poll(replies: &[Reply]) -> (UpsState, usize) {
        let mut poll = UpsPoll::new("site");
        let mut asked = 0;
        let mut replies = replies.iter();
        while let Some(cmd) = poll.next_command() {
            assert_eq!(cmd, format!("GET VAR site {}\n", POLLED_VARS[asked]));
            asked += 1;
            poll.on_reply(replies.next().expect("a reply for every command").clone()).unwrap();
        }
        (poll.finish(), asked)
    }

    #[test]
    fn a_full_poll_gives_data_and_tolerates_missing_vars() {
        let (state, asked) = run_poll(&[
            var("site", "ups.status", "OB LB"),
            var("site", "battery.charge", "12.5"),
            var("site", "battery.runtime", "240.00"),
            err(ErrCode::VarNotSupported),
            var("site", "input.voltage", "not a number"),
            var("site", "ups.load", "25"),
        ]);
        assert_eq!(asked, 6);
        let UpsState::Data(d) = state else { panic!("expected data, got {state:?}") };
        assert!(d.status.has(StatusFlag::OB) && d.status.has(StatusFlag::LB));
        assert_eq!(d.battery_charge, Some(12.5));
        assert_eq!(d.battery_runtime_s, Some(240));
        assert_eq!(d.battery_runtime_low_s, None);
        assert_eq!(d.input_voltage, None);
        assert_eq!(d.load, Some(25.0));
    }

    #[test]
    fn an_error_on_status_settles_the_poll_at_once() {
        let cases = [
            (err(ErrCode::DataStale), UpsState::Stale),
            (err(ErrCode::DriverNotConnected), UpsState::DriverGone),
            (err(ErrCode::UnknownUps), UpsState::UnknownUps),
            (err(ErrCode::AccessDenied), UpsState::AccessDenied),
            (var("site", "ups.status", "WAIT"), UpsState::Waiting),
        ];
        for (reply, expected) in cases {
            assert_eq!(run_poll(std::slice::from_ref(&reply)), (expected, 1), "{reply:?}");
        }
        // Without ups.status there is no reading: not "no flags".
        let (state, _) = run_poll(&[err(ErrCode::VarNotSupported)]);
        assert!(matches!(&state, UpsState::Unusable { error } if error.contains("ups.status")), "{state:?}");
        let (state, _) = run_poll(&[var("site", "ups.status", "")]);
        assert_eq!(state.kind(), "unusable");
    }

    #[test]
    fn an_error_midway_wins_over_earlier_data() {
        let (state, asked) = run_poll(&[var("site", "ups.status", "OL"), err(ErrCode::DataStale)]);
        assert_eq!((state, asked), (UpsState::Stale, 2));
    }

    #[test]
    fn an_answer_for_something_else_is_out_of_step() {
        let mut poll = UpsPoll::new("site");
        assert!(poll.on_reply(var("other", "ups.status", "OL")).is_err());
        let mut poll = UpsPoll::new("site");
        assert!(poll.on_reply(var("site", "battery.charge", "100")).is_err());
    }

    fn reading(status: &str, at: u64) -> UpsReading {
        let state = UpsState::Data(UpsData { status: UpsStatus::parse(status), ..UpsData::default() });
        UpsReading::unknown("site", 0).next(state, at)
    }

    const MAX_AGE: Duration = Duration::from_secs(5);

    #[test]
    fn old_or_stale_readings_are_never_fresh() {
        let r = reading("OB", 1_000);
        assert!(r.is_fresh(6_000, MAX_AGE));
        assert!(!r.is_fresh(6_001, MAX_AGE));
        assert_eq!(r.power(6_001, MAX_AGE), Power::Unknown);
        assert_eq!(r.age(500), Duration::ZERO, "a clock before the reading is not negative");
        let stale = r.next(UpsState::Stale, 2_000);
        assert!(!stale.is_fresh(2_000, MAX_AGE));
        assert_eq!(stale.last_data_ms, Some(1_000), "keeps when data was last seen");
        assert_eq!(stale.power(2_000, MAX_AGE), Power::Unknown);
        assert_eq!(UpsReading::unknown("x", 0).power(0, MAX_AGE), Power::Unknown);
    }

    #[test]
    fn power_follows_the_flags() {
        assert_eq!(reading("OL CHRG", 0).power(0, MAX_AGE), Power::Line);
        assert_eq!(reading("OL DISCHRG", 0).power(0, MAX_AGE), Power::Line);
        assert_eq!(reading("OB DISCHRG", 0).power(0, MAX_AGE), Power::Battery);
        assert_eq!(reading("FSD OB OFF OB", 0).power(0, MAX_AGE), Power::Battery);
        assert_eq!(reading("OL OB", 0).power(0, MAX_AGE), Power::Battery);
        assert_eq!(reading("OFF", 0).power(0, MAX_AGE), Power::Unknown);
    }

    #[test]
    fn a_host_is_on_battery_only_when_every_feed_is() {
        let now = 1_000;
        let ob = reading("OB", now);
        let ol = reading("OL", now);
        let stale = ob.next(UpsState::Stale, now);
        let p = |feeds: &[Option<&UpsReading>]| host_power(feeds.iter().copied(), now, MAX_AGE);
        assert_eq!(p(&[Some(&ob)]), Power::Battery);
        assert_eq!(p(&[Some(&ob), Some(&ob)]), Power::Battery);
        assert_eq!(p(&[Some(&ob), Some(&ol)]), Power::Line);
        assert_eq!(p(&[Some(&stale), Some(&ol)]), Power::Line);
        assert_eq!(p(&[Some(&ob), Some(&stale)]), Power::Unknown);
        assert_eq!(p(&[Some(&ob), None]), Power::Unknown);
        assert_eq!(p(&[]), Power::Unknown);
        // The same OB readings, too old: unknown, never battery or line.
        assert_eq!(host_power([Some(&ob), Some(&ob)], now + 10_000, MAX_AGE), Power::Unknown);
    }

    #[test]
    fn readings_roundtrip_through_the_wire_encoding() {
        // Readings will travel as observations inside frames (MessagePack).
        let data = reading("OB LB ALARM", 1_000);
        for r in [data.clone(), data.next(UpsState::Unreachable { error: "refused".into() }, 2_000)] {
            // Frames use the compact encoding, snapshots the named one: both must work.
            for bytes in [rmp_serde::to_vec(&r).unwrap(), rmp_serde::to_vec_named(&r).unwrap()] {
                assert_eq!(rmp_serde::from_slice::<UpsReading>(&bytes).unwrap(), r);
            }
        }
    }

    #[test]
    fn feeds_default_to_this_node() {
        let mut a = UpsConfig::new("a");
        a.feeds = vec!["host-1".into(), "host-2".into()];
        let b = UpsConfig::new("b");
        let configs = [a, b];
        let names = |host| feeds_of(&configs, host, "host-1").map(|c| c.name.as_str()).collect::<Vec<_>>();
        assert_eq!(names("host-1"), ["a", "b"]);
        assert_eq!(names("host-2"), ["a"]);
        assert!(names("host-3").is_empty());
    }

    #[test]
    fn config_defaults_and_checks() {
        #[derive(Deserialize)]
        struct Doc {
            ups: Vec<UpsConfig>,
        }
        let doc: Doc = toml::from_str(
            "[[ups]]\nname = \"site\"\n[[ups]]\nname = \"b\"\nserver = \"[::1]:3493\"\npoll-interval = \"250ms\"\n",
        )
        .unwrap();
        assert_eq!(doc.ups[0], UpsConfig::new("site"));
        assert_eq!(doc.ups[1].poll_interval, Duration::from_millis(250));
        assert_eq!(doc.ups[1].server_host(), "::1");
        assert_eq!(doc.ups[0].server_host(), "127.0.0.1");
        assert!(toml::from_str::<Doc>("[[ups]]\nname = \"a\"\npoll = \"1s\"\n").is_err());
        assert!(check_ups_name("site-1_a.b").is_ok());
        for bad in ["", "a b", "a\"b", "ups@host", &"x".repeat(65)] {
            assert!(check_ups_name(bad).is_err(), "{bad}");
        }
        assert!(check_server("localhost:3493").is_ok());
        for bad in ["localhost", ":3493", "host:0", "host:port"] {
            assert!(check_server(bad).is_err(), "{bad}");
        }
    }
}
