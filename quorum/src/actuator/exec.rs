//! The exec actuator: run a program without a shell, in the manner of NUT's NOTIFYCMD.
//! The action travels in `BURST_*` environment variables and as JSON on stdin. Exit 0
//! means done, 75 (EX_TEMPFAIL) asks for another attempt after a backoff, anything else
//! is a failure that names the status and the end of stderr.
//!
//! The hook runs in its own process group. At the timeout the group gets SIGTERM, then
//! SIGKILL after a grace; dropping the apply future kills the group at once, so nothing
//! the hook started outlives an abandoned action.

use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use rustix::process::{Pid, Signal, kill_process_group};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;
use tokio_util::task::AbortOnDropHandle;
use tracing::{debug, warn};

use super::config::ExecConfig;
use super::retry::{self, Attempt, RetryPolicy};
use super::{Action, ActuatorError, Outcome};

/// sysexits.h: a temporary failure; the hook asks to be run again.
pub const EX_TEMPFAIL: i32 = 75;
/// How much of stdout and stderr is kept: the end, where the error usually is.
const TAIL_BYTES: usize = 4096;
const TAIL_LINES: usize = 10;
/// After the hook exits, its pipes may stay open in a background process it left.
const PIPE_DRAIN: Duration = Duration::from_millis(200);

#[derive(Debug)]
pub struct Exec {
    argv: Vec<String>,
    timeout: Duration,
    kill_grace: Duration,
    retry: RetryPolicy,
}

impl Exec {
    pub fn from_config(c: &ExecConfig) -> Exec {
        Exec { argv: c.command.clone(), timeout: c.timeout, kill_grace: c.kill_grace, retry: c.retry() }
    }

    pub async fn apply(&self, name: &str, action: &Action) -> Result<Outcome, ActuatorError> {
        let stdin =
            serde_json::to_vec(action).map_err(|e| ActuatorError::Permanent(format!("encoding: {e}")))?;
        let detail =
            retry::run(&self.retry, name, |attempt| self.attempt(name, action, &stdin, attempt)).await?;
        Ok(Outcome::Applied { detail })
    }

    fn command(&self, action: &Action) -> Command {
        let mut cmd = Command::new(&self.argv[0]);
        cmd.args(&self.argv[1..])
            .env("BURST_CLUSTER", &action.cluster_id)
            .env("BURST_VERDICT", action.verdict.to_string())
            .env("BURST_DESIRED_CAPACITY", action.desired_capacity.to_string())
            .env("BURST_PREVIOUS_CAPACITY", action.previous_capacity.to_string())
            .env("BURST_TERM", action.token.term.to_string())
            .env("BURST_INDEX", action.token.index.to_string())
            .env("BURST_IDEMPOTENCY_KEY", &action.idempotency_key)
            .env("BURST_UNILATERAL", if action.unilateral { "1" } else { "0" })
            .env("BURST_REASONS", action.reasons.join(","))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own group, so a signal reaches whatever the hook started too.
            .process_group(0)
            .kill_on_drop(true);
        cmd
    }

    async fn attempt(&self, name: &str, action: &Action, stdin: &[u8], attempt: u32) -> Attempt<String> {
        let program = &self.argv[0];
        let mut child = match self.command(action).spawn() {
            Ok(c) => c,
            Err(e) if spawn_may_succeed_later(&e) => {
                return Attempt::Retry { error: format!("cannot run {program} yet: {e}"), retry_after: None };
            }
            Err(e) => return Attempt::Fail(format!("cannot run {program}: {e}")),
        };
        let mut group = GroupGuard(child.id().and_then(|id| Pid::from_raw(id as i32)));
        debug!(actuator = %name, attempt, pid = child.id(), "hook started");
        let input = child.stdin.take().map(|mut pipe| {
            let bytes = stdin.to_vec();
            // A hook that ignores stdin closes the pipe early: that is not an error.
            AbortOnDropHandle::new(tokio::spawn(async move {
                let _ = pipe.write_all(&bytes).await;
                let _ = pipe.shutdown().await;
            }))
        });
        let out = child.stdout.take().map(|p| AbortOnDropHandle::new(tokio::spawn(tail(p))));
        let err = child.stderr.take().map(|p| AbortOnDropHandle::new(tokio::spawn(tail(p))));

        let status = match tokio::time::timeout(self.timeout, child.wait()).await {
            Ok(Ok(status)) => status,
            Ok(Err(e)) => {
                return Attempt::Retry { error: format!("waiting for {program}: {e}"), retry_after: None };
            }
            Err(_) => {
                // The whole group: a hook's own children get the same signals.
                group.signal(Signal::TERM);
                let ended = match tokio::time::timeout(self.kill_grace, child.wait()).await {
                    Ok(_) => "it stopped on SIGTERM",
                    Err(_) => {
                        // Still unreaped, so the group id is still the hook's.
                        group.signal(Signal::KILL);
                        let _ = child.wait().await;
                        "it ignored SIGTERM and was killed"
                    }
                };
                group.disarm();
                let error = format!("{program} timed out after {:?}; {ended}", self.timeout);
                warn!(actuator = %name, attempt, error = %error, "hook timed out");
                return Attempt::Retry { error, retry_after: None };
            }
        };
        // Reaped: the pid may be reused from here on, so never signal the group again.
        group.disarm();
        drop(input);
        let stdout = drain(out).await;
        let stderr = drain(err).await;
        judge(program, status, &stdout, &stderr)
    }
}

