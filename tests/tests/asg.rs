//! The aws-asg actuator against moto's real server: SigV4, DescribeAutoScalingGroups,
//! SetDesiredCapacity, clamping, the unilateral scale-up-only rule and signature checks.
//! Skipped loudly where moto is not installed, unless SITEWATCH_REQUIRE_MOTO is set
//! (`.ci/run` installs moto and sets it).

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use sitewatch_proto::state::{FencingToken, Verdict};
use sitewatch_quorum::actuator::{Action, Actuator, ActuatorConfig, ActuatorError, AsgConfig, Outcome};
use sitewatch_tests::moto::{ANY_KEY_ID, ANY_SECRET, Moto, REGION};
use sitewatch_tests::wait_for;

const GROUP: &str = "burst-asg";

/// One moto at a time: each takes about 200 MB once EC2 is loaded.
fn moto(test: &str) -> Option<(MutexGuard<'static, ()>, Moto)> {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let guard = ONE_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    match Moto::launch() {
        Ok(m) => Some((guard, m)),
        Err(why) => {
            // CI installs moto first: there a skip would hide a failure.
            sitewatch_tests::skip(test, "SITEWATCH_REQUIRE_MOTO", &why);
            None
        }
    }
}

struct Setup {
    actuator: Actuator,
    _dir: tempfile::TempDir,
}

fn actuator(moto: &Moto, group: &str, key_id: &str, secret: &str) -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let secret_file = dir.path().join("aws-secret");
    std::fs::write(&secret_file, format!("{secret}\n")).expect("write the secret");
    let cfg = ActuatorConfig::AwsAsg(AsgConfig {
        name: "cloud".into(),
        region: REGION.into(),
        group: group.into(),
        endpoint: Some(moto.endpoint()),
        access_key_id: Some(key_id.into()),
        access_key_id_file: None,
        access_key_id_env: None,
        secret_access_key_file: Some(secret_file),
        secret_access_key_env: None,
        session_token_file: None,
        session_token_env: None,
        timeout: Duration::from_secs(10),
        converge_timeout: Duration::from_secs(10),
        max_attempts: 3,
        initial_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(200),
    });
    Setup { actuator: Actuator::from_config(&cfg).expect("a valid aws-asg actuator"), _dir: dir }
}

/// Each test its own runtime; the moto lock is held outside it.
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime").block_on(f)
}

fn action(desired: u32, previous: u32, unilateral: bool) -> Action {
    let token = FencingToken { term: 2, index: 17 };
    Action {
        cluster_id: "home".into(),
        token,
        idempotency_key: token.idempotency_key("home"),
        verdict: Verdict::Down,
        previous_verdict: Verdict::Healthy,
        desired_capacity: desired,
        previous_capacity: previous,
        reasons: vec!["ups-on-battery:site".into()],
        decided_at_ms: 1_700_000_000_000,
        spend_level: 0,
        unilateral,
        dry_run: false,
    }
}

#[test]
fn setting_3_scales_the_group_and_instances_appear() {
    let Some((_one, moto)) = moto("setting_3") else { return };
    block_on(async {
        moto.create_group(GROUP, 0, 4);
        let s = actuator(&moto, GROUP, ANY_KEY_ID, ANY_SECRET);
        let out = s.actuator.apply(&action(3, 0, false)).await.unwrap();
        assert_eq!(out, Outcome::Applied { detail: "group burst-asg 0 -> 3".into() });
        assert_eq!(moto.desired_capacity(GROUP), 3);
        wait_for(Duration::from_secs(10), "3 instances", || (moto.instance_count(GROUP) == 3).then_some(()));
        // The same absolute action again changes nothing.
        let again = s.actuator.apply(&action(3, 0, false)).await.unwrap();
        assert!(matches!(again, Outcome::AlreadyThere { .. }), "{again:?}");
        // And a committed decision may scale down.
        s.actuator.apply(&action(1, 3, false)).await.unwrap();
        assert_eq!(moto.desired_capacity(GROUP), 1);
    });
}

#[test]
fn a_target_above_max_size_is_clamped() {
    let Some((_one, moto)) = moto("clamp") else { return };
    block_on(async {
        moto.create_group(GROUP, 0, 4);
        let s = actuator(&moto, GROUP, ANY_KEY_ID, ANY_SECRET);
        let out = s.actuator.apply(&action(9, 0, false)).await.unwrap();
        let Outcome::Applied { detail } = &out else { panic!("{out:?}") };
        assert!(detail.contains("0 -> 4 (9 clamped to [0, 4])"), "{detail}");
        assert_eq!(moto.desired_capacity(GROUP), 4);
    });
}

#[test]
fn a_unilateral_action_never_scales_down() {
    let Some((_one, moto)) = moto("unilateral") else { return };
    block_on(async {
        moto.create_group(GROUP, 0, 4);
        moto.set_desired(GROUP, 3);
        let s = actuator(&moto, GROUP, ANY_KEY_ID, ANY_SECRET);
        // The witness asks for 1 while the group runs 3: left alone.
        let out = s.actuator.apply(&action(1, 0, true)).await.unwrap();
        assert!(
            matches!(&out, Outcome::Skipped { detail } if detail.contains("never scales down")),
            "{out:?}"
        );
        assert_eq!(moto.desired_capacity(GROUP), 3);
        assert!(matches!(s.actuator.apply(&action(3, 0, true)).await.unwrap(), Outcome::AlreadyThere { .. }));
        // Up is allowed.
        assert!(matches!(s.actuator.apply(&action(4, 0, true)).await.unwrap(), Outcome::Applied { .. }));
        assert_eq!(moto.desired_capacity(GROUP), 4);
    });
}

#[test]
fn an_unknown_group_is_a_clear_error() {
    let Some((_one, moto)) = moto("unknown_group") else { return };
    block_on(async {
        moto.create_group(GROUP, 0, 4);
        let s = actuator(&moto, "no-such-group", ANY_KEY_ID, ANY_SECRET);
        let started = std::time::Instant::now();
        let e = s.actuator.apply(&action(3, 0, false)).await.unwrap_err();
        let ActuatorError::Permanent(why) = &e else { panic!("{e:?}") };
        assert!(why.contains("no Auto Scaling group named `no-such-group` in eu-west-1"), "{why}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "retried a permanent error: {:?}",
            started.elapsed()
        );
        assert_eq!(moto.desired_capacity(GROUP), 0);
    });
}

#[test]
fn with_signatures_checked_a_wrong_secret_fails_and_the_right_one_works() {
    let Some((_one, moto)) = moto("signatures") else { return };
    block_on(async {
        moto.create_group(GROUP, 0, 4);
        let (key_id, secret) = moto.require_signatures();
        let wrong = actuator(&moto, GROUP, &key_id, "not-the-secret");
        let e = wrong.actuator.apply(&action(3, 0, false)).await.unwrap_err();
        assert!(
            matches!(&e, ActuatorError::Permanent(why) if why.contains("SignatureDoesNotMatch")),
            "{e:?}"
        );
        let right = actuator(&moto, GROUP, &key_id, &secret);
        assert!(matches!(right.actuator.apply(&action(3, 0, false)).await.unwrap(), Outcome::Applied { .. }));
        // Read back through a signed request of the harness's own.
        let (status, body) = moto.query(
            "autoscaling",
            &format!(
                "Action=DescribeAutoScalingGroups&Version=2011-01-01&AutoScalingGroupNames.member.1={GROUP}"
            ),
            &key_id,
            &secret,
        );
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("<DesiredCapacity>3</DesiredCapacity>"), "{body}");
    });
}
