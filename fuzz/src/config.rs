//! What must hold of the config parser ([`sitewatch_quorum::config::Config::parse`]) for
//! any file an operator might write: it returns rather than panics; every error names the
//! file and the line, and a key when it has one; a config it accepts is usable.

use std::path::Path;

use sitewatch_quorum::config::Config;

const ORIGIN: &str = "/etc/sitewatch/agent.toml";

pub fn check(data: &[u8]) {
    // Config::load reads the file as UTF-8 and refuses anything else before parsing.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::parse(text, Path::new(ORIGIN)) {
        Ok(config) => {
            // Validation promised these.
            assert!(config.member(&config.node).is_some(), "node is not a member");
            let _ = config.me();
            let _ = config.members_digest();
        }
        Err(e) => {
            let shown = e.to_string();
            assert!(!e.message.trim().is_empty(), "empty message: {shown}");
            assert!(shown.starts_with(ORIGIN), "the error does not name the file: {shown}");
            let lines = text.lines().count().max(1);
            match e.line {
                Some(line) => assert!(
                    (1..=lines + 1).contains(&line),
                    "line {line} is outside the file's {lines} lines: {shown}"
                ),
                None => panic!("the error names no line: {shown}"),
            }
            if let Some(key) = &e.key {
                assert!(!key.is_empty(), "empty key: {shown}");
            }
        }
    }
}
