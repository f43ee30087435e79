//! The AWS Auto Scaling group actuator, over the query API (form-encoded POSTs, version
//! 2011-01-01, SigV4 for service `autoscaling`). It reads the group, clamps the desired
//! capacity to [MinSize, MaxSize] (AWS refuses what lies outside; test servers may not),
//! sets it with HonorCooldown=false, then reads the group back until it shows the target.
//! A unilateral action only ever raises the group's desired capacity.

use std::time::{Duration, SystemTime};

use tokio::time::Instant;
use tracing::{debug, info};

use super::config::AsgConfig;
use super::retry::{self, Attempt, RetryPolicy};
use super::secret::{Secret, SecretSource};
use super::sigv4::{self, Credentials};
use super::{Action, ActuatorError, Outcome, http};

const API_VERSION: &str = "2011-01-01";
const SERVICE: &str = "autoscaling";
const CONTENT_TYPE: &str = "application/x-www-form-urlencoded; charset=utf-8";

#[derive(Debug)]
pub struct Asg {
    url: reqwest::Url,
    /// As reqwest sends it in the Host header (and so as it is signed).
    host: String,
    region: String,
    group: String,
    creds: Credentials,
    client: reqwest::Client,
    retry: RetryPolicy,
    converge_timeout: Duration,
}

/// What DescribeAutoScalingGroups says about the group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupSize {
    pub min: u32,
    pub max: u32,
    pub desired: u32,
    pub instances: u32,
}

impl Asg {
    pub fn from_config(c: &AsgConfig) -> Result<Asg, ActuatorError> {
        let url = reqwest::Url::parse(&c.endpoint_url())
            .map_err(|e| ActuatorError::Config(format!("endpoint: {e}")))?;
        let host = match (url.host_str(), url.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_owned(),
            (None, _) => return Err(ActuatorError::Config(format!("endpoint `{url}` has no host"))),
        };
        let creds = load_credentials(c).map_err(ActuatorError::Config)?;
        let client = http::client(c.timeout).map_err(ActuatorError::Config)?;
        Ok(Asg {
            url,
            host,
            region: c.region.clone(),
            group: c.group.clone(),
            creds,
            client,
            retry: c.retry(),
            converge_timeout: c.converge_timeout,
        })
    }

    pub async fn apply(&self, name: &str, action: &Action) -> Result<Outcome, ActuatorError> {
        let now = self.describe(name).await?;
        let target = action.desired_capacity.clamp(now.min, now.max);
        let clamped = if target == action.desired_capacity {
            String::new()
        } else {
            format!(" ({} clamped to [{}, {}])", action.desired_capacity, now.min, now.max)
        };
        if action.unilateral && now.desired > target {
            return Ok(Outcome::Skipped {
                detail: format!(
                    "group {} is at {}, above {target}{clamped}: a unilateral action never scales down",
                    self.group, now.desired
                ),
            });
        }
        if now.desired == target {
            return Ok(Outcome::AlreadyThere {
                detail: format!("group {} already at {target}{clamped}", self.group),
            });
        }
        self.call(
            name,
            "SetDesiredCapacity",
            &[("DesiredCapacity", target.to_string()), ("HonorCooldown", "false".into())],
        )
        .await?;
        info!(actuator = %name, group = %self.group, from = now.desired, to = target, "desired capacity set");
        self.converge(name, target).await?;
        Ok(Outcome::Applied { detail: format!("group {} {} -> {target}{clamped}", self.group, now.desired) })
    }

    /// Read the group back until its desired capacity is `target`, within converge-timeout.
    async fn converge(&self, name: &str, target: u32) -> Result<(), ActuatorError> {
        let deadline = Instant::now() + self.converge_timeout;
        let mut wait = Duration::from_millis(200);
        let mut reads = 0;
        loop {
            let now = self.describe(name).await?;
            reads += 1;
            if now.desired == target {
                return Ok(());
            }
            debug!(actuator = %name, desired = now.desired, target, "group not there yet");
            if Instant::now() + wait > deadline {
                return Err(ActuatorError::Exhausted {
                    attempts: reads,
                    last: format!(
                        "group {} shows desired capacity {} after {:?}, not {target}",
                        self.group, now.desired, self.converge_timeout
                    ),
                });
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(5));
        }
    }

    pub async fn describe(&self, name: &str) -> Result<GroupSize, ActuatorError> {
        let body = self
            .call(
                name,
                "DescribeAutoScalingGroups",
                &[("AutoScalingGroupNames.member.1", self.group.clone())],
            )
            .await?;
        parse_group(&body, &self.group).map_err(ActuatorError::Permanent)?.ok_or_else(|| {
            ActuatorError::Permanent(format!(
                "no Auto Scaling group named `{}` in {} at {}",
                self.group, self.region, self.host
            ))
        })
    }

