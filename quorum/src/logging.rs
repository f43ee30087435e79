//! One log stream: tracing to journald when stderr is connected to the journal (native
//! fields, priorities), else to stderr; raft-rs's slog records are bridged in through
//! slog-stdlog and tracing's log bridge.

use std::io::IsTerminal;
use std::os::unix::fs::MetadataExt;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// `SITEWATCH_LOG` takes an env-filter directive, e.g. `debug` or `info,raft=debug`.
pub const LOG_ENV: &str = "SITEWATCH_LOG";

pub fn init(default_directive: &str) {
    let filter = EnvFilter::try_from_env(LOG_ENV).unwrap_or_else(|_| EnvFilter::new(default_directive));
    // try_init: a second call (tests, the demo) keeps the first subscriber.
    if stderr_is_journal()
        && let Ok(journald) = tracing_journald::layer()
    {
        let _ = tracing_subscriber::registry()
            .with(filter)
            .with(journald.with_syslog_identifier(identifier()))
            .try_init();
        return;
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init();
}

/// systemd sets JOURNAL_STREAM=<dev>:<inode> for a service whose stderr is the journal;
/// it counts only if stderr is still that stream (a child may have redirected it).
fn stderr_is_journal() -> bool {
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else { return false };
    let Some((dev, ino)) = value.to_str().and_then(|v| v.split_once(':')) else { return false };
    let Ok(meta) = std::fs::metadata("/proc/self/fd/2") else { return false };
    dev.parse() == Ok(meta.dev()) && ino.parse() == Ok(meta.ino())
}

fn identifier() -> String {
    std::env::args()
        .next()
        .and_then(|a| std::path::Path::new(&a).file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "sitewatch".into())
}

/// The slog logger raft-rs wants, feeding the same stream.
pub fn raft_logger() -> slog::Logger {
    use slog::Drain;
    slog::Logger::root(slog_stdlog::StdLog.fuse(), slog::o!())
}
