//! The data path end to end, over real loopback sockets: a caller, the proxy, and the stand-in
//! IMS and Campaign of `imsbridge::demo`.

use std::sync::Arc;
use std::time::Duration;

use crate::support::*;
use bytes::Bytes;
use http::Request;
use imsbridge::demo::{SEED_002_AFTER, StandInCampaign, StandInIms};

#[tokio::test]
async fn the_seed_002_call_reaches_campaign_with_a_bearer_token_and_an_empty_token() {
    let stack = Stack::default().await;
    let answer = post(
        stack.url(),
        seed_002(&credential()),
        &[
            ("content-type", "application/soap+xml;charset=utf-8"),
            ("soapaction", "\"nms:rtEvent#PushEvent\""),
        ],
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(
        answer.body.contains("<plId"),
        "Campaign's answer comes back: {}",
        answer.body
    );

    let seen = stack.campaign.requests();
    assert_eq!(seen.len(), 1);
    let seen = &seen[0];
    // The body is seed 002's "after" call, byte for byte.
    assert_eq!(seen.text(), SEED_002_AFTER);
    assert_eq!(
        seen.header("content-length"),
        Some(SEED_002_AFTER.len().to_string().as_str())
    );
    let issued = stack.ims.issued();
    assert_eq!(issued.len(), 1);
    assert_eq!(
        seen.header("authorization"),
        Some(format!("Bearer {}", issued[0]).as_str())
    );
    assert_eq!(seen.header("soapaction"), Some("\"nms:rtEvent#PushEvent\""));
    assert_eq!(
        seen.header("content-type"),
        Some("application/soap+xml;charset=utf-8")
    );
    assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(seen.uri.path(), SOAP_PATH);
}

#[tokio::test]
async fn soap_11_unquoted_or_absent_action_interface_urns_and_queries() {
    let stack = Stack::default().await;
    let body = format!(
        r#"<SOAP-ENV:Envelope xmlns:SOAP-ENV="http://schemas.xmlsoap.org/soap/envelope/"><SOAP-ENV:Body><ns:Write xmlns:ns="urn:xtk:persist|xtk:session" SOAP-ENV:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/"><__sessiontoken xsi:type="xsd:string" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">{}</__sessiontoken><domDoc><recipient email="a@b.c"/></domDoc></ns:Write></SOAP-ENV:Body></SOAP-ENV:Envelope>"#,
        credential()
    );
    let expected = body.replace(&credential(), "");
    for headers in [
        vec![("soapaction", "xtk:persist|xtk:session#Write")],
        vec![],
        vec![(
            "content-type",
            "application/soap+xml;charset=UTF-8;action=\"xtk:persist|xtk:session#Write\"",
        )],
    ] {
        let answer = post(stack.url(), body.clone(), &headers).await;
        assert_eq!(answer.status, 200, "{headers:?}: {}", answer.body);
        assert!(
            answer
                .body
                .contains("<WriteResponse xmlns='urn:xtk:persist|xtk:session'"),
            "{}",
            answer.body
        );
    }
    let request =
        Request::post("/nl/jsp/soaprouter.jsp?soapAction=xtk%3Apersist%7Cxtk%3Asession%23Write")
            .header("host", "x")
            .header("content-type", "text/xml")
            .body(http_body_util::Full::new(Bytes::from(body.clone())))
            .unwrap();
    assert_eq!(send(stack.url(), request).await.status, 200);
    let seen = stack.campaign.requests();
    assert_eq!(seen.len(), 4);
    for request in &seen {
        assert_eq!(request.text(), expected);
    }
    assert_eq!(
        seen[3].uri.query(),
        Some("soapAction=xtk%3Apersist%7Cxtk%3Asession%23Write")
    );
}

#[tokio::test]
async fn twenty_megabytes_pass_intact_with_or_without_a_length() {
    let stack = Stack::default().await;
    let body = push_events(&credential(), 20 * 1024 * 1024);
    let cred = credential();
    let at = body
        .windows(cred.len())
        .position(|w| w == cred.as_bytes())
        .unwrap();
    let mut expected = body[..at].to_vec();
    expected.extend_from_slice(&body[at + cred.len()..]);
    let body = Bytes::from(body);

    let answer = post(
        stack.url(),
        body.clone(),
        &[("soapaction", "nms:rtEvent#PushEvents")],
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    // The same body in 64 KiB chunks, without a Content-Length.
    let request = chunked_request(&body, 65536);
    let answer = send(stack.url(), request).await;
    assert_eq!(answer.status, 200, "{}", answer.body);

    let seen = stack.campaign.requests();
    assert_eq!(seen.len(), 2);
    for request in &seen {
        assert_eq!(request.body_len, expected.len() as u64);
        assert_eq!(request.body_sha256, sha256(&expected));
    }
    assert_eq!(
        seen[0].header("content-length"),
        Some(expected.len().to_string().as_str())
    );
    assert_eq!(seen[1].header("content-length"), None);
    assert_eq!(seen[1].header("transfer-encoding"), Some("chunked"));
}

#[tokio::test]
async fn a_chunked_body_split_inside_the_token() {
    let stack = Stack::default().await;
    let body = seed_002(&credential());
    let token_at = body.find(&credential()).unwrap();
    for cuts in [
        vec![token_at + 3],
        vec![token_at - 5, token_at + 1, token_at + 12],
        vec![body.find("</urn:session").unwrap() + 4],
    ] {
        let mut pieces: Vec<Vec<u8>> = vec![
            format!(
                "POST {SOAP_PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: text/xml\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
            )
            .into_bytes(),
        ];
        let mut at = 0;
        for cut in cuts.iter().copied().chain([body.len()]) {
            let chunk = &body[at..cut];
            pieces.push(format!("{:x}\r\n{chunk}\r\n", chunk.len()).into_bytes());
            at = cut;
        }
        pieces.push(b"0\r\n\r\n".to_vec());
        let refs: Vec<&[u8]> = pieces.iter().map(Vec::as_slice).collect();
        let answer = raw_exchange(stack.url(), &refs).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{cuts:?}: {answer}");
    }
    let seen = stack.campaign.requests();
    assert_eq!(seen.len(), 3);
    for request in seen {
        assert_eq!(request.text(), SEED_002_AFTER);
    }
}

#[tokio::test]
async fn refused_credentials_get_a_fault_and_nothing_reaches_campaign() {
    let stack = Stack::default().await;
    let cases = [
        (
            seed_002("nobody/password"),
            "Invalid login or password. Connection denied.",
        ),
        (
            seed_002(&format!("{LOGIN}/wrong-password")),
            "Invalid login or password. Connection denied.",
        ),
        (
            seed_002(&format!("{LOGIN}/")),
            "Invalid login or password. Connection denied.",
        ),
        (
            seed_002("a-campaign-session-token"),
            "Invalid login or password. Connection denied.",
        ),
        (
            seed_002(""),
            "XSV-350008 Session has expired or is invalid. Please reconnect.",
        ),
        (
            seed_002("").replace(
                "<urn:sessiontoken></urn:sessiontoken>",
                "<urn:sessiontoken/>",
            ),
            "XSV-350008",
        ),
    ];
    for (body, detail) in &cases {
        let answer = post(
            stack.url(),
            body.clone(),
            &[("soapaction", "nms:rtEvent#PushEvent")],
        )
        .await;
        answer.assert_fault(500, "Client", detail);
        assert!(
            answer
                .body
                .contains("Error while executing the method 'PushEvent' of service 'nms:rtEvent'."),
            "{}",
            answer.body
        );
    }
    // Without the token element, the first parameter is the event itself: markup where the
    // credential is read (one credential per request).
    post(
        stack.url(),
        seed_002("").replace("<urn:sessiontoken></urn:sessiontoken>", ""),
        &[],
    )
    .await
    .assert_fault(500, "Client", "markup inside the first parameter");
    // With the first parameter empty, the cookie and header copies are the credential (as
    // Campaign reads them): a wrong password there is refused as well.
    let answer = post(
        stack.url(),
        seed_002(""),
        &[
            ("cookie", &format!("__sessiontoken={LOGIN}/wrong-password")),
            ("x-session-token", &format!("{LOGIN}/wrong-password")),
        ],
    )
    .await;
    answer.assert_fault(500, "Client", "Invalid login or password");
    assert!(stack.campaign.requests().is_empty());
    assert_eq!(
        stack.campaign.connections(),
        0,
        "not even a connection was opened"
    );
}

#[tokio::test]
async fn a_credential_in_the_cookie_or_header_copy_is_read_when_the_parameter_is_empty() {
    let stack = Stack::default().await;
    for header in ["cookie", "x-session-token"] {
        let value = match header {
            "cookie" => format!("lang=en; __sessiontoken={}", credential()),
            _ => credential(),
        };
        let answer = post(stack.url(), seed_002(""), &[(header, value.as_str())]).await;
        assert_eq!(answer.status, 200, "{header}: {}", answer.body);
    }
    let seen = stack.campaign.requests();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].header("cookie"), Some("lang=en"));
    assert_eq!(seen[1].header("x-session-token"), None);
    assert!(seen.iter().all(|r| {
        r.header("authorization")
            .is_some_and(|a| a.starts_with("Bearer "))
    }));
}

