//! What must hold of the NUT reply parser ([`sitewatch_proto::ups`]) for anything an upsd,
//! or something posing as one, sends: lines are split as the agent's client splits them,
//! every line parses or is refused with a short printable message, a parsed reply comes
//! back unchanged through [`Reply::to_line`], and a poll fed these lines ends in a state
//! without panicking. `ups.status` values survive their own display and parse.

use sitewatch_proto::ups::{MAX_LINE_LEN, Reply, ReplyError, UpsPoll, UpsState, UpsStatus, parse_reply};

/// The UPS the poll asks about; the seed replies name it.
const UPS: &str = "site";

pub fn check(stream: &[u8]) {
    for line in Lines(stream) {
        match parse_reply(line) {
            Ok(reply) => check_reply(&reply),
            Err(e) => check_error(&e),
        }
    }
    poll(stream);
}

/// One poll as the agent runs it (agent/src/ups.rs `NutConnection::poll`): a command, one
/// line back, until the poll needs no more; the first bad line ends the connection.
fn poll(stream: &[u8]) {
    let mut poll = UpsPoll::new(UPS);
    let mut lines = Lines(stream);
    while poll.next_command().is_some() {
        let Some(line) = lines.next() else {
            return;
        };
        let Ok(reply) = parse_reply(line) else {
            return;
        };
        if poll.on_reply(reply).is_err() {
            return;
        }
    }
    let state = poll.finish();
    assert!(!state.to_string().is_empty(), "a state shows as nothing");
    if let UpsState::Data(data) = &state {
        check_status(&data.status);
    }
}

fn check_reply(reply: &Reply) {
    if let Reply::Var { ups, var, value } = reply {
        check_status(&UpsStatus::parse(value));
        // upsd's names are single bare words; a quoted name with a space in it parses,
        // but no encoder writes it back as one word.
        if !(bare_word(ups) && bare_word(var)) {
            return;
        }
    }
    let line = reply.to_line();
    match parse_reply(line.as_bytes()) {
        Ok(again) => assert_eq!(&again, reply, "{line:?} read back differently"),
        // Escaping can lengthen a value past the line limit, which the parser enforces.
        Err(ReplyError::TooLong { .. }) if line.len() > MAX_LINE_LEN => {}
        Err(e) => panic!("{reply:?} encoded as {line:?}, which does not parse: {e}"),
    }
}

fn bare_word(word: &str) -> bool {
    !word.is_empty() && !word.starts_with('"') && !word.contains([' ', '\t'])
}

fn check_status(status: &UpsStatus) {
    let shown = status.to_string();
    assert_eq!(&UpsStatus::parse(&shown), status, "ups.status {shown:?} read back differently");
}

/// Error messages go to logs and the status: never empty, never raw control characters
/// from the peer, never the whole hostile line.
fn check_error(e: &ReplyError) {
    let shown = e.to_string();
    assert!(!shown.is_empty(), "empty error for {e:?}");
    assert!(shown.len() <= 1024, "error of {} bytes", shown.len());
    assert!(!shown.chars().any(char::is_control), "control character in error {shown:?}");
}

/// Reply lines as agent/src/ups.rs `read_line` cuts them: up to and including a newline,
/// at most one byte over [`MAX_LINE_LEN`] (which the parser then refuses). A longer line,
/// or a last one without its newline, ends the connection there.
struct Lines<'a>(&'a [u8]);

impl<'a> Iterator for Lines<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let window = &self.0[..self.0.len().min(MAX_LINE_LEN + 1)];
        let end = window.iter().position(|&b| b == b'\n')? + 1;
        let (line, rest) = self.0.split_at(end);
        self.0 = rest;
        Some(line)
    }
}
