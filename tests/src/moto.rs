//! moto's real server (PyPI `moto[server]`) on a free loopback port: an AWS Auto Scaling
//! and EC2 API to test the aws-asg actuator against (/work/shared/recipes/moto-asg.md).
//! Found at `$SITEWATCH_MOTO_SERVER`, `.venv-moto/bin/moto_server` at the repository root
//! (where `.ci/run` installs it), or on PATH. Requests here are signed with the actuator's
//! own SigV4 code but sent and read with nothing of it: plain HTTP/1.1 over a TcpStream.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, SystemTime};

use sitewatch_quorum::actuator::secret::Secret;
use sitewatch_quorum::actuator::sigv4::{self, Credentials};

pub const REGION: &str = "eu-west-1";
/// Any credentials pass until [`Moto::require_signatures`].
pub const ANY_KEY_ID: &str = "AKIDTEST";
pub const ANY_SECRET: &str = "secret";

/// The moto_server to run, or why there is none.
pub fn moto_server() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("SITEWATCH_MOTO_SERVER") {
        let path = PathBuf::from(path);
        return if path.exists() {
            Ok(path)
        } else {
            Err(format!("$SITEWATCH_MOTO_SERVER {} is missing", path.display()))
        };
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv-moto/bin/moto_server");
    if venv.exists() {
        return Ok(venv);
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join("moto_server"))
        .find(|p| p.exists());
    on_path.ok_or_else(|| {
        "moto_server is not installed: python3 -m venv .venv-moto && .venv-moto/bin/pip install 'moto[server]'".into()
    })
}

pub struct Moto {
    child: Child,
    host: String,
    port: u16,
    /// The network namespace moto runs in (a lab's cloud host), if any.
    netns: Option<String>,
}

impl Moto {
    /// Start moto_server and wait until it answers.
    pub fn launch() -> Result<Moto, String> {
        Moto::launch_in(None, "127.0.0.1")
    }

