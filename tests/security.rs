//! Hostile input: one credential per request (issue "Security", first part). Every attack
//! below reached Campaign before the fix (the stand-in recorded it); each test asserts on what
//! reached the stand-in Campaign, not on log text.

mod support;

use support::*;

const OLD_OPERATOR: &str = "oldop/an-operator-imsbridge-refuses";
const LEGACY_CREDENTIAL: &str = "crm/legacy-password";

/// A seed-002 call with `first` in its session token and `header` in its SOAP Header.
fn call(first: &str, header: &str) -> String {
    seed_002(first).replace(
        "<soapenv:Header/>",
        &format!("<soapenv:Header>{header}</soapenv:Header>"),
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
            answer.status == 500 || answer.status == 400,
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
        seen.iter().map(|r| r.text()).collect::<Vec<_>>()
    );
}

/// The attacks of the issue, each with a credential imsbridge routes on and another that
/// Campaign could authenticate on.
fn attacks(routed: &str) -> Vec<Attack> {
    let cookie = |value: &str| ("cookie", value.to_owned());
    let list: Vec<(String, Headers, &'static str)> = vec![
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
    ];
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