    /// One API call with retries; the 200 response's body.
    async fn call(
        &self,
        name: &str,
        action: &str,
        params: &[(&str, String)],
    ) -> Result<String, ActuatorError> {
        let mut form = format!("Action={action}&Version={API_VERSION}");
        if action != "DescribeAutoScalingGroups" {
            form.push_str(&format!("&AutoScalingGroupName={}", sigv4::uri_encode(&self.group)));
        }
        for (k, v) in params {
            form.push_str(&format!("&{}={}", sigv4::uri_encode(k), sigv4::uri_encode(v)));
        }
        let what = format!("{name} {action}");
        let body = retry::run(&self.retry, &what, |_| {
            // Signed per attempt: AWS refuses a signature more than five minutes old.
            let request = sigv4::Request {
                method: "POST",
                host: &self.host,
                path: self.url.path(),
                query: "",
                headers: &[("content-type", CONTENT_TYPE)],
                payload: form.as_bytes(),
            };
            let signed = sigv4::sign(
                &request,
                &self.creds,
                &self.region,
                SERVICE,
                &sigv4::amz_date(SystemTime::now()),
            );
            let mut builder = self
                .client
                .post(self.url.clone())
                .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE)
                .body(form.clone());
            for (k, v) in signed {
                builder = builder.header(k, v);
            }
            async move { judge(builder.send().await).await }
        })
        .await?;
        Ok(body)
    }
}

/// Classify an AWS query API response: throttling and server errors are worth another
/// attempt, any other error is final and named by its AWS code.
async fn judge(sent: Result<reqwest::Response, reqwest::Error>) -> Attempt<String> {
    let response = match sent {
        Ok(r) => r,
        Err(e) => return Attempt::Retry { error: http::describe(e), retry_after: None },
    };
    let status = response.status();
    let body = match response.text().await {
        Ok(b) => b,
        Err(e) => return Attempt::Retry { error: http::describe(e), retry_after: None },
    };
    if status.is_success() {
        return Attempt::Done(body);
    }
    match parse_error(&body) {
        Some((code, message)) => {
            let error = format!("AWS {code} (HTTP {}): {message}", status.as_u16());
            let throttled = matches!(
                code.as_str(),
                "Throttling" | "ThrottlingException" | "RequestLimitExceeded" | "RequestThrottled"
            );
            if throttled || status.is_server_error() || code == "ServiceUnavailable" {
                Attempt::Retry { error, retry_after: None }
            } else {
                Attempt::Fail(error)
            }
        }
        // Not an AWS error document: a proxy, a load balancer, or a test server's HTML page.
        None => {
            let error =
                format!("HTTP {} without an AWS error response: {}", status.as_u16(), http::excerpt(&body));
            if status.is_server_error() || status.as_u16() == 429 {
                Attempt::Retry { error, retry_after: None }
            } else {
                Attempt::Fail(error)
            }
        }
    }
}

/// The group's sizes from a DescribeAutoScalingGroups response; `Ok(None)` when the group
/// is not in it (AWS answers an unknown name with an empty list).
pub fn parse_group(xml: &str, group: &str) -> Result<Option<GroupSize>, String> {
    let doc = roxmltree::Document::parse(xml).map_err(|e| {
        format!("DescribeAutoScalingGroups answered with no XML ({e}): {}", http::excerpt(xml))
    })?;
    let Some(groups) = doc.descendants().find(|n| n.has_tag_name("AutoScalingGroups")) else {
        return Err(format!(
            "DescribeAutoScalingGroups answer has no AutoScalingGroups: {}",
            http::excerpt(xml)
        ));
    };
    let child_text = |n: roxmltree::Node<'_, '_>, tag: &str| {
        n.children().find(|c| c.has_tag_name(tag)).and_then(|c| c.text()).map(str::trim).map(str::to_owned)
    };
    let Some(member) = groups
        .children()
        .filter(|n| n.has_tag_name("member"))
        .find(|n| child_text(*n, "AutoScalingGroupName").as_deref() == Some(group))
    else {
        return Ok(None);
    };
    let number = |tag: &str| -> Result<u32, String> {
        let text = child_text(member, tag).ok_or_else(|| format!("group {group} has no {tag}"))?;
        text.parse().map_err(|_| format!("group {group}: {tag} `{text}` is not a number"))
    };
    let instances = member
        .children()
        .find(|c| c.has_tag_name("Instances"))
        .map_or(0, |i| i.children().filter(|c| c.has_tag_name("member")).count() as u32);
    Ok(Some(GroupSize {
        min: number("MinSize")?,
        max: number("MaxSize")?,
        desired: number("DesiredCapacity")?,
        instances,
    }))
}

