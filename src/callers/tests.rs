//! Routing by credential: callers, modes, sessions, origins, and the verification behind them.

use super::verifier::REMEMBER_VERIFIED;
use super::*;
use crate::config::CallerSettings;
use crate::secret::Secret;
use crate::state::State;
use argon2::{Argon2, PasswordHasher};
use tokio::time::Instant;

/// A cheap hash (m=64 KiB, t=1) so tests stay fast; the cost is part of the PHC string.
fn cheap_hash(password: &str) -> PasswordHash {
    let params = argon2::Params::new(64, 1, 1, None).unwrap();
    let argon2 = Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    argon2.hash_password(password.as_bytes()).unwrap()
}

fn caller(name: &str, login: &str, password: &str, mode: Mode) -> CallerSettings {
    CallerSettings {
        name: name.into(),
        login: login.into(),
        password: cheap_hash(password),
        profile: 0,
        mode,
        allow_from: Vec::new(),
        logon: false,
        client_cert_subject: None,
        client_cert_san: Vec::new(),
        shadow_actions: Vec::new(),
    }
}

const SESSION_SECRET: &str = "a-session-secret-of-thirty-two-bytes-or-more";

fn with(settings: &[CallerSettings], unknown: UnknownCallers) -> Callers {
    with_limits(settings, unknown, PasswordLimits::default())
}

fn with_limits(
    settings: &[CallerSettings],
    unknown: UnknownCallers,
    limits: PasswordLimits,
) -> Callers {
    let sessions = SessionSettings {
        secret: Secret::from(SESSION_SECRET),
        ttl: Duration::from_secs(3600),
    };
    Callers::new(
        settings,
        unknown,
        Some(&sessions),
        Some(CANARY_SEED),
        limits,
        Clock::system(),
        &memory_state(),
    )
}

/// A state store in memory, nothing started.
fn memory_state() -> Arc<State> {
    State::open(
        &crate::config::StateSettings::memory(),
        1000,
        Clock::system(),
        Arc::default(),
    )
    .unwrap()
}

fn callers(unknown: UnknownCallers) -> Callers {
    let settings = [
        caller("crm-events", "mc", "s3cret/with/slashes", Mode::Ims),
        caller("old-crm", "crm", "whatever", Mode::Legacy),
    ];
    with(&settings, unknown)
}

const LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

/// The seed of the canary draws in these tests.
const CANARY_SEED: u64 = 0x5eed;

/// The credential in the first parameter, from loopback.
fn cred(first: &str) -> Presented<'_> {
    copies(first, None, None)
}

/// A credential in the first parameter and the session and security copies, from loopback.
fn copies<'a>(
    first: &'a str,
    session: Option<&'a str>,
    security: Option<&'a str>,
) -> Presented<'a> {
    Presented {
        credential: Credential::from_copies(first, session, security),
        peer: LOCAL,
        cert: None,
    }
}

