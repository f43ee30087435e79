//! AWS Signature Version 4, by hand over ring (already a dependency): the aws-sigv4
//! crate would bring the smithy runtime types along for about fifty lines of hashing.
//! Header-based signing only, for the query APIs' form-encoded POSTs.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use ring::{digest, hmac};

use super::secret::Secret;

#[derive(Debug, Clone)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: Secret,
    pub session_token: Option<Secret>,
}

/// The parts of a request that are signed.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub method: &'a str,
    /// As the Host header will carry it: `host` or `host:port`.
    pub host: &'a str,
    /// Already URI-encoded.
    pub path: &'a str,
    /// Canonical: encoded, sorted by name; empty for none.
    pub query: &'a str,
    /// Other headers to sign (`content-type`); host and the x-amz ones are added.
    pub headers: &'a [(&'a str, &'a str)],
    pub payload: &'a [u8],
}

/// The headers to send: x-amz-date, x-amz-security-token (with a session token) and
/// authorization. `amz_date` is `YYYYMMDDTHHMMSSZ`.
pub fn sign(
    req: &Request<'_>,
    creds: &Credentials,
    region: &str,
    service: &str,
    amz_date: &str,
) -> Vec<(&'static str, String)> {
    let mut added = vec![("x-amz-date", amz_date.to_owned())];
    if let Some(token) = &creds.session_token {
        added.push(("x-amz-security-token", token.expose().to_owned()));
    }
    let mut headers: Vec<(String, String)> = req
        .headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.trim().to_owned()))
        .chain([("host".to_owned(), req.host.to_owned())])
        .chain(added.iter().map(|(k, v)| (k.to_string(), v.clone())))
        .collect();
    headers.sort();
    let signed_headers = headers.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>().join(";");
    let mut canonical = format!("{}\n{}\n{}\n", req.method, req.path, req.query);
    for (k, v) in &headers {
        let _ = writeln!(canonical, "{k}:{v}");
    }
    let _ = write!(canonical, "\n{signed_headers}\n{}", hex_sha256(req.payload));

    let date = &amz_date[..8.min(amz_date.len())];
    let scope = format!("{date}/{region}/{service}/aws4_request");
    let to_sign = format!("AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}", hex_sha256(canonical.as_bytes()));
    let mut key =
        hmac_sha256(format!("AWS4{}", creds.secret_access_key.expose()).as_bytes(), date.as_bytes());
    for part in [region, service, "aws4_request"] {
        key = hmac_sha256(&key, part.as_bytes());
    }
    let signature = hex(&hmac_sha256(&key, to_sign.as_bytes()));
    added.push((
        "authorization",
        format!(
            "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={signature}",
            creds.access_key_id
        ),
    ));
    added
}

/// `YYYYMMDDTHHMMSSZ` for `t` in UTC.
pub fn amz_date(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!("{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Days since 1970-01-01 to (year, month, day): Howard Hinnant's `civil_from_days`.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Percent-encoding as SigV4 wants it: everything but A-Z a-z 0-9 - _ . ~, upper-case hex.
pub fn uri_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
    hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data).as_ref().to_vec()
}

fn hex_sha256(data: &[u8]) -> String {
    hex(digest::digest(&digest::SHA256, data).as_ref())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn suite_creds() -> Credentials {
        // The AWS SigV4 test suite's example credentials.
        Credentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: Secret::new("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
            session_token: None,
        }
    }

    fn authorization(method: &str, query: &str, headers: &[(&str, &str)], payload: &[u8]) -> String {
        let req = Request { method, host: "example.amazonaws.com", path: "/", query, headers, payload };
        let out = sign(&req, &suite_creds(), "us-east-1", "service", "20150830T123600Z");
        out.into_iter().find(|(k, _)| *k == "authorization").unwrap().1
    }

    const SCOPE: &str = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request";

    #[test]
    fn the_aws_test_suite_vectors() {
        // get-vanilla
        assert_eq!(
            authorization("GET", "", &[], b""),
            format!(
                "{SCOPE}, SignedHeaders=host;x-amz-date, \
                 Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
            )
        );
        // get-vanilla-query-order-key-case: the canonical query is sorted.
        assert!(
            authorization("GET", "Param1=value1&Param2=value2", &[], b"")
                .ends_with("Signature=b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500")
        );
        // post-x-www-form-urlencoded: a signed content type and a hashed body, as the
        // Auto Scaling query API sends.
        assert_eq!(
            authorization(
                "POST",
                "",
                &[("Content-Type", "application/x-www-form-urlencoded")],
                b"Param1=value1"
            ),
            format!(
                "{SCOPE}, SignedHeaders=content-type;host;x-amz-date, \
                 Signature=ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a"
            )
        );
    }

    #[test]
    fn a_session_token_is_sent_and_signed() {
        let mut creds = suite_creds();
        creds.session_token = Some(Secret::new("tok"));
        let req = Request { method: "GET", host: "h", path: "/", query: "", headers: &[], payload: b"" };
        let out = sign(&req, &creds, "us-east-1", "service", "20150830T123600Z");
        assert!(out.contains(&("x-amz-security-token", "tok".into())));
        let auth = &out.iter().find(|(k, _)| *k == "authorization").unwrap().1;
        assert!(auth.contains("SignedHeaders=host;x-amz-date;x-amz-security-token"), "{auth}");
    }

    #[test]
    fn dates_and_encoding() {
        assert_eq!(amz_date(UNIX_EPOCH + Duration::from_secs(1_440_938_160)), "20150830T123600Z");
        assert_eq!(amz_date(UNIX_EPOCH + Duration::from_secs(951_782_400)), "20000229T000000Z");
        assert_eq!(amz_date(UNIX_EPOCH), "19700101T000000Z");
        assert_eq!(uri_encode("$Latest a/b~"), "%24Latest%20a%2Fb~");
    }
}