/// Turn an exit status into the attempt's outcome.
fn judge(program: &str, status: ExitStatus, stdout: &str, stderr: &str) -> Attempt<String> {
    let with_stderr = |head: String| {
        if stderr.is_empty() { head } else { format!("{head}; stderr: {stderr}") }
    };
    match status.code() {
        Some(0) => {
            let last = stdout.lines().last().unwrap_or("").trim();
            Attempt::Done(if last.is_empty() { "exit 0".into() } else { format!("exit 0: {last}") })
        }
        Some(EX_TEMPFAIL) => Attempt::Retry {
            error: with_stderr(format!("{program} exited 75 (temporary failure)")),
            retry_after: None,
        },
        Some(code) => Attempt::Fail(with_stderr(format!("{program} exited {code}"))),
        None => Attempt::Fail(with_stderr(format!(
            "{program} was killed by signal {}",
            status.signal().map_or("?".into(), |s| s.to_string())
        ))),
    }
}

/// Signals the hook's process group while the hook is unreaped (its pid, and so the group
/// id, cannot be reused until then); SIGKILL on drop, which is how a cancelled apply ends.
struct GroupGuard(Option<Pid>);

impl GroupGuard {
    fn signal(&self, signal: Signal) {
        if let Some(pid) = self.0 {
            // ESRCH: the group is gone already.
            let _ = kill_process_group(pid, signal);
        }
    }

    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.signal(Signal::KILL);
    }
}

/// A hook being rewritten as we exec it (ETXTBSY: config management replacing it during
/// an outage), or a host short of processes, memory or file descriptors: worth another
/// attempt. A missing or non-executable hook is not.
fn spawn_may_succeed_later(e: &std::io::Error) -> bool {
    use rustix::io::Errno;
    Errno::from_io_error(e).is_some_and(|errno| {
        [Errno::TXTBSY, Errno::AGAIN, Errno::NOMEM, Errno::MFILE, Errno::NFILE].contains(&errno)
    })
}

/// Read a pipe to its end, keeping the last lines.
async fn tail(mut pipe: impl AsyncRead + Unpin) -> String {
    let mut kept: Vec<u8> = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = pipe.read(&mut buf).await {
        if n == 0 {
            break;
        }
        kept.extend_from_slice(&buf[..n]);
        if kept.len() > 2 * TAIL_BYTES {
            kept.drain(..kept.len() - TAIL_BYTES);
        }
    }
    last_lines(&String::from_utf8_lossy(&kept))
}

fn last_lines(text: &str) -> String {
    let lines: Vec<&str> = text.lines().map(str::trim_end).filter(|l| !l.is_empty()).collect();
    let from = lines.len().saturating_sub(TAIL_LINES);
    let joined = lines[from..].join(" | ");
    if joined.len() <= TAIL_BYTES {
        return joined;
    }
    let mut cut = joined.len() - TAIL_BYTES;
    while !joined.is_char_boundary(cut) {
        cut += 1;
    }
    format!("…{}", &joined[cut..])
}

