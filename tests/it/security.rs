//! Hostile input: one credential per request (issue "Security", first part). Every attack
//! below reached Campaign before the fix (the stand-in recorded it); each test asserts on what
//! reached the stand-in Campaign, not on log text.

use crate::support::*;
use bytes::Bytes;

const OLD_OPERATOR: &str = "oldop/an-operator-imsbridge-refuses";
const LEGACY_CREDENTIAL: &str = "crm/legacy-password";

/// A seed-002 call with `first` in its session token and `header` in its SOAP Header.
fn call(first: &str, header: &str) -> String {
    seed_002(first).replace(
        "<soapenv:Header/>",
        &format!("<soapenv:Header>{header}</soapenv:Header>"),
    )
}

/// A seed-002 call with `first` in its session token, and a SOAP Header naming another
/// operator after its Body.
fn after_the_body(first: &str) -> String {
    seed_002(first).replace(
        "</soapenv:Body>",
        &format!("</soapenv:Body><soapenv:Header><X-Session-Token>{OLD_OPERATOR}</X-Session-Token></soapenv:Header>"),
    )
}

type Headers = Vec<(&'static str, String)>;

/// A request: its body, extra headers, and request target.
struct Attack {
    body: String,
    headers: Headers,
    target: &'static str,
}

/// Sends each attack; each is refused with a Client fault, and nothing reaches Campaign.
async fn refused(stack: &Stack, attacks: &[Attack]) {
    for Attack {
        body,
        headers,
        target: path_query,
    } in attacks
    {
        let mut request = soap_request(body.clone(), &[]);
        for (name, value) in headers {
            request.headers_mut().append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                http::HeaderValue::from_str(value).unwrap(),
            );
        }
        *request.uri_mut() = path_query.parse().unwrap();
        let answer = send(stack.url(), request).await;
        assert!(
            answer.status == 500,
            "{headers:?} {path_query}: {}",
            answer.body
        );
        assert!(
            answer
                .body
                .contains("<faultcode>SOAP-ENV:Client</faultcode>"),
            "{}",
            answer.body
        );
    }
    let seen = stack.campaign.requests();
    assert!(
        seen.is_empty(),
        "reached Campaign: {:?}",
        seen.iter()
            .map(imsbridge::demo::Recorded::text)
            .collect::<Vec<_>>()
    );
}

/// The attacks of the issue, each with a credential imsbridge routes on and another that
/// Campaign could authenticate on.
fn attacks(routed: &str) -> Vec<Attack> {
    let cookie = |value: &str| ("cookie", value.to_owned());
    let mut list: Vec<(String, Headers, &'static str)> = vec![
        // Empty first parameter, one credential in the header, another in the cookie.
        (
            seed_002(""),
            vec![
                ("x-session-token", routed.to_owned()),
                cookie(&format!("__sessiontoken={OLD_OPERATOR}")),
            ],
            SOAP_PATH,
        ),
        // Two X-Session-Token headers.
        (
            seed_002(""),
            vec![
                ("x-session-token", routed.to_owned()),
                ("x-session-token", OLD_OPERATOR.to_owned()),
            ],
            SOAP_PATH,
        ),
        // The cookie's name in another case, or its pair after a comma.
        (
            seed_002(routed),
            vec![cookie(&format!("__SessionToken={OLD_OPERATOR}"))],
            SOAP_PATH,
        ),
        (
            seed_002(routed),
            vec![cookie(&format!("a=1, __sessiontoken={OLD_OPERATOR}"))],
            SOAP_PATH,
        ),
        // A SOAP Header copy, and a query parameter.
        (
            call(routed, &format!("<X-Session-Token>{OLD_OPERATOR}</X-Session-Token>")),
            vec![],
            SOAP_PATH,
        ),
        (
            call(routed, &format!("<Cookie>__sessiontoken={OLD_OPERATOR}</Cookie>")),
            vec![],
            SOAP_PATH,
        ),
        (
            seed_002(routed),
            vec![],
            "/nl/jsp/soaprouter.jsp?__sessiontoken=oldop%2Fan-operator-imsbridge-refuses",
        ),
        // An un-namespaced Body before the SOAP Body.
        (
            seed_002(routed).replace(
                "<soapenv:Body>",
                &format!("<Body><urn:PushEvent><urn:sessiontoken>{OLD_OPERATOR}</urn:sessiontoken></urn:PushEvent></Body><soapenv:Body>"),
            ),
            vec![],
            SOAP_PATH,
        ),
        // Markup inside the first parameter.
        (seed_002(&format!("{routed}<x/>{OLD_OPERATOR}")), vec![], SOAP_PATH),
        // A SOAP Header after the Body, and a second Body.
        (after_the_body(routed), vec![], SOAP_PATH),
        (
            seed_002(routed).replace(
                "</soapenv:Body>",
                &format!("</soapenv:Body><soapenv:Body><urn:PushEvent><urn:sessiontoken>{OLD_OPERATOR}</urn:sessiontoken></urn:PushEvent></soapenv:Body>"),
            ),
            vec![],
            SOAP_PATH,
        ),
    ];
    // Markup inside a SOAP Header copy (an element, a comment, a CDATA section), whether its
    // text names another operator or agrees with the first parameter: a reader could take the
    // text before the markup, after it, or none.
    for carrier in ["Cookie", "X-Session-Token", "X-Security-Token"] {
        for value in [OLD_OPERATOR, routed] {
            let text = match carrier {
                "Cookie" => format!("__sessiontoken={value}"),
                _ => value.to_owned(),
            };
            for content in [
                format!("<x/>{text}"),
                format!("<!--x-->{text}"),
                format!("<![CDATA[{text}]]>"),
            ] {
                let header = format!("<{carrier}>{content}</{carrier}>");
                list.push((call(routed, &header), vec![], SOAP_PATH));
            }
        }
    }
    list.into_iter()
        .map(|(body, headers, target)| Attack {
            body,
            headers,
            target,
        })
        .collect()
}

