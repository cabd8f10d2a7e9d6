//! Campaign's other pages (issue "Real clients", point 4): the WSDLs, the pings of acc-js-sdk
//! and the upload page carry the session credential in a cookie, a header or the query. Each
//! test asserts on what reached the stand-in Campaign.

use crate::support::*;
use bytes::Bytes;
use imsbridge::demo::Recorded;

const LEGACY_CREDENTIAL: &str = "crm/legacy-password";

const PAGES: [(&str, &str); 4] = [
    ("GET", "/nl/jsp/schemawsdl.jsp?schema=nms:rtEvent"),
    ("GET", "/nl/jsp/ping.jsp"),
    ("GET", "/nl/jsp/mcPing.jsp"),
    ("POST", "/nl/jsp/uploadFile.jsp"),
];

/// A request to `target` with `carrier` (`cookie`, `header` or `query`) holding `credential`.
fn page_request(
    method: &str,
    target: &str,
    carrier: &str,
    credential: &str,
) -> http::Request<http_body_util::Full<Bytes>> {
    let encoded: String = form_urlencoded::byte_serialize(credential.as_bytes()).collect();
    let target = match carrier {
        "query" if target.contains('?') => format!("{target}&__sessiontoken={encoded}"),
        "query" => format!("{target}?__sessiontoken={encoded}"),
        _ => target.to_owned(),
    };
    let mut request = http::Request::builder()
        .method(method)
        .uri(target)
        .header("host", "campaign.example.com")
        .header("cookie", "theme=dark");
    match carrier {
        "cookie" => request = request.header("cookie", format!("__sessiontoken={credential}")),
        "header" => request = request.header("x-session-token", credential),
        _ => {}
    }
    let body = match method {
        "POST" => Bytes::from_static(b"--boundary\r\nfile content\r\n--boundary--\r\n"),
        _ => Bytes::new(),
    };
    request
        .header("content-length", body.len())
        .body(http_body_util::Full::new(body))
        .unwrap()
}

/// No copy of the legacy credential in what Campaign got, whatever the carrier.
fn holds_no_credential(seen: &Recorded, credential: &str) {
    let everything = format!("{:?} {}", seen.headers, seen.uri);
    assert!(!everything.contains(credential), "{everything}");
    assert!(
        !everything.to_lowercase().contains("sessiontoken"),
        "{everything}"
    );
    assert!(seen.headers.get("x-session-token").is_none());
}

#[tokio::test]
async fn each_page_takes_the_credential_from_each_carrier_and_campaign_gets_the_bearer() {
    let stack = Stack::default().await;
    let credential = credential();
    for (method, target) in PAGES {
        for carrier in ["cookie", "header", "query"] {
            let request = page_request(method, target, carrier, &credential);
            let sent_body = request.body().clone();
            let _ = send(stack.url(), request).await;
            let seen = stack.campaign.requests();
            let seen = seen.last().expect("reached Campaign");
            let path = target.split('?').next().unwrap();
            assert_eq!(seen.uri.path(), path, "{carrier}");
            holds_no_credential(seen, &credential);
            let bearer = seen.headers["authorization"].to_str().unwrap();
            assert!(bearer.starts_with("Bearer "), "{carrier} on {target}");
            // The rest as it came: the other cookie, the query, the body.
            assert_eq!(
                seen.headers["cookie"], "theme=dark",
                "{carrier} on {target}"
            );
            if let Some(query) = target.split_once('?').map(|(_, q)| q) {
                assert_eq!(seen.uri.query(), Some(query));
            }
            use http_body::Body;
            let sent = sent_body.size_hint().exact().unwrap();
            assert_eq!(seen.body_len, sent, "{carrier} on {target}");
        }
    }
}

#[tokio::test]
async fn a_page_without_a_good_credential_is_refused_before_campaign() {
    let stack = Stack::default().await;
    for (method, target) in PAGES {
        // A wrong password: the fault of a refused credential.
        let request = page_request(method, target, "cookie", &format!("{LOGIN}/wrong"));
        send(stack.url(), request)
            .await
            .assert_fault(500, "Client", "Invalid login or password");
        // None at all: 401 (no `[wsdl] profile`).
        let request = page_request(method, target, "none", "");
        send(stack.url(), request)
            .await
            .assert_fault(401, "Client", "needs a session token");
    }
    assert!(stack.campaign.requests().is_empty());
}

