//! Unmodified callers that log on (`xtk:session#Logon`), and the modes of a staged cut-over,
//! over loopback with the stand-ins.

use std::time::Duration;

use crate::support::*;

pub(super) const SESSION_SECRET: &str = "replicas-share-this-secret-0123456789abcdef";
const SOAP_ENV: &str = "http://schemas.xmlsoap.org/soap/envelope/";

pub(super) fn sessions_table(secret: &str, ttl: &str) -> String {
    format!("[sessions]\nsecret = \"{secret}\"\nttl = \"{ttl}\"\n")
}

/// A stack whose `mc` caller logs on.
async fn logon_stack(secret: &str, ttl: &str) -> Stack {
    Stack::start(&sessions_table(secret, ttl), "logon = true").await
}

/// `xtk:session#Logon` as acc-js-sdk writes it: the empty session token, then login, password
/// and parameters, by position.
fn logon_body(login: &str, password: &str) -> String {
    format!(
        r#"<?xml version='1.0' encoding='UTF-8'?><SOAP-ENV:Envelope xmlns:xsd='http://www.w3.org/2001/XMLSchema' xmlns:xsi='http://www.w3.org/2001/XMLSchema-instance' xmlns:SOAP-ENV='{SOAP_ENV}' xmlns:ns='http://xml.apache.org/xml-soap'><SOAP-ENV:Header><X-Security-Token/></SOAP-ENV:Header><SOAP-ENV:Body><m:Logon xmlns:m="urn:xtk:session" SOAP-ENV:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/"><sessiontoken xsi:type="xsd:string"/><login xsi:type="xsd:string">{login}</login><password xsi:type="xsd:string">{password}</password><parameters xsi:type="ns:Element"/></m:Logon></SOAP-ENV:Body></SOAP-ENV:Envelope>"#
    )
}

/// A call carrying a session in every place acc-js-sdk puts it.
pub(super) fn session_call(method: &str, service: &str, session: &str, security: &str) -> String {
    format!(
        r#"<?xml version='1.0' encoding='UTF-8'?><SOAP-ENV:Envelope xmlns:xsi='http://www.w3.org/2001/XMLSchema-instance' xmlns:SOAP-ENV='{SOAP_ENV}'><SOAP-ENV:Header><Cookie>__sessiontoken={session}</Cookie><X-Security-Token>{security}</X-Security-Token></SOAP-ENV:Header><SOAP-ENV:Body><m:{method} xmlns:m="urn:{service}"><sessiontoken xsi:type="xsd:string">{session}</sessiontoken><domEvent xsi:type="ns:Element"><rtEvent type="order" email="a@b.c"/></domEvent></m:{method}></SOAP-ENV:Body></SOAP-ENV:Envelope>"#
    )
}

fn between<'a>(text: &'a str, start: &str, end: &str) -> &'a str {
    let from = text
        .find(start)
        .unwrap_or_else(|| panic!("`{start}` not in {text}"))
        + start.len();
    &text[from..from + text[from..].find(end).unwrap()]
}