#[tokio::test]
async fn bad_requests_get_a_client_fault_and_nothing_reaches_campaign() {
    let stack = Stack::default().await;
    let big_header = format!(
        r#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Header>{}</s:Header><s:Body><m:X xmlns:m="urn:a"><t>{}</t></m:X></s:Body></s:Envelope>"#,
        "<pad/>".repeat(12_000),
        credential()
    );
    let cases = [
        (
            "this is not XML".to_owned(),
            "body is not well-formed XML (text before the root element)",
        ),
        ("<a><b></c></a>".to_owned(), "not a SOAP 1.1 or 1.2 Envelope"),
        (
            format!(r#"<!DOCTYPE s [<!ENTITY x "{}">]>{}"#, "y".repeat(10), seed_002("&x;")),
            "DOCTYPE and entity declarations are refused",
        ),
        (
            r#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Header/></s:Envelope>"#.to_owned(),
            "envelope has no SOAP Body",
        ),
        (big_header, "the session token is too far into the body"),
        (seed_002(&format!("{LOGIN}/{PASSWORD}&amp")), "not well-formed XML"),
    ];
    for (body, detail) in cases {
        let answer = post(stack.url(), body, &[]).await;
        answer.assert_fault(500, "Client", detail);
    }
    let utf16: Vec<u8> = [0xFF, 0xFE]
        .into_iter()
        .chain(seed_002("x/y").encode_utf16().flat_map(u16::to_le_bytes))
        .collect();
    post(stack.url(), utf16, &[]).await.assert_fault(
        500,
        "Client",
        "the declared encoding is not supported",
    );
    assert!(stack.campaign.requests().is_empty());
}

#[tokio::test]
async fn a_body_that_is_not_xml_is_named_so_and_its_bytes_are_counted() {
    let stack = Stack::default().await;
    post(stack.url(), "hello", &[]).await.assert_fault(
        500,
        "Client",
        "Invalid SOAP request: body is not well-formed XML (text before the root element).",
    );
    // Counted though refused: the log line and the metrics say what came.
    let metrics = get(stack.proxy.admin, "/metrics").await.body;
    assert_eq!(
        metric(&metrics, "imsbridge_request_bytes_total"),
        Some(5.0),
        "{metrics}"
    );
    assert!(stack.campaign.requests().is_empty());
}

#[tokio::test]
async fn bodies_over_the_limit_get_a_fault() {
    let stack = Stack::start("", "").await;
    drop(stack.proxy);
    let small = Proxy::start(
        &config_text(&stack.ims.url(), &stack.campaign.url(), "", "")
            .replace("[server]", "[server]\nmax_body_bytes = 4096"),
    )
    .await;
    let body = Bytes::from(push_events(&credential(), 10_000));
    // Declared too large: refused before it is read.
    post(small.addr, body.clone(), &[])
        .await
        .assert_fault(500, "Client", "too large");
    // Chunked: refused once the count passes the limit, while streaming.
    let request = chunked_request(&body, 1000);
    send(small.addr, request)
        .await
        .assert_fault(500, "Client", "too large");
    // Under the limit, fine.
    let ok = post(small.addr, push_events(&credential(), 3000), &[]).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    let complete: Vec<_> = stack.campaign.requests();
    assert_eq!(complete.len(), 1, "only the small body was received whole");
}

#[tokio::test]
async fn a_thousand_concurrent_requests_on_a_cold_start_cause_one_token_request() {
    let (ims, campaign) = stand_ins().await;
    // IMS is slow: every request below arrives before the first token does.
    ims.set_delay(Duration::from_millis(1500));
    let proxy = Proxy::start(&config_text(&ims.url(), &campaign.url(), "", "")).await;
    let body = Bytes::from(seed_002(&credential()));
    let requests: Vec<_> = (0..1000)
        .map(|_| {
            let body = body.clone();
            let addr = proxy.addr;
            tokio::spawn(async move { post(addr, body, &[]).await.status })
        })
        .collect();
    for request in requests {
        assert_eq!(request.await.unwrap(), 200);
    }
    assert_eq!(ims.token_requests(), 1);
    let seen = campaign.requests();
    assert_eq!(seen.len(), 1000);
    let bearer = format!("Bearer {}", ims.issued()[0]);
    assert!(
        seen.iter()
            .all(|r| r.header("authorization") == Some(bearer.as_str()))
    );
}

#[tokio::test]
async fn every_copy_of_the_credential_goes_and_other_headers_stay() {
    let stack = Stack::default().await;
    let body = format!(
        r#"<?xml version="1.0"?><SOAP-ENV:Envelope xmlns:SOAP-ENV="http://schemas.xmlsoap.org/soap/envelope/"><SOAP-ENV:Header><Cookie>__sessiontoken={c}</Cookie><X-Security-Token>security-token-77</X-Security-Token></SOAP-ENV:Header><SOAP-ENV:Body><m:PushEvent xmlns:m="urn:nms:rtEvent"><sessiontoken xsi:type="xsd:string">{c}</sessiontoken><domEvent><rtEvent/></domEvent></m:PushEvent></SOAP-ENV:Body></SOAP-ENV:Envelope>"#,
        c = credential()
    );
    let answer = post(
        stack.url(),
        body.clone(),
        &[
            (
                "cookie",
                &format!("JSESSIONID=abc; __sessiontoken={}; lang=en", credential()),
            ),
            ("x-session-token", &credential()),
            ("x-security-token", "security-token-77"),
            ("authorization", "Basic bWM6cGFzc3dvcmQ="),
            ("x-forwarded-for", "203.0.113.9"),
            ("x-request-id", "req-1"),
        ],
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let seen = &stack.campaign.requests()[0];
    let expected = body
        .replace(&format!("__sessiontoken={}", credential()), "")
        .replace("security-token-77", "")
        .replace(&credential(), "");
    assert_eq!(seen.text(), expected);
    assert!(!seen.text().contains(PASSWORD));
    assert_eq!(seen.header("cookie"), Some("JSESSIONID=abc; lang=en"));
    assert_eq!(seen.header("x-session-token"), None);
    assert_eq!(seen.header("x-security-token"), None);
    assert!(
        seen.header("authorization")
            .unwrap()
            .starts_with("Bearer ey")
    );
    assert_eq!(
        seen.header("x-forwarded-for"),
        Some("203.0.113.9, 127.0.0.1")
    );
    assert_eq!(seen.header("x-request-id"), Some("req-1"));
    let headers = format!("{:?}", seen.headers);
    assert!(!headers.contains(PASSWORD), "{headers}");
}

#[tokio::test]
async fn hop_by_hop_headers_are_not_forwarded() {
    let stack = Stack::default().await;
    let body = seed_002(&credential());
    let head = format!(
        "POST {SOAP_PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: text/xml\r\nContent-Length: {}\r\nConnection: close, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nProxy-Authorization: Basic eA==\r\nX-End-To-End: 2\r\n\r\n",
        body.len()
    );
    let answer = raw_exchange(stack.url(), &[head.as_bytes(), body.as_bytes()]).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let seen = &stack.campaign.requests()[0];
    for gone in ["x-hop", "keep-alive", "te", "proxy-authorization"] {
        assert_eq!(seen.header(gone), None, "{gone}");
    }
    assert_ne!(seen.header("connection"), Some("close, X-Hop"));
    assert_eq!(seen.header("x-end-to-end"), Some("2"));
}

#[tokio::test]
async fn legacy_callers_are_forwarded_unchanged() {
    let stack = Stack::default().await;
    let body = seed_002("crm/legacy-or-not-we-do-not-check");
    let answer = post(
        stack.url(),
        body.clone(),
        &[
            (
                "cookie",
                "a=1; __sessiontoken=crm/legacy-or-not-we-do-not-check",
            ),
            ("authorization", "Basic eA=="),
        ],
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let seen = &stack.campaign.requests()[0];
    assert_eq!(seen.text(), body);
    assert_eq!(seen.header("authorization"), Some("Basic eA=="));
    assert_eq!(
        seen.header("cookie"),
        Some("a=1; __sessiontoken=crm/legacy-or-not-we-do-not-check")
    );
    assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(stack.ims.token_requests(), 1, "only the start-up fetch");
}

#[tokio::test]
async fn unknown_callers_legacy_forwards_what_no_caller_owns() {
    let stack = Stack::start("unknown_callers = \"legacy\"", "").await;
    for credential in ["a-campaign-session-token", "someone/else", ""] {
        let body = seed_002(credential);
        let answer = post(stack.url(), body.clone(), &[]).await;
        let seen = stack.campaign.requests();
        assert_eq!(
            seen.last().unwrap().text(),
            body,
            "{credential:?} forwarded unchanged"
        );
        assert!(seen.last().unwrap().header("authorization").is_none());
        if !credential.is_empty() {
            assert_eq!(answer.status, 200);
        }
    }
    // The owned login with a wrong password is still refused: it is ours.
    post(stack.url(), seed_002(&format!("{LOGIN}/nope")), &[])
        .await
        .assert_fault(500, "Client", "Invalid login");
    // Other paths and methods pass through too, as Campaign would see them.
    let answer = get(stack.url(), "/nl/jsp/logon.jsp?x=1").await;
    assert_eq!(answer.status, 404, "Campaign's own answer");
    let seen = stack.campaign.requests();
    assert_eq!(seen.last().unwrap().uri.path(), "/nl/jsp/logon.jsp");
    assert_eq!(seen.len(), 4);
}

#[tokio::test]
async fn other_paths_and_methods_are_refused_in_reject_mode() {
    let stack = Stack::default().await;
    // A path that is no SOAP router is no SOAP call: 404, whatever `fault_status`.
    let answer = get(stack.url(), "/nl/jsp/logon.jsp").await;
    answer.assert_fault(404, "Client", "No SOAP router at this path.");
    // Every other fault is a 500, as SOAP 1.1 and Campaign answer them (`fault_status =
    // "soap"`, the default).
    let answer = get(stack.url(), SOAP_PATH).await;
    answer.assert_fault(500, "Client", "only accepts POST");
    assert!(!answer.headers.contains_key("allow"));
    assert!(stack.campaign.requests().is_empty());
}

#[tokio::test]
async fn with_fault_status_http_faults_say_what_happened() {
    let stack = Stack::start_with("", "", |config| {
        config.server.fault_status = imsbridge::config::FaultStatus::Http;
        config.server.max_body_bytes = 4096;
    })
    .await;
    let answer = get(stack.url(), SOAP_PATH).await;
    answer.assert_fault(405, "Client", "only accepts POST");
    assert_eq!(answer.headers.get("allow").unwrap(), "POST");
    post(stack.url(), "hello", &[])
        .await
        .assert_fault(400, "Client", "not well-formed XML");
    post(stack.url(), push_events(&credential(), 10_000), &[])
        .await
        .assert_fault(413, "Client", "too large");
    get(stack.url(), "/nl/jsp/logon.jsp").await.assert_fault(
        404,
        "Client",
        "No SOAP router at this path.",
    );
    // Refusals of the credential are 500, in either mode, as Campaign's are.
    post(stack.url(), seed_002(&format!("{LOGIN}/wrong")), &[])
        .await
        .assert_fault(500, "Client", "Invalid login or password");
    assert!(stack.campaign.requests().is_empty());
}

#[tokio::test]
async fn campaign_unreachable_or_slow() {
    let ims = StandInIms::start().await.unwrap();
    ims.add_client(CLIENT_ID, CLIENT_SECRET);
    let (closed_url, _refusing) = closed_port_url();
    let proxy = Proxy::start(&config_text(&ims.url(), &closed_url, "", "")).await;
    post(proxy.addr, seed_002(&credential()), &[])
        .await
        .assert_fault(500, "Server", "could not be reached");
    proxy.stop().await;

    let campaign = StandInCampaign::start(Some(ims.token_check()))
        .await
        .unwrap();
    campaign.set_delay(Duration::from_secs(3));
    let text = config_text(&ims.url(), &campaign.url(), "", "")
        .replace("timeout = \"5s\"\nconnect", "timeout = \"300ms\"\nconnect");
    let proxy = Proxy::start(&text).await;
    post(proxy.addr, seed_002(&credential()), &[])
        .await
        .assert_fault(500, "Server", "did not answer in time");
    // The pool recovers: once Campaign is quick again, calls go through.
    campaign.set_delay(Duration::ZERO);
    assert_eq!(
        post(proxy.addr, seed_002(&credential()), &[]).await.status,
        200
    );
}

#[tokio::test]
async fn no_token_means_a_server_fault_and_readyz_names_the_profile() {
    let ims = StandInIms::start().await.unwrap();
    ims.add_client(CLIENT_ID, "another-secret");
    let campaign = StandInCampaign::start(Some(ims.token_check()))
        .await
        .unwrap();
    let proxy = Proxy::start(&config_text(&ims.url(), &campaign.url(), "", "")).await;
    let answer = post(proxy.addr, seed_002(&credential()), &[]).await;
    answer.assert_fault(500, "Server", "not available");
    assert!(
        !answer.body.contains("invalid_client"),
        "IMS details stay in the logs"
    );
    assert!(campaign.requests().is_empty());

    let health = get(proxy.admin, "/healthz").await;
    assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));
    let ready = get(proxy.admin, "/readyz").await;
    assert_eq!(ready.status, 503);
    assert!(
        ready.body.contains("profile messagecenter: not ready"),
        "{}",
        ready.body
    );
    assert!(
        ready
            .body
            .contains("invalid_client: invalid client_secret parameter"),
        "{}",
        ready.body
    );
    assert!(!ready.body.contains(CLIENT_SECRET));
}

#[tokio::test]
async fn readyz_is_ready_once_every_profile_has_a_token() {
    let stack = Stack::default().await;
    // The first request waits for the start-up fetch.
    assert_eq!(
        post(stack.url(), seed_002(&credential()), &[]).await.status,
        200
    );
    let ready = get(stack.proxy.admin, "/readyz").await;
    assert_eq!(ready.status, 200, "{}", ready.body);
    assert!(
        ready
            .body
            .starts_with("ready\nprofile messagecenter: token valid for 86"),
        "{}",
        ready.body
    );
    assert_eq!(get(stack.proxy.admin, "/metrics-not-yet").await.status, 404);
}

#[tokio::test]
async fn http2_callers_are_served() {
    let stack = Stack::default().await;
    let stream = tokio::net::TcpStream::connect(stack.url()).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    let request = Request::post(format!("http://campaign.example.com{SOAP_PATH}"))
        .header("content-type", "application/soap+xml;charset=utf-8")
        .header("cookie", "a=1")
        .header("cookie", format!("__sessiontoken={}", credential()))
        .body(http_body_util::Full::new(Bytes::from(seed_002(
            &credential(),
        ))))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let seen = &stack.campaign.requests()[0];
    assert_eq!(seen.text(), SEED_002_AFTER);
    assert_eq!(seen.header("cookie"), Some("a=1"));
    assert_eq!(
        seen.header("host"),
        Some(stack.campaign.addr().to_string().as_str())
    );
}

/// A CA made here, in PEM, and a TLS acceptor for `127.0.0.1` with a certificate it signed.
fn private_ca() -> (String, tokio_rustls::TlsAcceptor) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "imsbridge test CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let server_key = rcgen::KeyPair::generate().unwrap();
    let server_cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&server_key, &ca)
        .unwrap();
    let server_config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![server_cert.der().clone()],
        rustls_pki_types::PrivateKeyDer::Pkcs8(server_key.serialize_der().into()),
    )
    .unwrap();
    (
        ca.pem(),
        tokio_rustls::TlsAcceptor::from(Arc::new(server_config)),
    )
}

