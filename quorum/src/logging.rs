//! One log stream: tracing to stderr (journald captures it under systemd), with raft-rs's
//! slog records bridged in through slog-stdlog and tracing's log bridge.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// `SITEWATCH_LOG` takes an env-filter directive, e.g. `debug` or `info,raft=debug`.
pub const LOG_ENV: &str = "SITEWATCH_LOG";

pub fn init(default_directive: &str) {
    let filter = EnvFilter::try_from_env(LOG_ENV).unwrap_or_else(|_| EnvFilter::new(default_directive));
    // try_init: a second call (tests, the demo) keeps the first subscriber.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init();
}

/// The slog logger raft-rs wants, feeding the same stream.
pub fn raft_logger() -> slog::Logger {
    use slog::Drain;
    slog::Logger::root(slog_stdlog::StdLog.fuse(), slog::o!())
}