/// Logs on through the proxy; returns the session and security tokens.
pub(super) async fn log_on(
    proxy: std::net::SocketAddr,
    login: &str,
    password: &str,
) -> (String, String) {
    let answer = post(
        proxy,
        logon_body(login, password),
        &[
            ("content-type", "application/soap+xml"),
            ("soapaction", "xtk:session#Logon"),
        ],
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let session = between(
        &answer.body,
        "<pstrSessionToken xsi:type='xsd:string'>",
        "<",
    )
    .to_owned();
    let security = between(
        &answer.body,
        "<pstrSecurityToken xsi:type='xsd:string'>",
        "<",
    )
    .to_owned();
    (session, security)
}

/// Sends a PushEvent with the session everywhere acc-js-sdk sends it.
pub(super) async fn push(proxy: std::net::SocketAddr, session: &str, security: &str) -> Answer {
    post(
        proxy,
        session_call("PushEvent", "nms:rtEvent", session, security),
        &[
            ("cookie", &format!("__sessiontoken={session}")),
            ("x-session-token", session),
            ("x-security-token", security),
            ("acc-sdk-auth", &format!("UserPassword {LOGIN}")),
        ],
    )
    .await
}

#[tokio::test]
async fn logon_is_answered_here_and_the_session_goes_out_as_a_bearer_token() {
    let stack = logon_stack(SESSION_SECRET, "24h").await;
    let (session, security) = log_on(stack.url(), LOGIN, PASSWORD).await;
    assert!(session.starts_with("ibs1.") && security.starts_with("ibx1."));

    let answer = push(stack.url(), &session, &security).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    // Logoff is answered here too.
    let logoff = post(
        stack.url(),
        session_call("Logoff", "xtk:session", &session, &security),
        &[("x-security-token", &security)],
    )
    .await;
    assert_eq!(logoff.status, 200, "{}", logoff.body);
    assert!(
        logoff
            .body
            .contains("<LogoffResponse xmlns='urn:xtk:session'")
    );

    // Campaign saw one call: the PushEvent, with the Bearer token and nothing of the session.
    let seen = stack.campaign.requests();
    assert_eq!(seen.len(), 1, "Logon and Logoff never reach Campaign");
    let push = &seen[0];
    assert_eq!(
        push.header("authorization"),
        Some(format!("Bearer {}", stack.ims.issued()[0]).as_str())
    );
    let everything = format!("{:?}\n{}", push.headers, push.text());
    for secret in [session.as_str(), security.as_str(), PASSWORD] {
        assert!(
            !everything.contains(secret),
            "`{secret}` reached Campaign:\n{everything}"
        );
    }
    // The login ("mc") is too short to search for in a random token: the one header that named
    // it is gone.
    assert_eq!(push.header("acc-sdk-auth"), None);
    assert!(
        push.text()
            .contains("<sessiontoken xsi:type=\"xsd:string\"></sessiontoken>")
    );
    assert!(
        push.text()
            .contains("<Cookie></Cookie><X-Security-Token></X-Security-Token>")
    );
}

#[tokio::test]
async fn a_wrong_password_at_logon_gets_campaigns_fault() {
    let stack = logon_stack(SESSION_SECRET, "24h").await;
    let answer = post(stack.url(), logon_body(LOGIN, "not-the-password"), &[]).await;
    answer.assert_fault(
        500,
        "Client",
        "Invalid login or password. Connection denied.",
    );
    assert!(
        answer
            .body
            .contains("Error while executing the method 'Logon' of service 'xtk:session'.")
    );
    let answer = post(stack.url(), logon_body("nobody", "x"), &[]).await;
    answer.assert_fault(
        500,
        "Client",
        "Invalid login or password. Connection denied.",
    );
    assert!(stack.campaign.requests().is_empty());
}

#[tokio::test]
async fn sessions_of_one_replica_are_accepted_by_the_others() {
    let stack = logon_stack(SESSION_SECRET, "24h").await;
    let (session, security) = log_on(stack.url(), LOGIN, PASSWORD).await;
    // A second replica with the same secret, no state shared.
    let replica = Proxy::start(&config_text(
        &stack.ims.url(),
        &stack.campaign.url(),
        &sessions_table(SESSION_SECRET, "24h"),
        "logon = true",
    ))
    .await;
    assert_eq!(push(replica.addr, &session, &security).await.status, 200);
    // One with another secret refuses it, as Campaign refuses an unknown session.
    let stranger = Proxy::start(&config_text(
        &stack.ims.url(),
        &stack.campaign.url(),
        &sessions_table("another-secret-another-secret-another-secret", "24h"),
        "logon = true",
    ))
    .await;
    let answer = push(stranger.addr, &session, &security).await;
    answer.assert_fault(
        500,
        "Client",
        "XSV-350008 Session has expired or is invalid. Please reconnect.",
    );
    assert_eq!(stack.campaign.requests().len(), 1);
}

#[tokio::test]
async fn expired_or_tampered_sessions_get_xsv_350008() {
    // Expiries are whole seconds (`floor(issued + ttl)`): a 3 s session is valid for at least
    // 2 s after it was issued, and expired 3 s after. The proxy's clock is moved past it rather
    // than waited for.
    let clock = imsbridge::clock::Clock::adjustable();
    let stack = Stack::start_with(
        &sessions_table(SESSION_SECRET, "3s"),
        "logon = true",
        |config| config.clock = clock.clone(),
    )
    .await;
    let (session, security) = log_on(stack.url(), LOGIN, PASSWORD).await;
    assert_eq!(
        push(stack.url(), &session, &security).await.status,
        200,
        "valid for two seconds at least"
    );
    let (claims, mac) = session["ibs1.".len()..].split_once('.').unwrap();
    let mut forged = claims.to_owned().into_bytes();
    forged[3] ^= 0x01;
    let tampered = format!("ibs1.{}.{mac}", String::from_utf8(forged).unwrap());
    let (_, other_security) = log_on(stack.url(), LOGIN, PASSWORD).await;
    for (session, security) in [
        (tampered.as_str(), security.as_str()),
        (session.as_str(), other_security.as_str()),
    ] {
        push(stack.url(), session, security).await.assert_fault(
            500,
            "Client",
            "XSV-350008 Session has expired or is invalid. Please reconnect.",
        );
    }
    // Until the expiry the token states (whole seconds since the epoch), and not a moment more.
    let claims =
        base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, claims).unwrap();
    let expiry: serde_json::Value = serde_json::from_slice(&claims).unwrap();
    let expiry = std::time::UNIX_EPOCH + Duration::from_secs(expiry["e"].as_u64().unwrap());
    assert!(
        expiry <= std::time::SystemTime::now() + Duration::from_secs(3),
        "a 3 s session"
    );
    // A moment before the expiry, still valid; at the expiry, refused.
    let left = expiry
        .duration_since(clock.now())
        .expect("the session has not expired yet");
    clock.advance(left.saturating_sub(Duration::from_millis(900)));
    assert_eq!(push(stack.url(), &session, &security).await.status, 200);
    clock.advance(Duration::from_millis(900));
    push(stack.url(), &session, &security)
        .await
        .assert_fault(500, "Client", "XSV-350008");
    assert_eq!(stack.campaign.requests().len(), 2);
}