#[tokio::test]
async fn on_the_legacy_way_no_second_credential_reaches_campaign() {
    let stack = Stack::default().await;
    refused(&stack, &attacks(LEGACY_CREDENTIAL)).await;
}

#[tokio::test]
async fn on_the_ims_way_no_second_credential_reaches_campaign() {
    let stack = Stack::default().await;
    refused(&stack, &attacks(&credential())).await;
}

#[tokio::test]
async fn on_the_canary_and_transparent_ways_neither() {
    let canary = Stack::start("", "mode = \"canary\"\ncanary_percent = 50").await;
    refused(&canary, &attacks(&credential())).await;
    let transparent = Stack::start("unknown_callers = \"legacy\"", "").await;
    refused(&transparent, &attacks("nobody/known-to-imsbridge")).await;
}

#[tokio::test]
async fn copies_that_agree_go_through_and_all_go_on_the_ims_way() {
    let stack = Stack::default().await;
    let body = call(
        &credential(),
        &format!("<X-Session-Token>{}</X-Session-Token>", credential()),
    );
    let mut request = soap_request(body, &[("x-session-token", &credential())]);
    request.headers_mut().append(
        "cookie",
        format!("a=1, __SESSIONTOKEN={}", credential())
            .parse()
            .unwrap(),
    );
    *request.uri_mut() = format!(
        "{SOAP_PATH}?x=1&__sessiontoken={}&y=%2F",
        credential().replace('/', "%2F")
    )
    .parse()
    .unwrap();
    let answer = send(stack.url(), request).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let seen = &stack.campaign.requests()[0];
    let everything = format!("{} {:?} {}", seen.uri, seen.headers, seen.text());
    assert!(!everything.contains(PASSWORD), "{everything}");
    assert_eq!(
        seen.uri.query(),
        Some("x=1&y=%2F"),
        "the other parameters as they came"
    );
    assert_eq!(seen.header("cookie"), Some("a=1"));
    assert!(seen.text().contains("<X-Session-Token></X-Session-Token>"));
}

#[tokio::test]
async fn a_declared_encoding_not_read_as_ascii_is_refused() {
    let stack = Stack::default().await;
    for encoding in ["UTF-16", "UTF-7", "IBM037"] {
        let body = seed_002(LEGACY_CREDENTIAL).replacen(
            "encoding=\"utf-8\"",
            &format!("encoding=\"{encoding}\""),
            1,
        );
        post(stack.url(), body, &[]).await.assert_fault(
            500,
            "Client",
            "the declared encoding is not supported",
        );
    }
    assert!(stack.campaign.requests().is_empty());
}

