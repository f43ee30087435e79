//! The cluster's own certificate authority, so an operator bootstraps TLS in two
//! commands: `sitewatch ca init` once, `sitewatch cert issue NAME` per member.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use time::{Duration, OffsetDateTime};

pub const CA_CERT: &str = "ca.pem";
pub const CA_KEY: &str = "ca.key";
const CA_DAYS: i64 = 3650;

/// Write a file that must not exist yet; keys get mode 0600.
fn write_new(path: &Path, contents: &str, mode: u32) -> anyhow::Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("creating {} (it must not exist yet)", path.display()))?;
    f.write_all(contents.as_bytes()).with_context(|| format!("writing {}", path.display()))?;
    f.sync_all().with_context(|| format!("syncing {}", path.display()))
}

fn validity(params: &mut CertificateParams, days: i64) {
    let now = OffsetDateTime::now_utc();
    // An hour of slack for hosts whose clocks run a little behind.
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(days);
}

/// Create a new CA in `dir`: `ca.pem` (share it with every member) and `ca.key`
/// (keep it off the members).
pub fn init_ca(dir: &Path, cluster_id: &str) -> anyhow::Result<PathBuf> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.distinguished_name.push(DnType::OrganizationName, "sitewatch");
    params.distinguished_name.push(DnType::CommonName, format!("sitewatch cluster CA {cluster_id}"));
    params.key_usages =
        vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    validity(&mut params, CA_DAYS);
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    write_new(&dir.join(CA_KEY), &key.serialize_pem(), 0o600)?;
    let cert_path = dir.join(CA_CERT);
    write_new(&cert_path, &cert.pem(), 0o644)?;
    Ok(cert_path)
}

/// Issue a certificate for member `name`, signed by the CA in `ca_dir`, into `out`
/// as `NAME.pem` and `NAME.key`.
pub fn issue(name: &str, ca_dir: &Path, out: &Path, days: i64) -> anyhow::Result<(PathBuf, PathBuf)> {
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
        bail!("`{name}` is not a valid member name: use lowercase letters, digits and dashes");
    }
    let ca_pem = fs::read_to_string(ca_dir.join(CA_CERT))
        .with_context(|| format!("reading {}", ca_dir.join(CA_CERT).display()))?;
    let ca_key_pem = fs::read_to_string(ca_dir.join(CA_KEY))
        .with_context(|| format!("reading {}", ca_dir.join(CA_KEY).display()))?;
    let ca_key = KeyPair::from_pem(&ca_key_pem).context("parsing the CA key")?;
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key).context("parsing the CA certificate")?;
    let mut params = CertificateParams::new(vec![name.to_string()])?;
    params.distinguished_name.push(DnType::OrganizationName, "sitewatch");
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages =
        vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    validity(&mut params, days);
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let key_path = out.join(format!("{name}.key"));
    let cert_path = out.join(format!("{name}.pem"));
    write_new(&key_path, &key.serialize_pem(), 0o600)?;
    write_new(&cert_path, &cert.pem(), 0o644)?;
    Ok((cert_path, key_path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sitewatch_quorum::config::TlsConfig;
    use sitewatch_quorum::tls::TlsIdentity;

    #[test]
    fn issued_certificates_load_as_a_tls_identity_under_their_ca_only() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca");
        init_ca(&ca, "home").unwrap();
        let (cert, key) = issue("agent-1", &ca, dir.path(), 30).unwrap();
        let tls = TlsConfig { ca: ca.join(CA_CERT), cert: cert.clone(), key: key.clone() };
        TlsIdentity::load(&tls, "agent-1").unwrap();
        let err = TlsIdentity::load(&tls, "agent-2").err().unwrap().to_string();
        assert!(err.contains("does not name this node `agent-2`"), "{err}");

        let other = dir.path().join("other");
        init_ca(&other, "elsewhere").unwrap();
        let foreign = TlsConfig { ca: other.join(CA_CERT), cert, key };
        let err = TlsIdentity::load(&foreign, "agent-1").err().unwrap().to_string();
        assert!(err.contains("not valid under the cluster CA"), "{err}");
    }

    #[test]
    fn nothing_is_overwritten_and_keys_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        init_ca(dir.path(), "home").unwrap();
        assert!(init_ca(dir.path(), "home").is_err());
        let mode = fs::metadata(dir.path().join(CA_KEY)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(issue("Bad_Name", dir.path(), dir.path(), 1).is_err());
    }
}