#[tokio::test]
async fn a_legacy_caller_logs_on_at_campaign() {
    // `mc` still in legacy mode: its Logon and its Campaign session pass through; Campaign's
    // session tokens are no caller's, so they need unknown_callers = "legacy".
    let stack = Stack::start(
        "unknown_callers = \"legacy\"",
        "mode = \"legacy\"\nlogon = true",
    )
    .await;
    let (session, security) = log_on(stack.url(), LOGIN, PASSWORD).await;
    assert!(
        session.starts_with("___"),
        "Campaign's own session: {session}"
    );
    assert_eq!(push(stack.url(), &session, &security).await.status, 200);
    let seen = stack.campaign.requests();
    assert_eq!(seen.len(), 2);
    assert!(
        seen[0].text().contains(PASSWORD),
        "the Logon went as it came"
    );
    assert!(seen[1].header("authorization").is_none());
    assert_eq!(seen[1].header("x-session-token"), Some(session.as_str()));
}

#[tokio::test]
async fn canary_sends_its_share_the_ims_way() {
    const SEED: u64 = 25;
    let stack = Stack::start_with("", "mode = \"canary\"\ncanary_percent = 25", |config| {
        config.canary_seed = Some(SEED);
    })
    .await;
    let body = seed_002(&credential());
    for _ in 0..400 {
        assert_eq!(post(stack.url(), body.clone(), &[]).await.status, 200);
    }
    let seen = stack.campaign.requests();
    assert_eq!(seen.len(), 400);
    // The proxy draws from the seeded generator, a draw per request: request i goes the ims
    // way exactly when its draw is under the share.
    let mut draws = fastrand::Rng::with_seed(SEED);
    for (i, request) in seen.iter().enumerate() {
        let ims = draws.f64() * 100.0 < 25.0;
        let bearer = request.header("authorization").is_some();
        let legacy = request.text().contains(&credential());
        assert_eq!((bearer, legacy), (ims, !ims), "request {i}, whole one way");
    }
    let ims = seen
        .iter()
        .filter(|r| r.header("authorization").is_some())
        .count();
    assert!(
        (80..=120).contains(&ims),
        "{ims} of 400: the seed is not a lucky one"
    );
}

#[tokio::test]
async fn allow_from_refuses_other_networks() {
    let elsewhere = Stack::start("", "allow_from = [\"10.20.0.0/16\"]").await;
    post(
        elsewhere.url(),
        seed_002(&credential()),
        &[("x-forwarded-for", "10.20.0.5")],
    )
    .await
    .assert_fault(
        500,
        "Client",
        "Invalid login or password. Connection denied.",
    );
    assert!(
        elsewhere.campaign.requests().is_empty(),
        "X-Forwarded-For is not trusted for this"
    );
    let here = Stack::start("", "allow_from = [\"10.20.0.0/16\", \"127.0.0.0/8\"]").await;
    assert_eq!(
        post(here.url(), seed_002(&credential()), &[]).await.status,
        200
    );
}

#[tokio::test]
async fn logon_without_sessions_is_refused_clearly() {
    // An ims caller not declared `logon = true` calls Logon on a proxy without [sessions].
    let (ims, campaign) = stand_ins().await;
    let proxy = Proxy::start(&config_text(&ims.url(), &campaign.url(), "", "")).await;
    post(proxy.addr, logon_body(LOGIN, PASSWORD), &[])
        .await
        .assert_fault(500, "Server", "Logon is not enabled on this proxy.");
    assert!(campaign.requests().is_empty());
}

#[tokio::test]
async fn a_logoff_ends_the_session_and_a_copy_needs_its_security_token() {
    let stack = logon_stack(SESSION_SECRET, "1h").await;
    let (session, security) = log_on(stack.url(), LOGIN, PASSWORD).await;
    assert_eq!(push(stack.url(), &session, &security).await.status, 200);
    // In a header alone, without the security token: refused (Campaign asks for it too).
    let bare = seed_002("");
    post(stack.url(), bare, &[("x-session-token", &session)])
        .await
        .assert_fault(500, "Client", "XSV-350008");
    // Logoff, then the same session is refused here.
    let logoff = post(
        stack.url(),
        session_call("Logoff", "xtk:session", &session, &security),
        &[],
    )
    .await;
    assert_eq!(logoff.status, 200, "{}", logoff.body);
    push(stack.url(), &session, &security)
        .await
        .assert_fault(500, "Client", "XSV-350008");
    assert_eq!(
        stack.campaign.requests().len(),
        1,
        "only the call before the Logoff reached Campaign"
    );
}