async fn drain(reader: Option<AbortOnDropHandle<String>>) -> String {
    match reader {
        Some(r) => tokio::time::timeout(PIPE_DRAIN, r).await.ok().and_then(Result::ok).unwrap_or_default(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

    use super::*;
    use crate::actuator::tests::action;
    use crate::actuator::{Actuator, ActuatorConfig};

    /// A sh script as the program itself (argv, no shell in between); its first argument
    /// is the test's directory.
    fn hook(dir: &Path, body: &str, timeout: Duration, grace: Duration, attempts: u32) -> Actuator {
        let script = dir.join("hook.sh");
        std::fs::write(&script, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let cfg = ActuatorConfig::Exec(ExecConfig {
            name: "hook".into(),
            // Through sh, not exec'd itself: a script written a moment ago can still be
            // open for writing in another test's child between its fork and exec, and
            // exec'ing it then fails with ETXTBSY (seen once in CI: an error in 0.3 ms).
            command: vec!["/bin/sh".into(), script.to_str().unwrap().into(), dir.to_str().unwrap().into()],
            timeout,
            kill_grace: grace,
            max_attempts: attempts,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(20),
        });
        Actuator::from_config(&cfg).unwrap()
    }

    fn read(dir: &Path, file: &str) -> String {
        std::fs::read_to_string(dir.join(file)).unwrap_or_default()
    }

    fn pid_in(dir: &Path, file: &str) -> u32 {
        read(dir, file).trim().parse().unwrap()
    }

    /// Gone, or a zombie nobody has reaped yet: either way it runs no more.
    fn dead(pid: u32) -> bool {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        stat.rsplit_once(") ").is_none_or(|(_, rest)| rest.starts_with('Z') || rest.starts_with('X'))
    }

    async fn wait_dead(pid: u32) -> bool {
        for _ in 0..100 {
            if dead(pid) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    const SECOND: Duration = Duration::from_secs(1);
    const LONG: Duration = Duration::from_secs(20);

    #[tokio::test]
    async fn the_environment_and_stdin_arrive() {
        let dir = tempfile::tempdir().unwrap();
        let a = hook(
            dir.path(),
            "env | grep '^BURST_' | sort > \"$1/env\"\ncat > \"$1/stdin\"\necho scaled to 3",
            LONG,
            SECOND,
            1,
        );
        let out = a.apply(&action(3, 1)).await.unwrap();
        assert_eq!(out, Outcome::Applied { detail: "exit 0: scaled to 3".into() });
        let env = read(dir.path(), "env");
        for line in [
            "BURST_CLUSTER=home",
            "BURST_DESIRED_CAPACITY=3",
            "BURST_IDEMPOTENCY_KEY=home-3-41",
            "BURST_INDEX=41",
            "BURST_PREVIOUS_CAPACITY=1",
            "BURST_REASONS=ups-on-battery:site,hosts-lost:2/3",
            "BURST_TERM=3",
            "BURST_UNILATERAL=0",
            "BURST_VERDICT=down",
        ] {
            assert!(env.lines().any(|l| l == line), "{line} missing from\n{env}");
        }
        let stdin: Action = serde_json::from_str(&read(dir.path(), "stdin")).unwrap();
        assert_eq!(stdin, action(3, 1));
    }

    #[tokio::test]
    async fn exit_75_is_retried_until_it_succeeds() {
        let dir = tempfile::tempdir().unwrap();
        let body = "echo run >> \"$1/runs\"\nif [ ! -e \"$1/ready\" ]; then touch \"$1/ready\"; echo busy >&2; exit 75; fi\nexit 0";
        let a = hook(dir.path(), body, LONG, SECOND, 3);
        assert_eq!(a.apply(&action(3, 0)).await.unwrap(), Outcome::Applied { detail: "exit 0".into() });
        assert_eq!(read(dir.path(), "runs").lines().count(), 2);
    }

    #[tokio::test]
    async fn exit_75_every_time_exhausts_the_attempts() {
        let dir = tempfile::tempdir().unwrap();
        let a = hook(dir.path(), "echo run >> \"$1/runs\"\necho locked >&2\nexit 75", LONG, SECOND, 3);
        let e = a.apply(&action(3, 0)).await.unwrap_err();
        assert!(
            matches!(&e, ActuatorError::Exhausted { attempts: 3, last } if last.contains("locked")),
            "{e:?}"
        );
        assert_eq!(read(dir.path(), "runs").lines().count(), 3);
    }

    #[tokio::test]
    async fn another_exit_code_fails_with_the_code_and_stderr() {
        let dir = tempfile::tempdir().unwrap();
        let body = "echo run >> \"$1/runs\"\necho 'starting' >&2\necho 'boom: quota exceeded' >&2\nexit 3";
        let a = hook(dir.path(), body, LONG, SECOND, 3);
        let e = a.apply(&action(3, 0)).await.unwrap_err();
        let ActuatorError::Permanent(why) = &e else { panic!("{e:?}") };
        assert!(why.contains("exited 3"), "{why}");
        assert!(why.ends_with("stderr: starting | boom: quota exceeded"), "{why}");
        assert_eq!(read(dir.path(), "runs").lines().count(), 1);
    }

    #[tokio::test]
    async fn a_missing_program_is_permanent() {
        let cfg = ActuatorConfig::Exec(ExecConfig {
            name: "hook".into(),
            command: vec!["/nonexistent/burst".into()],
            timeout: SECOND,
            kill_grace: SECOND,
            max_attempts: 3,
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(1),
        });
        let e = Actuator::from_config(&cfg).unwrap().apply(&action(3, 0)).await.unwrap_err();
        assert!(matches!(&e, ActuatorError::Permanent(why) if why.contains("/nonexistent/burst")), "{e:?}");
    }

    #[tokio::test]
    async fn a_hook_being_rewritten_is_tried_again() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("hook.sh");
        std::fs::write(&script, "#!/bin/sh\nexit 0\n").unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let exec = |attempts| {
            let cfg = ActuatorConfig::Exec(ExecConfig {
                name: "hook".into(),
                command: vec![script.to_str().unwrap().into()],
                timeout: SECOND,
                kill_grace: SECOND,
                max_attempts: attempts,
                initial_backoff: Duration::from_millis(50),
                max_backoff: Duration::from_millis(100),
            });
            Actuator::from_config(&cfg).unwrap()
        };
        // Open for writing (an editor or config management mid-rewrite): exec fails with
        // ETXTBSY for as long as it stays open.
        let writer = std::fs::OpenOptions::new().append(true).open(&script).unwrap();
        let e = exec(2).apply(&action(3, 0)).await.unwrap_err();
        assert!(
            matches!(&e, ActuatorError::Exhausted { attempts: 2, last } if last.contains("yet")),
            "{e:?}"
        );
        let closing = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(150)).await;
            drop(writer);
        });
        assert_eq!(
            exec(20).apply(&action(3, 0)).await.unwrap(),
            Outcome::Applied { detail: "exit 0".into() }
        );
        closing.await.unwrap();
    }

    #[tokio::test]
    async fn a_hanging_hook_gets_sigterm_at_the_timeout() {
        let dir = tempfile::tempdir().unwrap();
        // sh waits for sleep: both are in the hook's group, and both get the signal.
        let body = "echo $$ > \"$1/pid\"\nsleep 60 &\necho $! > \"$1/child\"\nwait";
        let a = hook(dir.path(), body, Duration::from_millis(300), Duration::from_secs(10), 1);
        let start = tokio::time::Instant::now();
        let e = a.apply(&action(3, 0)).await.unwrap_err();
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "SIGTERM, not the 10 s grace: {:?}",
            start.elapsed()
        );
        assert!(
            matches!(&e, ActuatorError::Exhausted { attempts: 1, last } if last.contains("stopped on SIGTERM")),
            "{e:?}"
        );
        assert!(wait_dead(pid_in(dir.path(), "pid")).await);
        assert!(wait_dead(pid_in(dir.path(), "child")).await, "the hook's own child outlived it");
    }

    #[tokio::test]
    async fn a_hook_that_ignores_sigterm_gets_sigkill_after_the_grace() {
        let dir = tempfile::tempdir().unwrap();
        let body = "trap '' TERM\necho $$ > \"$1/pid\"\nwhile :; do sleep 0.05; done";
        let a = hook(dir.path(), body, Duration::from_millis(300), Duration::from_millis(300), 1);
        let start = tokio::time::Instant::now();
        let e = a.apply(&action(3, 0)).await.unwrap_err();
        assert!(start.elapsed() >= Duration::from_millis(600), "{:?}: {e:?}", start.elapsed());
        assert!(
            matches!(&e, ActuatorError::Exhausted { last, .. } if last.contains("ignored SIGTERM")),
            "{e:?}"
        );
        assert!(wait_dead(pid_in(dir.path(), "pid")).await);
    }

    #[tokio::test]
    async fn dropping_the_future_kills_the_hook_and_its_children() {
        let dir = tempfile::tempdir().unwrap();
        let body = "echo $$ > \"$1/pid\"\nsleep 60 &\necho $! > \"$1/child\"\nwait";
        let a = hook(dir.path(), body, LONG, SECOND, 1);
        let act = action(3, 0);
        let mut apply = Box::pin(a.apply(&act));
        // Run the apply until the hook has started its child, then drop it unfinished.
        tokio::select! {
            r = &mut apply => panic!("the hook finished: {r:?}"),
            () = async {
                while read(dir.path(), "child").trim().is_empty() {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            } => {}
        }
        let (pid, child) = (pid_in(dir.path(), "pid"), pid_in(dir.path(), "child"));
        assert!(!dead(pid) && !dead(child));
        drop(apply);
        assert!(wait_dead(pid).await, "the hook survived its cancelled apply");
        assert!(wait_dead(child).await, "the hook's child survived its cancelled apply");
    }

    #[test]
    fn only_the_last_lines_are_kept() {
        let text: String = (1..=30).map(|i| format!("line {i}\n")).collect();
        assert_eq!(last_lines(&text), (21..=30).map(|i| format!("line {i}")).collect::<Vec<_>>().join(" | "));
        let long = "é".repeat(TAIL_BYTES);
        assert!(last_lines(&long).len() <= TAIL_BYTES + "…".len());
    }
}