    /// The same, listening on `host` inside network namespace `netns`.
    pub fn launch_in(netns: Option<String>, host: &str) -> Result<Moto, String> {
        let program = moto_server()?;
        let port = crate::free_port();
        let child = crate::netns::command_in(netns.as_deref(), &program)
            .args(["-H", host, "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", program.display()))?;
        let mut moto = Moto { child, host: host.to_owned(), port, netns };
        let started = std::time::Instant::now();
        loop {
            if moto.http("POST", "/moto-api/reset", &[], b"").is_ok_and(|(status, _)| status == 200) {
                return Ok(moto);
            }
            if let Ok(Some(status)) = moto.child.try_wait() {
                return Err(format!("{} exited at start: {status}", program.display()));
            }
            if started.elapsed() > Duration::from_secs(30) {
                return Err("moto_server did not answer within 30 s".into());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}:{}/", self.host, self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// One HTTP/1.1 request; (status, body).
    pub fn http(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, String)],
        body: &[u8],
    ) -> std::io::Result<(u16, String)> {
        let addr = std::net::SocketAddr::new(
            self.host.parse().map_err(|e| std::io::Error::other(format!("moto host: {e}")))?,
            self.port,
        );
        let mut s = match &self.netns {
            Some(ns) => crate::netns::connect_in(ns, addr, Duration::from_secs(5))?,
            None => TcpStream::connect(addr)?,
        };
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}:{}\r\nConnection: close\r\nContent-Length: {}\r\n",
            self.host,
            self.port,
            body.len()
        );
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        s.write_all(head.as_bytes())?;
        s.write_all(body)?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw)?;
        let text = String::from_utf8_lossy(&raw).into_owned();
        let status = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
        Ok((status, body))
    }

    /// A signed query API call, as `service` in the test region; (status, body).
    pub fn query(&self, service: &str, form: &str, key_id: &str, secret: &str) -> (u16, String) {
        let content_type = "application/x-www-form-urlencoded; charset=utf-8";
        let host = format!("{}:{}", self.host, self.port);
        let creds = Credentials {
            access_key_id: key_id.into(),
            secret_access_key: Secret::new(secret),
            session_token: None,
        };
        let request = sigv4::Request {
            method: "POST",
            host: &host,
            path: "/",
            query: "",
            headers: &[("content-type", content_type)],
            payload: form.as_bytes(),
        };
        let region = if service == "iam" { "us-east-1" } else { REGION };
        let mut headers: Vec<(&str, String)> = vec![("Content-Type", content_type.into())];
        headers.extend(sigv4::sign(&request, &creds, region, service, &sigv4::amz_date(SystemTime::now())));
        self.http("POST", "/", &headers, form.as_bytes()).expect("moto answers")
    }

    fn ok(&self, service: &str, form: &str) -> String {
        let (status, body) = self.query(service, form, ANY_KEY_ID, ANY_SECRET);
        assert_eq!(status, 200, "{service} {form}: {body}");
        body
    }

    /// A launch template and a group of it with MinSize `min`, MaxSize `max`, desired 0.
    pub fn create_group(&self, group: &str, min: u32, max: u32) {
        let template = format!("{group}-lt");
        self.ok(
            "ec2",
            &format!(
                "Action=CreateLaunchTemplate&Version=2016-11-15&LaunchTemplateName={template}\
                 &LaunchTemplateData.ImageId=ami-12c6146b&LaunchTemplateData.InstanceType=t3.micro"
            ),
        );
        self.ok(
            "autoscaling",
            &format!(
                "Action=CreateAutoScalingGroup&Version=2011-01-01&AutoScalingGroupName={group}\
                 &LaunchTemplate.LaunchTemplateName={template}&LaunchTemplate.Version=%24Latest\
                 &MinSize={min}&MaxSize={max}&DesiredCapacity=0&AvailabilityZones.member.1={REGION}a"
            ),
        );
    }

    fn describe(&self, group: &str) -> String {
        self.ok(
            "autoscaling",
            &format!(
                "Action=DescribeAutoScalingGroups&Version=2011-01-01&AutoScalingGroupNames.member.1={group}"
            ),
        )
    }

    /// The group's DesiredCapacity as moto holds it.
    pub fn desired_capacity(&self, group: &str) -> u32 {
        let body = self.describe(group);
        desired_in(&body).unwrap_or_else(|| panic!("no DesiredCapacity in {body}"))
    }

    /// The same, or `None` when moto does not answer (for samplers that run on).
    pub fn try_desired_capacity(&self, group: &str) -> Option<u32> {
        let form = format!(
            "Action=DescribeAutoScalingGroups&Version=2011-01-01&AutoScalingGroupNames.member.1={group}"
        );
        let (status, body) = self.query("autoscaling", &form, ANY_KEY_ID, ANY_SECRET);
        (status == 200).then(|| desired_in(&body)).flatten()
    }

    /// The instances the group has launched.
    pub fn instance_count(&self, group: &str) -> usize {
        self.describe(group).matches("<InstanceId>").count()
    }

    /// Set the group's desired capacity directly, as another operator would.
    pub fn set_desired(&self, group: &str, desired: u32) {
        self.ok(
            "autoscaling",
            &format!(
                "Action=SetDesiredCapacity&Version=2011-01-01&AutoScalingGroupName={group}&DesiredCapacity={desired}"
            ),
        );
    }

    /// Make moto check signatures from now on; returns an access key that may do anything.
    pub fn require_signatures(&self) -> (String, String) {
        self.ok("iam", "Action=CreateUser&Version=2010-05-08&UserName=sitewatch");
        let policy =
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}"#;
        self.ok(
            "iam",
            &format!(
                "Action=PutUserPolicy&Version=2010-05-08&UserName=sitewatch&PolicyName=all&PolicyDocument={}",
                sigv4::uri_encode(policy)
            ),
        );
        let body = self.ok("iam", "Action=CreateAccessKey&Version=2010-05-08&UserName=sitewatch");
        let field = |tag: &str| {
            let open = format!("<{tag}>");
            body.split(&open).nth(1).and_then(|r| r.split('<').next()).map(str::to_owned).expect(tag)
        };
        let key = (field("AccessKeyId"), field("SecretAccessKey"));
        let (status, body) = self
            .http("POST", "/moto-api/reset-auth", &[("Content-Type", "text/plain".into())], b"0")
            .expect("reset-auth");
        assert_eq!(status, 200, "reset-auth: {body}");
        key
    }
}

fn desired_in(describe: &str) -> Option<u32> {
    describe.split("<DesiredCapacity>").nth(1).and_then(|r| r.split('<').next())?.trim().parse().ok()
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