#[tokio::test]
async fn a_fault_that_echoes_the_bearer_token_never_reaches_the_caller() {
    let stack = Stack::default().await;
    assert_eq!(
        post(stack.url(), seed_002(&credential()), &[]).await.status,
        200
    );
    let token = stack.ims.issued()[0].clone();
    stack.campaign.set_fault(Some(&format!(
        "Unexpected header: Authorization: Bearer {token}"
    )));
    let answer = post(stack.url(), seed_002(&credential()), &[]).await;
    answer.assert_fault(
        500,
        "Server",
        "Adobe Campaign's answer could not be relayed.",
    );
    assert!(!answer.body.contains(&token));
    assert!(!format!("{:?}", answer.headers).contains(&token));
}

/// A Campaign (or a load balancer before it) that answers `<ok/>` and echoes the request's
/// `Authorization` in a response header.
async fn echoing_campaign() -> String {
    scripted_http(|head| {
        format!(
            "HTTP/1.1 200 OK\r\nx-seen-authorization: {}\r\nx-kept: 1\r\ncontent-length: 5\r\n\r\n<ok/>",
            header_of(head, "authorization").unwrap_or_default()
        )
    })
    .await
}

#[tokio::test]
async fn a_header_that_echoes_the_bearer_token_is_dropped() {
    let (ims, _) = stand_ins().await;
    let proxy = Proxy::start(&config_text(&ims.url(), &echoing_campaign().await, "", "")).await;
    let answer = post(proxy.addr, seed_002(&credential()), &[]).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body, "<ok/>");
    let token = ims.issued()[0].clone();
    assert!(
        !format!("{:?}", answer.headers).contains(&token),
        "{:?}",
        answer.headers
    );
    assert!(answer.headers.get("x-seen-authorization").is_none());
    assert_eq!(answer.headers.get("x-kept").unwrap(), "1");
}

/// A SOAP call on a connection of its own from `local` (another loopback address), answered
/// with `Connection: close`; the status code.
#[tokio::test]
async fn an_element_after_the_body_that_comes_later_stops_the_request() {
    // The prefix, up to the session token, comes first and goes upstream; the Header after
    // the Body comes in a later chunk. Before the fix, Campaign got the whole request.
    for (way, credential) in [
        ("ims", credential()),
        ("legacy", LEGACY_CREDENTIAL.to_owned()),
    ] {
        let stack = Stack::default().await;
        let body = Bytes::from(after_the_body(&credential));
        let cut = body
            .windows(b"</soapenv:Body>".len())
            .position(|w| w == b"</soapenv:Body>")
            .unwrap();
        let request = crate::support::Chunks::new([body.slice(..cut), body.slice(cut..)]);
        let request = http::Request::post(SOAP_PATH)
            .header("host", "x")
            .header("content-type", "text/xml; charset=utf-8")
            .body(request)
            .unwrap();
        let answer = send(stack.url(), request).await;
        answer.assert_fault(500, "Client", "an element after the SOAP Body");
        let seen = stack.campaign.requests();
        assert!(
            seen.is_empty(),
            "{way}: Campaign got {:?}",
            seen.iter()
                .map(imsbridge::demo::Recorded::text)
                .collect::<Vec<_>>()
        );
    }
}

#[tokio::test]
async fn a_prefix_that_trickles_in_is_refused_at_prefix_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // A byte every 100 ms, well within the idle timeout, never reaching the session token:
    // before `prefix_timeout`, such a body held its request (and its buffer) until
    // `max_prefix_bytes` came, 64 KiB later, an hour and a half at this pace.
    let stack = Stack::start_with("", "", |config| {
        config.server.prefix_timeout = std::time::Duration::from_secs(1);
    })
    .await;
    let mut stream = tokio::net::TcpStream::connect(stack.url()).await.unwrap();
    stream
        .write_all(
            format!("POST {SOAP_PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: text/xml\r\nContent-Length: 100000\r\n\r\n<?xml version=\"1.0\"?><!--")
                .as_bytes(),
        )
        .await
        .unwrap();
    let (mut reader, mut writer) = stream.into_split();
    // The trickle goes on until the connection is closed.
    let trickle = tokio::spawn(async move {
        while writer.write_all(b">").await.is_ok() {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    });
    let mut answer = [0u8; 12];
    tokio::time::timeout(
        std::time::Duration::from_secs(20),
        reader.read_exact(&mut answer),
    )
    .await
    .expect("no answer within 20 s")
    .unwrap();
    trickle.abort();
    assert_eq!(&answer[9..12], b"500");
    assert!(stack.campaign.requests().is_empty());
}