#[tokio::test]
async fn campaign_over_tls_with_a_private_ca() {
    let (ca_pem, acceptor) = private_ca();
    let ims = StandInIms::start().await.unwrap();
    ims.add_client(CLIENT_ID, CLIENT_SECRET);
    let campaign = StandInCampaign::start_tls(Some(ims.token_check()), acceptor)
        .await
        .unwrap();
    assert!(campaign.url().starts_with("https://127.0.0.1:"));
    let dir = std::env::temp_dir().join(format!("imsbridge-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("ca.pem"), ca_pem).unwrap();

    // Without the CA, the certificate is refused: a Server fault.
    let untrusted = Proxy::start(&config_text(&ims.url(), &campaign.url(), "", "")).await;
    post(untrusted.addr, seed_002(&credential()), &[])
        .await
        .assert_fault(500, "Server", "could not be reached");
    assert!(campaign.requests().is_empty());

    let text = config_text(&ims.url(), &campaign.url(), "", "").replace(
        "[upstream]",
        &format!("[upstream]\nca_file = \"{}\"", dir.join("ca.pem").display()),
    );
    let trusted = Proxy::start(&text).await;
    for _ in 0..3 {
        let answer = post(trusted.addr, seed_002(&credential()), &[]).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
    }
    assert_eq!(campaign.requests().len(), 3);
    assert_eq!(campaign.requests()[0].text(), SEED_002_AFTER);
    assert_eq!(
        campaign.connections(),
        2,
        "one refused handshake, then one pooled connection for three calls"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn ims_over_tls_with_a_private_ca() {
    // IMS as a TLS-inspecting corporate proxy shows it: signed by a CA of the company's own.
    let (ca_pem, acceptor) = private_ca();
    let ims = StandInIms::start_tls(acceptor).await.unwrap();
    ims.add_client(CLIENT_ID, CLIENT_SECRET);
    assert!(ims.url().starts_with("https://127.0.0.1:"));
    let campaign = StandInCampaign::start(Some(ims.token_check()))
        .await
        .unwrap();
    let dir = std::env::temp_dir().join(format!("imsbridge-ims-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("ca.pem"), ca_pem).unwrap();

    // Without the CA: no token, a Server fault, nothing sent.
    let untrusted = Proxy::start(&config_text(&ims.url(), &campaign.url(), "", "")).await;
    post(untrusted.addr, seed_002(&credential()), &[])
        .await
        .assert_fault(500, "Server", "not available");
    assert!(campaign.requests().is_empty());
    assert_eq!(
        ims.token_requests(),
        0,
        "no request got through the handshake"
    );

    let text = config_text(&ims.url(), &campaign.url(), "", "").replace(
        "[ims]",
        &format!("[ims]\nca_file = \"{}\"", dir.join("ca.pem").display()),
    );
    let trusted = Proxy::start(&text).await;
    let answer = post(trusted.addr, seed_002(&credential()), &[]).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(ims.token_requests(), 1);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn expect_100_continue_is_answered_here_and_not_forwarded() {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    let stack = Stack::default().await;
    let body = push_events(&credential(), 5000);
    let head = format!(
        "POST {SOAP_PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: text/xml\r\nContent-Length: {}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let stream = tokio::net::TcpStream::connect(stack.url()).await.unwrap();
    let mut stream = BufReader::new(stream);
    stream.get_mut().write_all(head.as_bytes()).await.unwrap();
    // As curl does: wait for the interim answer before sending the body.
    let mut line = String::new();
    stream.read_line(&mut line).await.unwrap();
    assert_eq!(line, "HTTP/1.1 100 Continue\r\n");
    stream.read_line(&mut line).await.unwrap();
    stream.get_mut().write_all(&body).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let seen = &stack.campaign.requests()[0];
    assert_eq!(seen.header("expect"), None);
    assert_eq!(seen.body_len as usize, body.len() - credential().len());
}

/// `text` in a single-byte charset (ISO-8859-1, ISO-8859-15 or windows-1252 by `label`).
fn single_byte(text: &str, label: &str) -> Vec<u8> {
    text.chars()
        .map(|c| match (c, label) {
            ('€', "windows-1252") => 0x80,
            ('€', "ISO-8859-15") => 0xA4,
            _ => u8::try_from(u32::from(c)).expect("a Latin-1 character"),
        })
        .collect()
}

#[tokio::test]
async fn latin1_envelopes_with_an_accented_password_go_through_byte_for_byte() {
    let caller = |name: &str, password: &str| {
        format!(
            "\n[[callers]]\nname = \"{name}\"\nlogin = \"{name}\"\npassword = \"{}\"\nprofile = \"messagecenter\"\n",
            cheap_hash(password)
        )
    };
    let extra = caller("crème", "pässwörd-é") + &caller("euro", "prix-10€");
    let stack = Stack::start("", &extra).await;
    let cases = [
        ("ISO-8859-1", "crème/pässwörd-é"),
        ("ISO-8859-15", "crème/pässwörd-é"),
        ("windows-1252", "crème/pässwörd-é"),
        ("ISO-8859-15", "euro/prix-10€"),
        ("windows-1252", "euro/prix-10€"),
    ];
    for (label, credential) in cases {
        // Declared in the XML declaration, with the same charset in the Content-Type or none;
        // accented text elsewhere in the body too.
        let text = seed_002(credential)
            .replacen("encoding=\"utf-8\"", &format!("encoding=\"{label}\""), 1)
            .replace("name@domain.com", "café@domain.com");
        let sent = single_byte(&text, label);
        for content_type in [format!("text/xml; charset={label}"), "text/xml".to_owned()] {
            let answer = post(
                stack.url(),
                sent.clone(),
                &[("content-type", &content_type)],
            )
            .await;
            assert_eq!(answer.status, 200, "{label} {credential}: {}", answer.body);
            let seen = stack.campaign.requests();
            let upstream = &seen.last().unwrap().body;
            // What Campaign got is what was sent, the token emptied, every other byte as it came.
            let expected = single_byte(&text.replace(credential, ""), label);
            assert_eq!(&upstream[..], &expected[..], "{label} {credential}");
        }
    }
    // A charset that the declaration contradicts, and UTF-16: refused, nothing forwarded.
    let before = stack.campaign.requests().len();
    let text =
        seed_002("crème/pässwörd-é").replacen("encoding=\"utf-8\"", "encoding=\"ISO-8859-1\"", 1);
    post(
        stack.url(),
        single_byte(&text, "ISO-8859-1"),
        &[("content-type", "text/xml; charset=utf-8")],
    )
    .await
    .assert_fault(
        500,
        "Client",
        "the XML declaration and the Content-Type charset disagree",
    );
    let utf16: Vec<u8> = seed_002(&credential())
        .replacen("encoding=\"utf-8\"", "encoding=\"UTF-16\"", 1)
        .encode_utf16()
        .flat_map(u16::to_le_bytes)
        .collect();
    for body in [utf16.clone(), [&[0xFF, 0xFE][..], &utf16].concat()] {
        post(stack.url(), body, &[("content-type", "text/xml")])
            .await
            .assert_fault(500, "Client", "the declared encoding is not supported");
    }
    post(
        stack.url(),
        seed_002(&credential()),
        &[("content-type", "text/xml; charset=UTF-16")],
    )
    .await
    .assert_fault(500, "Client", "the declared encoding is not supported");
    assert_eq!(stack.campaign.requests().len(), before);
}

/// Legacy exporters declare one charset and send another in the Content-Type; Campaign reads the
/// declaration. Between the five charsets read here, the declaration is followed when the
/// credential is ASCII (the body forwarded byte for byte but the emptied token), and refused
/// when it is not; any other disagreement is refused. Nothing refused reaches Campaign.
#[tokio::test]
async fn a_declaration_and_a_charset_that_disagree_are_read_by_the_declaration() {
    let stack = Stack::default().await;
    let legacy = format!("{LEGACY_LOGIN}/legacy-password");
    // The body in the charset it declares: the three single-byte ones, or UTF-8 (US-ASCII's
    // superset, as a body declared US-ASCII is read).
    let encoded = |text: &str, declared: &str| match declared {
        "ISO-8859-1" | "ISO-8859-15" | "windows-1252" => single_byte(text, declared),
        _ => text.as_bytes().to_vec(),
    };
    let declaring = |credential: &str, declared: &str| {
        seed_002(credential)
            .replacen("encoding=\"utf-8\"", &format!("encoding=\"{declared}\""), 1)
            .replace("name@domain.com", "café@domain.com")
            .replace(
                "<soapenv:Header/>",
                "<soapenv:Header><Note>déjà</Note></soapenv:Header>",
            )
    };
    for (declared, charset) in [
        ("ISO-8859-1", "utf-8"),
        ("windows-1252", "ISO-8859-15"),
        ("ISO-8859-15", "US-ASCII"),
        ("UTF-8", "ISO-8859-1"),
        ("UTF-8", "us-ascii"),
        ("US-ASCII", "UTF-8"),
    ] {
        let content_type = format!("text/xml; charset={charset}");
        let headers = [("content-type", content_type.as_str())];
        // An ASCII credential: read by the declaration, forwarded with only the token gone,
        // the ims way and the legacy way.
        for (credential, forwarded) in [
            (credential(), String::new()),
            (legacy.clone(), legacy.clone()),
        ] {
            let text = declaring(&credential, declared);
            let answer = post(stack.url(), encoded(&text, declared), &headers).await;
            assert_eq!(answer.status, 200, "{declared}/{charset}: {}", answer.body);
            let upstream = stack.campaign.requests().last().unwrap().body.clone();
            let expected = encoded(&text.replace(&credential, &forwarded), declared);
            assert_eq!(
                &upstream[..],
                &expected[..],
                "{declared}/{charset} {credential}"
            );
        }
        // A credential holding a non-ASCII byte, in the first parameter or a Header copy:
        // which password was meant depends on which charset is believed.
        let before = stack.campaign.requests().len();
        let accented = "crème/pässwörd-é";
        let in_header = declaring(&credential(), declared).replace(
            "<Note>",
            &format!("<X-Session-Token>{accented}</X-Session-Token><Note>"),
        );
        for text in [declaring(accented, declared), in_header] {
            post(stack.url(), encoded(&text, declared), &headers)
                .await
                .assert_fault(
                    500,
                    "Client",
                    "the XML declaration and the Content-Type charset disagree, and the credential is not ASCII",
                );
        }
        assert_eq!(
            stack.campaign.requests().len(),
            before,
            "{declared}/{charset}"
        );
    }
    // Any other disagreement: UTF-16 declared, or a charset outside the five.
    let before = stack.campaign.requests().len();
    for credential in [credential(), legacy] {
        for (declared, charset) in [
            ("UTF-16", "utf-8"),
            ("ISO-8859-1", "ISO-8859-2"),
            ("UTF-8", "UTF-16"),
            ("ISO-8859-1", "koi8-r"),
        ] {
            let text = declaring(&credential, declared);
            post(
                stack.url(),
                text.into_bytes(),
                &[("content-type", &format!("text/xml; charset={charset}"))],
            )
            .await
            .assert_fault(500, "Client", "the declared encoding is not supported");
        }
    }
    assert_eq!(stack.campaign.requests().len(), before);
}

/// Sends a `body_len`-byte SOAP call whose credential is `credential` on a new connection,
/// the whole body first and only then reading the answer; the answer's status and body, or
/// status 0 and what broke. As curl, it gives up when the body cannot be sent whole.
async fn upload(addr: std::net::SocketAddr, credential: &str, body_len: usize) -> (u16, String) {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
    let body = push_events(credential, body_len);
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST {SOAP_PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: text/xml; charset=utf-8\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let written = match stream.write_all(head.as_bytes()).await {
        Ok(()) => stream.write_all(&body).await,
        Err(error) => Err(error),
    };
    if let Err(error) = written {
        return (0, format!("send failure: {error}"));
    }
    let mut reader = tokio::io::BufReader::new(stream);
    let mut status_line = String::new();
    if reader.read_line(&mut status_line).await.is_err() || status_line.is_empty() {
        return (0, "no answer".into());
    }
    let mut length = 0;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).await.is_err() {
            return (0, "connection reset in the answer's head".into());
        }
        if line == "\r\n" {
            break;
        }
        if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = value.trim().parse().unwrap();
        }
    }
    let mut answer = vec![0; length];
    if reader.read_exact(&mut answer).await.is_err() {
        return (0, "connection reset in the answer's body".into());
    }
    (
        status_line[9..12].parse().unwrap(),
        String::from_utf8_lossy(&answer).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_upload_reads_its_fault_every_time() {
    // Before `server.linger`, the connection was closed on the unread rest of the body: a
    // client still sending got a broken pipe and gave up before reading the answer (`curl:
    // (55) Send failure: Broken pipe`).
    let stack = Stack::default().await;
    for attempt in 0..20 {
        let (status, answer) =
            upload(stack.url(), &format!("{LOGIN}/wrong-password"), 20_000_000).await;
        assert_eq!(status, 500, "attempt {attempt}: {answer}");
        assert!(answer.contains("Invalid login or password"), "{answer}");
    }
    assert!(stack.campaign.requests().is_empty());
}