#[tokio::test]
async fn routes_by_credential() {
    let callers = callers(UnknownCallers::Reject);
    // The password is everything after the first slash.
    match callers.route(cred("mc/s3cret/with/slashes")).await {
        Ok(Route::Ims(c)) => assert_eq!(&*c.name, "crm-events"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        callers.route(cred("mc/wrong")).await.unwrap_err(),
        AuthError::WrongPassword("crm-events".into())
    );
    // A legacy caller is not checked here: Campaign checks it.
    assert!(matches!(
        callers.route(cred("crm/anything")).await,
        Ok(Route::Legacy(_))
    ));
    assert_eq!(
        callers.route(cred("")).await.unwrap_err(),
        AuthError::Missing
    );
    assert_eq!(
        callers.route(cred("nobody/x")).await.unwrap_err(),
        AuthError::Unknown
    );
    assert_eq!(
        callers
            .route(cred("a-campaign-session-token"))
            .await
            .unwrap_err(),
        AuthError::Unknown
    );
}

#[tokio::test]
async fn unknown_credentials_pass_through_in_legacy() {
    let callers = callers(UnknownCallers::Legacy);
    assert!(matches!(
        callers.route(cred("")).await,
        Ok(Route::Transparent)
    ));
    assert!(matches!(
        callers.route(cred("nobody/x")).await,
        Ok(Route::Transparent)
    ));
    // A known caller with a wrong password is still refused: the login is one we own.
    assert!(callers.route(cred("mc/wrong")).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_share_one_verification() {
    let callers = Arc::new(callers(UnknownCallers::Reject));
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let callers = callers.clone();
            tokio::spawn(async move {
                matches!(
                    callers.route(cred("mc/s3cret/with/slashes")).await,
                    Ok(Route::Ims(_))
                )
            })
        })
        .collect();
    for task in tasks {
        assert!(task.await.unwrap());
    }
    assert_eq!(
        callers.verifier.runs(),
        1,
        "argon2 ran once for 200 requests"
    );
    let remembered = callers.verifier.remembered();
    assert_eq!(remembered.len(), 1);
    assert_eq!(remembered[0].1, Some(true));
    // A wrong password is a verification of its own, remembered too.
    assert!(callers.route(cred("mc/wrong")).await.is_err());
    assert!(callers.route(cred("mc/wrong")).await.is_err());
    assert_eq!(callers.verifier.runs(), 2);
}

/// When the one remembered verdict was made.
fn remembered_at(callers: &Callers) -> Instant {
    let remembered = callers.verifier.remembered();
    assert_eq!(remembered.len(), 1);
    remembered[0].0
}

#[tokio::test(start_paused = true)]
async fn verdicts_expire() {
    let callers = callers(UnknownCallers::Reject);
    let good = "mc/s3cret/with/slashes";
    assert!(callers.route(cred(good)).await.is_ok());
    let first = remembered_at(&callers);
    tokio::time::advance(REMEMBER_VERIFIED - Duration::from_secs(1)).await;
    assert!(callers.route(cred(good)).await.is_ok());
    let same = remembered_at(&callers);
    assert_eq!(first, same, "still remembered");
    tokio::time::advance(Duration::from_secs(2)).await;
    assert!(callers.route(cred(good)).await.is_ok());
    let renewed = remembered_at(&callers);
    assert!(
        renewed > first,
        "verified again after {REMEMBER_VERIFIED:?}"
    );
}

#[test]
fn hashes_verify() {
    let hash = hash_password("correct horse");
    assert!(hash.starts_with("$argon2id$v=19$"));
    let parsed = PasswordHash::new(&hash).unwrap();
    assert!(check_password("correct horse", &parsed));
    assert!(!check_password("correct horse battery", &parsed));
}

#[tokio::test]
async fn a_caller_bound_to_a_certificate_needs_it() {
    use rcgen::DnType::{CommonName, OrganizationName};
    let mut bound = caller("crm-events", "mc", "pw", Mode::Ims);
    bound.client_cert_subject = Some(SubjectName::parse("CN=crm-pusher,O=Example").unwrap());
    let callers = with(&[bound], UnknownCallers::Reject);
    let identity = |subject: &[(rcgen::DnType, &str)]| {
        CertIdentity::from_der(&crate::tls::certificate_for_tests(subject, Vec::new())).unwrap()
    };
    let with_cert = |cert| Presented {
        cert,
        ..cred("mc/pw")
    };
    let right = identity(&[(OrganizationName, "Example"), (CommonName, "crm-pusher")]);
    assert!(callers.route(with_cert(Some(&right))).await.is_ok());
    let intruder = identity(&[(CommonName, "intruder"), (OrganizationName, "Example")]);
    for wrong in [None, Some(&intruder)] {
        assert_eq!(
            callers.route(with_cert(wrong)).await.unwrap_err(),
            AuthError::WrongCertificate("crm-events".into())
        );
    }
}

#[tokio::test]
async fn a_caller_bound_to_certificate_names_needs_one_of_them() {
    let mut bound = caller("crm-events", "mc", "pw", Mode::Ims);
    bound.client_cert_san = ["dns:crm.example.com", "uri:spiffe://example.com/crm"]
        .into_iter()
        .map(|name| AltName::parse(name).unwrap())
        .collect();
    let callers = with(&[bound], UnknownCallers::Reject);
    let named = |names: &[&str]| {
        let sans = names
            .iter()
            .map(|name| match name.split_once(':').unwrap() {
                ("dns", dns) => rcgen::SanType::DnsName(dns.try_into().unwrap()),
                (_, uri) => rcgen::SanType::URI(uri.try_into().unwrap()),
            })
            .collect();
        let der =
            crate::tls::certificate_for_tests(&[(rcgen::DnType::CommonName, "whoever")], sans);
        CertIdentity::from_der(&der).unwrap()
    };
    for good in [
        &["dns:other.example.com", "dns:CRM.example.com"][..],
        &["uri:spiffe://example.com/crm"],
    ] {
        let cert = named(good);
        assert!(
            callers
                .route(Presented {
                    cert: Some(&cert),
                    ..cred("mc/pw")
                })
                .await
                .is_ok(),
            "{good:?}"
        );
    }
    for wrong in [
        &[][..],
        &["dns:crm.example.com.evil.com"],
        &["uri:spiffe://example.com/crm/x", "dns:crm"],
    ] {
        let cert = named(wrong);
        assert_eq!(
            callers
                .route(Presented {
                    cert: Some(&cert),
                    ..cred("mc/pw")
                })
                .await
                .unwrap_err(),
            AuthError::WrongCertificate("crm-events".into()),
            "{wrong:?}"
        );
    }
}

#[tokio::test]
async fn canary_sends_its_share_the_ims_way() {
    let settings = [caller(
        "crm-events",
        "mc",
        "pw",
        Mode::Canary { percent: 30.0 },
    )];
    let callers = with(&settings, UnknownCallers::Reject);
    // The same seed draws the same requests: request i goes the ims way when its draw is under
    // the share.
    let mut draws = fastrand::Rng::with_seed(CANARY_SEED);
    let mut expected = || draws.f64() * 100.0 < 30.0;
    let mut ims = 0;
    for i in 0..2000 {
        let way = callers.route(cred("mc/pw")).await;
        match (expected(), way) {
            (true, Ok(Route::Ims(_))) => ims += 1,
            (false, Ok(Route::Legacy(_))) => {}
            (went_ims, other) => panic!("request {i}: expected ims = {went_ims}, got {other:?}"),
        }
    }
    // Near 30 %: the seed is not a lucky one.
    assert!((550..=650).contains(&ims), "{ims} of 2000 went the ims way");
    // The legacy share is not checked here (Campaign checks it); the ims share is.
    for i in 0..200 {
        let refused = callers.route(cred("mc/wrong")).await.is_err();
        assert_eq!(refused, expected(), "request {i} with a wrong password");
    }
}

#[tokio::test]
async fn allow_from_is_checked_on_every_way() {
    let mut ims = caller("crm-events", "mc", "pw", Mode::Ims);
    ims.allow_from = vec![
        "10.20.0.0/16".parse().unwrap(),
        "192.0.2.7/32".parse().unwrap(),
    ];
    let mut legacy = caller("old-crm", "crm", "pw", Mode::Legacy);
    legacy.allow_from = vec!["10.20.0.0/16".parse().unwrap()];
    let callers = with(&[ims, legacy], UnknownCallers::Reject);
    let from = |peer: &str, first| Presented {
        peer: peer.parse().unwrap(),
        ..cred(first)
    };
    assert!(callers.route(from("10.20.3.4", "mc/pw")).await.is_ok());
    assert!(callers.route(from("192.0.2.7", "mc/pw")).await.is_ok());
    assert!(
        callers
            .route(from("::ffff:10.20.3.4", "mc/pw"))
            .await
            .is_ok()
    );
    assert!(matches!(
        callers.route(from("10.21.0.1", "mc/pw")).await,
        Err(AuthError::NotAllowed { .. })
    ));
    assert!(matches!(
        callers.route(from("127.0.0.1", "crm/pw")).await,
        Err(AuthError::NotAllowed { .. })
    ));
    assert!(matches!(
        callers.logon("mc", "pw", from("10.99.0.1", "")).await,
        Err(AuthError::NotAllowed { .. })
    ));
}

#[tokio::test]
async fn logon_issues_sessions_that_route_the_ims_way() {
    let callers = callers(UnknownCallers::Reject);
    let LogonWay::Answer(caller, issued) = callers
        .logon("mc", "s3cret/with/slashes", cred(""))
        .await
        .unwrap()
    else {
        panic!("an ims caller's Logon is answered here");
    };
    assert_eq!(&*caller.name, "crm-events");
    let session = issued.session.expose();
    let security = issued.security.expose();
    // In the first parameter, or only in the cookie / header copies.
    for presented in [
        copies(session, None, Some(security)),
        copies(session, None, None),
        copies("", Some(session), Some(security)),
    ] {
        assert!(
            matches!(callers.route(presented).await, Ok(Route::Ims(c)) if &*c.name == "crm-events")
        );
    }
    let other = callers
        .logon("mc", "s3cret/with/slashes", cred(""))
        .await
        .unwrap();
    let LogonWay::Answer(_, other) = other else {
        panic!()
    };
    assert_eq!(
        callers
            .route(copies(session, None, Some(other.security.expose())))
            .await
            .unwrap_err(),
        AuthError::Session(SessionError::SecurityMismatch)
    );
    // In a cookie or header only, the session needs its security token.
    assert_eq!(
        callers
            .route(copies("", Some(session), None))
            .await
            .unwrap_err(),
        AuthError::Session(SessionError::SecurityMissing)
    );
    assert!(
        !callers
            .logoff(cred("mc/s3cret/with/slashes"))
            .await
            .unwrap()
    );
    // A Logoff ends the session here: refused after it, and a second Logoff is harmless.
    assert!(callers.logoff(cred(session)).await.unwrap());
    assert_eq!(
        callers
            .route(copies(session, None, Some(security)))
            .await
            .unwrap_err(),
        AuthError::Session(SessionError::Revoked)
    );
    assert!(callers.logoff(cred(session)).await.unwrap());
    assert_eq!(
        callers.logon("mc", "wrong", cred("")).await.err(),
        Some(AuthError::WrongPassword("crm-events".into()))
    );
    // A legacy caller's Logon is Campaign's; an unknown login is refused.
    assert!(matches!(
        callers.logon("crm", "x", cred("")).await,
        Ok(LogonWay::Forward(Route::Legacy(_)))
    ));
    assert_eq!(
        callers.logon("nobody", "x", cred("")).await.err(),
        Some(AuthError::Unknown)
    );
    // Tokens of another proxy's secret are refused.
    let stranger = Sessions::new(
        &SessionSettings {
            secret: Secret::from("another-session-secret-of-thirty-two-bytes"),
            ttl: Duration::from_secs(60),
        },
        Arc::default(),
    )
    .issue("crm-events", std::time::SystemTime::now());
    assert_eq!(
        callers
            .route(cred(stranger.session.expose()))
            .await
            .unwrap_err(),
        AuthError::Session(SessionError::BadSignature)
    );
}

#[tokio::test]
async fn sessions_end_when_the_caller_leaves_ims_mode() {
    let settings = [caller("crm-events", "mc", "pw", Mode::Ims)];
    let before = with(&settings, UnknownCallers::Reject);
    let LogonWay::Answer(_, issued) = before.logon("mc", "pw", cred("")).await.unwrap() else {
        panic!()
    };
    let after = with(
        &[caller("crm-events", "mc", "pw", Mode::Legacy)],
        UnknownCallers::Reject,
    );
    assert!(matches!(
        after.route(cred(issued.session.expose())).await,
        Err(AuthError::SessionOfNoImsCaller(_))
    ));
    // Its next Logon goes to Campaign.
    assert!(matches!(
        after.logon("mc", "pw", cred("")).await,
        Ok(LogonWay::Forward(Route::Legacy(_)))
    ));
}

fn limits(max_pending: usize, per_login: u32, per_peer: u32) -> PasswordLimits {
    let per = |count| crate::config::Rate {
        count,
        window: Duration::from_secs(60),
    };
    PasswordLimits {
        max_pending,
        per_login: per(per_login),
        per_peer: per(per_peer),
        ..PasswordLimits::default()
    }
}

#[tokio::test(start_paused = true)]
async fn failed_checks_are_limited_per_login_and_a_good_verdict_still_works() {
    let settings = [caller("crm-events", "mc", "pw", Mode::Ims)];
    let callers = with_limits(&settings, UnknownCallers::Reject, limits(32, 3, 100));
    assert!(
        callers.route(cred("mc/pw")).await.is_ok(),
        "remembered as good"
    );
    for i in 0..3 {
        let wrong = format!("mc/wrong-{i}");
        assert!(callers.route(cred(&wrong)).await.is_err());
    }
    assert_eq!(callers.verifier.runs(), 4);
    // Over the limit: refused without running argon2, even a password not tried yet, and
    // answered after the refusal delay...
    let asked = Instant::now();
    assert_eq!(
        callers.route(cred("mc/wrong-3")).await.unwrap_err(),
        AuthError::WrongPassword("crm-events".into())
    );
    assert_eq!(callers.verifier.runs(), 4);
    assert_refusal_delay(asked.elapsed());
    // ... while the remembered good verdict is honoured.
    assert!(callers.route(cred("mc/pw")).await.is_ok());
    // A new window, a new allowance.
    tokio::time::advance(Duration::from_secs(61)).await;
    assert!(callers.route(cred("mc/wrong-4")).await.is_err());
    assert_eq!(callers.verifier.runs(), 5);
}

#[tokio::test(start_paused = true)]
async fn failed_checks_are_limited_per_peer_across_logins() {
    let settings = [
        caller("crm-events", "mc", "pw", Mode::Ims),
        caller("other", "other", "pw", Mode::Ims),
    ];
    let callers = with_limits(&settings, UnknownCallers::Reject, limits(32, 100, 2));
    assert!(callers.route(cred("mc/wrong")).await.is_err());
    assert!(callers.route(cred("other/wrong")).await.is_err());
    assert_eq!(callers.verifier.runs(), 2);
    // Same peer, unknown login or known: no more runs, and the same delay for both.
    let asked = Instant::now();
    assert!(callers.route(cred("nobody/x")).await.is_err());
    assert_refusal_delay(asked.elapsed());
    assert!(callers.route(cred("mc/pw")).await.is_err());
    assert_eq!(callers.verifier.runs(), 2);
    // Another peer is not limited by this one's failures.
    let elsewhere = Presented {
        peer: "192.0.2.9".parse().unwrap(),
        ..cred("mc/pw")
    };
    assert!(callers.route(elsewhere).await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn refusals_asked_together_are_answered_spread_over_half_the_delay() {
    let settings = [caller("crm-events", "mc", "pw", Mode::Ims)];
    let callers = with_limits(&settings, UnknownCallers::Reject, limits(32, 1, 100));
    assert!(callers.route(cred("mc/wrong")).await.is_err());
    // A flood's guesses, all sent in the same instant and all over the limit: answered at
    // different times, so that their next guesses do not come back together either.
    let callers = Arc::new(callers);
    let asked = Instant::now();
    let mut guesses = tokio::task::JoinSet::new();
    for i in 0..20 {
        let callers = callers.clone();
        guesses.spawn(async move {
            let guess = format!("mc/guess-{i}");
            assert!(callers.route(cred(&guess)).await.is_err());
            asked.elapsed()
        });
    }
    let answered = guesses.join_all().await;
    assert_eq!(callers.verifier.runs(), 1);
    answered.iter().copied().for_each(assert_refusal_delay);
    let mut distinct = answered.clone();
    distinct.sort();
    distinct.dedup();
    assert!(distinct.len() > 10, "{answered:?}");
}

#[tokio::test]
async fn an_unknown_login_costs_a_check_and_a_full_queue_refuses_at_once() {
    let settings = [caller("crm-events", "mc", "pw", Mode::Ims)];
    let callers = with_limits(&settings, UnknownCallers::Reject, limits(32, 10, 30));
    assert_eq!(
        callers.route(cred("nobody/x")).await.unwrap_err(),
        AuthError::Unknown
    );
    assert_eq!(callers.verifier.runs(), 1, "as a wrong password would");
    // Not a login/password: nothing to check.
    assert!(callers.route(cred("a-campaign-session")).await.is_err());
    assert_eq!(callers.verifier.runs(), 1);

    let full = with_limits(&settings, UnknownCallers::Reject, limits(0, 10, 30));
    assert_eq!(
        full.route(cred("mc/pw")).await.unwrap_err(),
        AuthError::Busy
    );
    assert_eq!(full.verifier.runs(), 0);
    assert!(
        full.verifier.remembered().is_empty(),
        "not remembered: checked next time"
    );
}

/// A refusal over the limits is answered after the refusal delay and at most half as long again.
fn assert_refusal_delay(waited: Duration) {
    let delay = crate::config::DEFAULT_REFUSAL_DELAY;
    assert!(
        (delay..=delay + delay / 2).contains(&waited),
        "answered after {waited:?}"
    );
}

/// The nice value in a `/proc/.../stat` file.
fn nice_in(stat: &std::path::Path) -> i64 {
    let stat = std::fs::read_to_string(stat).unwrap();
    // Fields after `(comm) `: state is the 3rd field of stat, nice the 19th.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    fields[16].parse().unwrap()
}

/// The nice value of each thread of this process named `name` (Linux).
fn nice_of_threads(name: &str) -> Vec<i64> {
    let mut nice = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let path = task.path();
        let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        if comm.trim() == name {
            nice.push(nice_in(&path.join("stat")));
        }
    }
    nice
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn argon2_runs_on_threads_of_lower_priority() {
    let settings = [caller("crm-events", "mc", "pw", Mode::Ims)];
    let callers = with(&settings, UnknownCallers::Reject);
    assert!(callers.route(cred("mc/pw")).await.is_ok());
    assert!(callers.verifier.runs() >= 1);
    let nice = nice_of_threads("argon2");
    assert!(!nice.is_empty(), "no argon2 thread");
    assert!(nice.iter().all(|&n| n == 19), "{nice:?}");
    // The thread that asked is as it was.
    assert_eq!(nice_in(std::path::Path::new("/proc/thread-self/stat")), 0);
}

#[tokio::test]
async fn a_check_past_the_peers_share_of_the_queue_is_busy_and_not_remembered() {
    let settings = [caller("crm-events", "mc", "pw", Mode::Ims)];
    // A queue of 4: one address holds at most one place.
    let callers = with_limits(&settings, UnknownCallers::Reject, limits(4, 100, 100));
    // The first check waits for a place to run, holding its address's share meanwhile.
    let held = callers.verifier.hold_the_runs();
    let (first, second) = tokio::join!(callers.route(cred("mc/wrong")), async {
        let second = callers.route(cred("mc/pw")).await;
        drop(held);
        second
    });
    assert_eq!(
        first.unwrap_err(),
        AuthError::WrongPassword("crm-events".into())
    );
    assert_eq!(second.unwrap_err(), AuthError::Busy);
    assert_eq!(callers.verifier.runs(), 1);
    // Not checked, so not refused next time: the right password goes through.
    assert!(callers.route(cred("mc/pw")).await.is_ok());
    assert_eq!(callers.verifier.runs(), 2);
}