/// `(Code, Message)` from an AWS query API error document.
pub fn parse_error(xml: &str) -> Option<(String, String)> {
    let doc = roxmltree::Document::parse(xml).ok()?;
    let error = doc.descendants().find(|n| n.has_tag_name("Error"))?;
    let text = |tag: &str| {
        error.children().find(|c| c.has_tag_name(tag)).and_then(|c| c.text()).unwrap_or("").trim().to_owned()
    };
    let code = text("Code");
    (!code.is_empty()).then(|| (code, text("Message")))
}

fn load_credentials(c: &AsgConfig) -> Result<Credentials, String> {
    let access_key_id = match (&c.access_key_id, &c.access_key_id_file, &c.access_key_id_env) {
        (Some(id), _, _) => id.clone(),
        (None, file, env) => {
            let source = match (file, env) {
                (None, None) => SecretSource::env("AWS_ACCESS_KEY_ID"),
                _ => SecretSource { file: file.clone(), env: env.clone() },
            };
            source.load().map_err(|e| format!("access key id: {e}"))?.expose().to_owned()
        }
    };
    let secret_access_key = c.secret_access_key().load().map_err(|e| format!("secret access key: {e}"))?;
    let session_token = match c.session_token() {
        Some(source) => Some(source.load().map_err(|e| format!("session token: {e}"))?),
        // With the secret from the standard variable, a standard session token goes with it.
        None if c.secret_access_key_file.is_none() && c.secret_access_key_env.is_none() => {
            std::env::var("AWS_SESSION_TOKEN").ok().filter(|t| !t.is_empty()).map(Secret::new)
        }
        None => None,
    };
    Ok(Credentials { access_key_id, secret_access_key, session_token })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DESCRIBED: &str = r#"<DescribeAutoScalingGroupsResponse xmlns="http://autoscaling.amazonaws.com/doc/2011-01-01/">
  <DescribeAutoScalingGroupsResult>
    <AutoScalingGroups>
      <member>
        <AutoScalingGroupName>other</AutoScalingGroupName>
        <MinSize>1</MinSize><MaxSize>9</MaxSize><DesiredCapacity>5</DesiredCapacity>
      </member>
      <member>
        <AutoScalingGroupName>burst-asg</AutoScalingGroupName>
        <MinSize>0</MinSize>
        <MaxSize>4</MaxSize>
        <DesiredCapacity>3</DesiredCapacity>
        <Instances>
          <member><InstanceId>i-1</InstanceId></member>
          <member><InstanceId>i-2</InstanceId></member>
        </Instances>
      </member>
    </AutoScalingGroups>
  </DescribeAutoScalingGroupsResult>
</DescribeAutoScalingGroupsResponse>"#;

    #[test]
    fn a_group_is_read_by_name() {
        assert_eq!(
            parse_group(DESCRIBED, "burst-asg"),
            Ok(Some(GroupSize { min: 0, max: 4, desired: 3, instances: 2 }))
        );
        assert_eq!(parse_group(DESCRIBED, "missing"), Ok(None));
        let e = parse_group("<html><body>Internal Server Error</body></html>", "g").unwrap_err();
        assert!(e.contains("no AutoScalingGroups"), "{e}");
        let e = parse_group("not xml", "g").unwrap_err();
        assert!(e.contains("no XML"), "{e}");
        let bad = DESCRIBED.replace("<MaxSize>4</MaxSize>", "<MaxSize>four</MaxSize>");
        assert!(parse_group(&bad, "burst-asg").unwrap_err().contains("MaxSize `four`"));
    }

    #[test]
    fn an_error_document_gives_code_and_message() {
        let xml = r#"<ErrorResponse xmlns="http://autoscaling.amazonaws.com/doc/2011-01-01/">
          <Error><Type>Sender</Type><Code>SignatureDoesNotMatch</Code>
          <Message>The request signature we calculated does not match</Message></Error>
          <RequestId>x</RequestId></ErrorResponse>"#;
        assert_eq!(
            parse_error(xml),
            Some((
                "SignatureDoesNotMatch".into(),
                "The request signature we calculated does not match".into()
            ))
        );
        assert_eq!(parse_error("<html>500</html>"), None);
    }
}
