//! A real upsd (Debian's nut-server) with dummy-ups drivers in a temporary directory, on a
//! free loopback port (/work/shared/recipes/nut-upsd.md). Shared by the agent's NUT
//! tests, the end-to-end tests and the UPS benchmark; everything stops in Drop.

use std::path::{Path, PathBuf};
use std::process::Command;

pub const UPSD: &str = "/lib/nut/upsd";
pub const UPSDRVCTL: &str = "/sbin/upsdrvctl";
pub const DUMMY_UPS: &str = "/lib/nut/dummy-ups";
/// The real upsmon (Debian's /sbin/upsmon is a wrapper that needs MODE set system-wide).
pub const UPSMON: &str = "/lib/nut/upsmon";
/// Nobody logs in to read (an observer must not LOGIN), but upsmon does, with these.
pub const MONITOR_USER: &str = "observer";
pub const MONITOR_PASSWORD: &str = "secret";

/// How the upsd is set up.
#[derive(Debug, Clone, Copy)]
pub struct UpsdOptions {
    /// upsd's staleness limit (MAXAGE).
    pub maxage_s: u64,
    /// How often each dummy-ups driver re-reads its .dev file.
    pub driver_poll_s: u64,
    /// Offer STARTTLS with a certificate for 127.0.0.1 signed by [`Upsd::ca`].
    pub tls: bool,
}

impl Default for UpsdOptions {
    fn default() -> Self {
        UpsdOptions { maxage_s: 15, driver_poll_s: 1, tls: false }
    }
}

pub struct Upsd {
    dir: tempfile::TempDir,
    port: u16,
    /// The network namespace upsd listens in (a lab host's loopback), if any; the
    /// drivers talk to it over Unix sockets and run anywhere.
    netns: Option<String>,
}

/// Why this machine cannot run a real upsd, if it cannot.
pub fn unavailable(tls: bool) -> Option<String> {
    if !crate::is_root() {
        return Some("a real upsd needs root (drivers and upsd drop to user nut)".into());
    }
    for program in [UPSD, UPSDRVCTL, DUMMY_UPS] {
        if !Path::new(program).exists() {
            return Some(format!("{program} is missing: apt-get install nut-server nut-client"));
        }
    }
    if tls {
        for program in ["/usr/bin/openssl", "/usr/bin/certutil", "/usr/bin/pk12util"] {
            if !Path::new(program).exists() {
                return Some(format!("{program} is missing: apt-get install openssl libnss3-tools"));
            }
        }
    }
    None
}