#[tokio::test]
async fn a_wsdl_without_a_credential_takes_the_token_of_the_wsdl_profile() {
    let (wsdl, ping) = (PAGES[0].1, PAGES[1].1);
    let stack = Stack::start_with("", "", |config| config.wsdl.profile = Some(0)).await;
    let _ = send(stack.url(), page_request("GET", wsdl, "none", "")).await;
    let seen = stack.campaign.requests();
    assert_eq!(seen.len(), 1);
    assert!(
        seen[0].headers["authorization"]
            .to_str()
            .unwrap()
            .starts_with("Bearer ")
    );
    // The WSDL only: any other page still needs a credential.
    send(stack.url(), page_request("GET", ping, "none", ""))
        .await
        .assert_fault(401, "Client", "needs a session token");
    // From an address outside `[wsdl] allow_from`: 401.
    let stack = Stack::start_with("", "", |config| {
        config.wsdl.profile = Some(0);
        config.wsdl.allow_from = vec!["10.0.0.0/8".parse().unwrap()];
    })
    .await;
    send(stack.url(), page_request("GET", wsdl, "none", ""))
        .await
        .assert_fault(401, "Client", "needs a session token");
    assert!(stack.campaign.requests().is_empty());
}

#[tokio::test]
async fn no_path_lets_an_ims_callers_credential_out_in_legacy_mode() {
    // Before: with `unknown_callers = "legacy"`, a path outside `server.paths` passed through
    // as it came, the `ims` caller's password in its cookie.
    let stack = Stack::start("unknown_callers = \"legacy\"", "").await;
    let credential = credential();
    for carrier in ["cookie", "header", "query"] {
        let request = page_request("GET", "/nl/jsp/logon.jsp?x=1", carrier, &credential);
        let _ = send(stack.url(), request).await;
        let seen = stack.campaign.requests();
        let seen = seen.last().unwrap();
        assert_eq!(seen.uri.path(), "/nl/jsp/logon.jsp");
        holds_no_credential(seen, &credential);
        assert!(seen.headers.get("authorization").is_none());
    }
    // A legacy caller's passes through: Campaign checks it, as without imsbridge.
    let request = page_request("GET", "/nl/jsp/logon.jsp", "cookie", LEGACY_CREDENTIAL);
    let _ = send(stack.url(), request).await;
    let seen = stack.campaign.requests();
    let cookies = format!("{:?}", seen.last().unwrap().headers.get_all("cookie"));
    assert!(cookies.contains(LEGACY_CREDENTIAL), "{cookies}");
}

#[tokio::test]
async fn a_wsdl_names_the_proxy_when_public_url_is_set() {
    let wsdl = PAGES[0].1;
    let address = |body: &str| {
        let at = body
            .find("<soap:address location=\"")
            .expect("a soap:address")
            + 24;
        body[at..at + body[at..].find('"').unwrap()].to_owned()
    };
    // Without it, Campaign's own address: clients that follow it go around the proxy.
    let stack = Stack::default().await;
    let answer = send(
        stack.url(),
        page_request("GET", wsdl, "cookie", &credential()),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let campaign = stack.campaign.url();
    assert_eq!(
        address(&answer.body),
        format!("{campaign}/nl/jsp/soaprouter.jsp")
    );
    // With it, the proxy's; the rest of the WSDL as Campaign wrote it.
    let stack = Stack::start_with("", "", |config| {
        config.server.public_url = Some("https://imsbridge.example.com".into());
        config.wsdl.profile = Some(0);
    })
    .await;
    let answer = send(stack.url(), page_request("GET", wsdl, "none", "")).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(
        address(&answer.body),
        "https://imsbridge.example.com/nl/jsp/soaprouter.jsp"
    );
    let campaign = stack.campaign.url();
    let host = campaign.trim_start_matches("http://");
    let expected = imsbridge::demo::RT_EVENT_WSDL.replace(
        "SOAP_ROUTER_URL",
        "https://imsbridge.example.com/nl/jsp/soaprouter.jsp",
    );
    assert_eq!(answer.body, expected, "Campaign at {host}");
    assert_eq!(
        answer.headers["content-length"],
        expected.len().to_string().as_str()
    );
}