/// Run a setup command; its failure fails the caller.
pub fn run(command: &mut Command) {
    let output = command.output().unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A dummy-ups .dev file.
pub fn dev_file(status: &str, charge: u32) -> String {
    format!(
        "device.type: ups\nups.status: {status}\nbattery.charge: {charge}\nbattery.runtime: 1800\n\
         battery.runtime.low: 300\ninput.voltage: 230.0\nups.load: 25\n"
    )
}

impl Upsd {
    /// Write the config and start one dummy-ups driver per name (every UPS on line) and
    /// upsd. The drivers answer WAIT for about a second before they have data.
    pub fn launch(names: &[&str], options: UpsdOptions) -> Upsd {
        Upsd::launch_in(names, options, None)
    }

    /// The same, with upsd on the loopback of network namespace `netns`.
    pub fn launch_in(names: &[&str], options: UpsdOptions, netns: Option<String>) -> Upsd {
        if let Some(why) = unavailable(options.tls) {
            panic!("cannot start upsd: {why}");
        }
        let dir = tempfile::Builder::new().prefix("sitewatch-nut-").tempdir().expect("tempdir");
        // The drivers and upsd run as nut and must reach their files below.
        run(Command::new("chmod").arg("755").arg(dir.path()));
        let etc = dir.path().join("etc");
        let state = dir.path().join("state");
        std::fs::create_dir(&etc).expect("etc");
        std::fs::create_dir(&state).expect("state");
        let port = crate::free_port();
        let mut ups_conf = String::from("maxretry = 1\n");
        for name in names {
            let dev = etc.join(format!("{name}.dev"));
            ups_conf.push_str(&format!(
                "[{name}]\n    driver = dummy-ups\n    port = {}\n    pollinterval = {}\n",
                dev.display(),
                options.driver_poll_s
            ));
            std::fs::write(&dev, dev_file("OL", 100)).expect("dev file");
        }
        std::fs::write(etc.join("nut.conf"), "MODE=standalone\n").expect("nut.conf");
        std::fs::write(etc.join("ups.conf"), ups_conf).expect("ups.conf");
        let mut upsd_conf =
            format!("LISTEN 127.0.0.1 {port}\nMAXAGE {}\nSTATEPATH {}\n", options.maxage_s, state.display());
        if options.tls {
            upsd_conf.push_str(&nss_database(dir.path()));
        }
        std::fs::write(etc.join("upsd.conf"), upsd_conf).expect("upsd.conf");
        std::fs::write(
            etc.join("upsd.users"),
            format!("[{MONITOR_USER}]\n    password = {MONITOR_PASSWORD}\n    upsmon secondary\n"),
        )
        .expect("upsd.users");
        run(Command::new("chown").args(["-R", "root:nut"]).arg(&etc));
        run(Command::new("chmod").arg("750").arg(&etc));
        for entry in std::fs::read_dir(&etc).expect("etc") {
            let path = entry.expect("entry").path();
            run(Command::new("chmod").arg(if path.is_dir() { "750" } else { "640" }).arg(&path));
        }
        if options.tls {
            for entry in std::fs::read_dir(etc.join("nss")).expect("nss") {
                run(Command::new("chmod").arg("640").arg(entry.expect("entry").path()));
            }
        }
        run(Command::new("chown").arg("nut:nut").arg(&state));
        let upsd = Upsd { dir, port, netns };
        run(upsd.command(UPSDRVCTL).args(["-u", "nut", "start"]));
        upsd.start_upsd();
        upsd
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The CA that signed upsd's certificate (with `tls`).
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("pki").join("ca.pem")
    }

    pub fn etc(&self) -> PathBuf {
        self.dir.path().join("etc")
    }

    pub fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn server(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// A NUT program with this upsd's config and state paths.
    pub fn command(&self, program: &str) -> Command {
        self.configure(Command::new(program))
    }

    fn configure(&self, mut command: Command) -> Command {
        command
            .env("NUT_CONFPATH", self.etc())
            .env("NUT_STATEPATH", self.state())
            .env("NUT_ALTPIDPATH", self.state());
        command
    }

    pub fn start_upsd(&self) {
        // /lib/nut/upsd, not /sbin/upsd: Debian's wrapper does nothing unless MODE is set system-wide.
        run(self.configure(crate::netns::command_in(self.netns.as_deref(), UPSD)).args(["-u", "nut"]));
    }

    pub fn pid(&self, file: &str) -> Option<u32> {
        std::fs::read_to_string(self.state().join(file)).ok()?.trim().parse().ok()
    }

    pub fn upsd_pid(&self) -> u32 {
        self.pid("upsd.pid").expect("upsd wrote its pid file")
    }

    pub fn driver_pid(&self, name: &str) -> u32 {
        self.pid(&format!("dummy-ups-{name}.pid")).expect("the driver wrote its pid file")
    }

    /// Stop and start `name`'s driver: its poll timer starts again at a new phase. upsd
    /// answers DRIVER-NOT-CONNECTED, then WAIT for about a second, then data.
    pub fn restart_driver(&self, name: &str) {
        run(self.command(UPSDRVCTL).args(["-u", "nut", "stop", name]));
        run(self.command(UPSDRVCTL).args(["-u", "nut", "start", name]));
    }

    /// Replace `name`'s .dev file atomically (write, then rename over). dummy-ups misses
    /// a rewrite within the same wall-clock second as its last read: space writes by
    /// more than a second.
    pub fn write_status(&self, name: &str, status: &str, charge: u32) {
        let dev = self.etc().join(format!("{name}.dev"));
        let fresh = dev.with_extension("dev.new");
        std::fs::write(&fresh, dev_file(status, charge)).expect("write dev file");
        run(Command::new("chown").arg("root:nut").arg(&fresh));
        run(Command::new("chmod").arg("640").arg(&fresh));
        std::fs::rename(&fresh, &dev).expect("rename dev file");
    }
}

/// A CA and a certificate for 127.0.0.1 under `dir/pki`, the certificate and its key
/// imported into an NSS database at `dir/etc/nss` (Debian builds upsd with NSS);
/// returns upsd.conf's lines for it.
fn nss_database(dir: &Path) -> String {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let pki = dir.join("pki");
    let nss = dir.join("etc").join("nss");
    std::fs::create_dir(&pki).expect("pki");
    std::fs::create_dir(&nss).expect("nss");
    let ca_key = KeyPair::generate().expect("key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    let ca_pem = ca_params.self_signed(&ca_key).expect("ca").pem();
    std::fs::write(pki.join("ca.pem"), &ca_pem).expect("ca.pem");
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key).expect("issuer");
    let key = KeyPair::generate().expect("key");
    let cert = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .expect("params")
        .signed_by(&key, &issuer)
        .expect("cert");
    std::fs::write(pki.join("upsd.pem"), cert.pem()).expect("upsd.pem");
    std::fs::write(pki.join("upsd.key"), key.serialize_pem()).expect("upsd.key");
    std::fs::write(pki.join("dbpass"), "dbpass\n").expect("dbpass");
    let p12 = pki.join("upsd.p12");
    run(Command::new("openssl")
        .args(["pkcs12", "-export", "-name", "upsd", "-passout", "pass:p12pass", "-in"])
        .arg(pki.join("upsd.pem"))
        .arg("-inkey")
        .arg(pki.join("upsd.key"))
        .arg("-out")
        .arg(&p12));
    let db = format!("sql:{}", nss.display());
    run(Command::new("certutil").args(["-N", "-d", &db, "-f"]).arg(pki.join("dbpass")));
    run(Command::new("pk12util")
        .args(["-d", &db, "-W", "p12pass", "-k"])
        .arg(pki.join("dbpass"))
        .arg("-i")
        .arg(&p12));
    format!("CERTPATH {}\nCERTIDENT \"upsd\" \"dbpass\"\n", nss.display())
}

/// Send `signal` to `pid`, but only if it is still one of NUT's processes: a pid file
/// can outlive its process, and the number may belong to someone else by now.
pub fn signal(pid: u32, signal: &str) {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    if matches!(comm.trim(), "upsd" | "dummy-ups" | "upsmon") {
        let _ = Command::new("kill").args(["-s", signal, &pid.to_string()]).status();
    }
}

impl Drop for Upsd {
    fn drop(&mut self) {
        let Ok(entries) = std::fs::read_dir(self.state()) else { return };
        for entry in entries.flatten() {
            let file = entry.file_name().to_string_lossy().into_owned();
            if let Some(pid) = file.ends_with(".pid").then(|| self.pid(&file)).flatten() {
                // A stopped process would sit on SIGTERM; SIGKILL works either way.
                signal(pid, "CONT");
                signal(pid, "KILL");
            }
        }
    }
}

/// NUT's own monitor (Debian's nut-client) watching one UPS of an [`Upsd`] as a
/// secondary, its NOTIFYCMD stamping every ONBATT and ONLINE with the wall clock.
pub struct Upsmon {
    dir: PathBuf,
    child: Option<std::process::Child>,
}

impl Upsmon {
    /// Start `upsmon -D` with its files in `dir` (created if missing), polling every
    /// `pollfreq_s` seconds on line and every `pollfreq_alert_s` on battery (NUT's
    /// defaults are 5 and 5).
    pub fn start(upsd: &Upsd, ups: &str, dir: &Path, pollfreq_s: u32, pollfreq_alert_s: u32) -> Upsmon {
        use std::os::unix::fs::PermissionsExt;
        use std::os::unix::process::CommandExt;
        std::fs::create_dir_all(dir).expect("upsmon dir");
        let log = dir.join("notify.log");
        let script = dir.join("notify.sh");
        std::fs::write(
            &script,
            format!("#!/bin/sh\necho \"$(date +%s.%N) $NOTIFYTYPE\" >> {}\n", log.display()),
        )
        .expect("notify script");
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        std::fs::write(&log, "").expect("log");
        // upsmon's unprivileged child runs NOTIFYCMD as nut.
        run(Command::new("chown").arg("nut:nut").arg(&log));
        let conf = dir.join("upsmon.conf");
        std::fs::write(
            &conf,
            format!(
                "MONITOR {ups}@127.0.0.1:{} 1 {MONITOR_USER} {MONITOR_PASSWORD} secondary\nMINSUPPLIES 0\n\
                 POLLFREQ {pollfreq_s}\nPOLLFREQALERT {pollfreq_alert_s}\n\
                 SHUTDOWNCMD \"/bin/true\"\nNOTIFYCMD {}\nNOTIFYFLAG ONBATT EXEC\nNOTIFYFLAG ONLINE EXEC\n",
                upsd.port(),
                script.display()
            ),
        )
        .expect("upsmon.conf");
        run(Command::new("chown").arg("root:nut").arg(&conf));
        run(Command::new("chmod").arg("640").arg(&conf));
        run(Command::new("chmod").arg("755").arg(dir));
        // upsmon keeps its pid file in the compiled-in /run/nut (NUT_ALTPIDPATH does not
        // move it) and refuses to start while the pid there lives: each instance gets a
        // private /run/nut in its own mount namespace, so several can run side by side
        // and none touches the system's.
        let run_dir = dir.join("run");
        std::fs::create_dir_all(&run_dir).expect("upsmon run dir");
        run(Command::new("chown").arg("root:nut").arg(&run_dir));
        run(Command::new("chmod").arg("770").arg(&run_dir));
        let stderr = std::fs::File::create(dir.join("upsmon.log")).expect("upsmon log");
        let child = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "--", "sh", "-c"])
            .arg("mount --bind \"$0\" /run/nut && exec \"$1\" -D")
            .arg(&run_dir)
            .arg(UPSMON)
            .env("NUT_CONFPATH", dir)
            .env("NUT_STATEPATH", dir)
            .env("NUT_ALTPIDPATH", dir)
            // Its own process group: stop() ends upsmon's two processes and any NOTIFYCMD.
            .process_group(0)
            .stdout(std::process::Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start upsmon");
        Upsmon { dir: dir.to_owned(), child: Some(child) }
    }

    /// Every notification so far: (seconds since the UNIX epoch, NOTIFYTYPE).
    pub fn events(&self) -> Vec<(f64, String)> {
        let text = std::fs::read_to_string(self.dir.join("notify.log")).unwrap_or_default();
        text.lines()
            .filter_map(|line| {
                let (t, kind) = line.split_once(' ')?;
                Some((t.parse().ok()?, kind.trim().to_owned()))
            })
            .collect()
    }

    /// The end of upsmon's own log, to say why it reported nothing.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = std::fs::read_to_string(self.dir.join("upsmon.log")).unwrap_or_default();
        let mut tail: Vec<&str> = log.lines().rev().take(lines).collect();
        tail.reverse();
        tail.join("\n")
    }

    /// Stop upsmon's process group (its privileged parent, its unprivileged child).
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        let group = format!("-{}", child.id());
        let _ =
            Command::new("kill").args(["-KILL", "--", &group]).stderr(std::process::Stdio::null()).status();
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Upsmon {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One connection to upsd kept open for reading a variable tightly (a GET VAR round trip
/// is about 16 us on loopback); reconnects after an error.
pub struct VarReader {
    server: String,
    conn: Option<(std::io::BufReader<std::net::TcpStream>, std::net::TcpStream)>,
}

impl VarReader {
    pub fn new(upsd: &Upsd) -> VarReader {
        VarReader { server: upsd.server(), conn: None }
    }

    /// `var` of `ups`, unquoted; None on an error answer or a broken connection.
    pub fn get(&mut self, ups: &str, var: &str) -> Option<String> {
        use std::io::{BufRead, Write};
        if self.conn.is_none() {
            let stream = std::net::TcpStream::connect(&self.server).ok()?;
            stream.set_read_timeout(Some(std::time::Duration::from_secs(2))).ok()?;
            let _ = stream.set_nodelay(true);
            self.conn = Some((std::io::BufReader::new(stream.try_clone().ok()?), stream));
        }
        let (reader, writer) = self.conn.as_mut()?;
        let mut line = String::new();
        let ok = writer.write_all(format!("GET VAR {ups} {var}\n").as_bytes()).is_ok()
            && reader.read_line(&mut line).is_ok_and(|n| n > 0);
        if !ok {
            self.conn = None;
            return None;
        }
        // VAR <ups> <var> "<value>"
        let value = line.trim_end().strip_prefix(&format!("VAR {ups} {var} "))?;
        Some(value.trim_matches('"').to_owned())
    }
}
