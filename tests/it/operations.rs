//! What operators see and run: `/metrics`, request ids, TLS and mTLS on the listener, and
//! certificates reloaded without a restart.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::support::*;
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use imsbridge::config::Config;
use imsbridge::demo::ImsFailure;
use rustls_pki_types::{PrivateKeyDer, ServerName};
use tokio::net::{TcpListener, TcpStream};

/// The value of the first series of `/metrics` whose line starts with `series`.
fn value(metrics: &str, series: &str) -> f64 {
    metric(metrics, series).unwrap_or_else(|| panic!("no `{series}` in:\n{metrics}"))
}

#[tokio::test]
async fn metrics_follow_requests_and_token_fetches() {
    let stack = Stack::start("", "").await;
    for _ in 0..3 {
        assert_eq!(
            post(stack.url(), seed_002(&credential()), &[]).await.status,
            200
        );
    }
    post(stack.url(), seed_002(&format!("{LOGIN}/wrong")), &[])
        .await
        .assert_fault(500, "Client", "Invalid");
    post(stack.url(), seed_002("crm/whatever"), &[]).await;
    let metrics = get(stack.proxy.admin, "/metrics").await;
    assert_eq!(metrics.status, 200);
    assert!(
        metrics.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let text = &metrics.body;
    assert_eq!(
        value(
            text,
            r#"imsbridge_requests_total{caller="crm-events",mode="ims",route="ims",outcome="ok"}"#
        ),
        3.0
    );
    assert_eq!(
        value(
            text,
            r#"imsbridge_requests_total{caller="crm-events",mode="-",route="-",outcome="wrong_password"}"#
        ),
        1.0
    );
    assert_eq!(
        value(
            text,
            r#"imsbridge_requests_total{caller="old-crm",mode="legacy",route="legacy",outcome="ok"}"#
        ),
        1.0
    );
    assert_eq!(
        value(text, r#"imsbridge_upstream_responses_total{class="2xx"}"#),
        4.0
    );
    assert_eq!(
        value(
            text,
            r#"imsbridge_token_fetches_total{profile="messagecenter",result="ok"}"#
        ),
        1.0
    );
    assert!(
        value(
            text,
            r#"imsbridge_token_expiry_seconds{profile="messagecenter"}"#
        ) > 86_000.0
    );
    assert_eq!(
        value(text, r#"imsbridge_caller{caller="crm-events",mode="ims"}"#),
        1.0
    );
    assert_eq!(
        value(text, r#"imsbridge_caller{caller="old-crm",mode="legacy"}"#),
        1.0
    );
    assert_eq!(
        value(
            text,
            r#"imsbridge_request_duration_seconds_count{route="ims"}"#
        ),
        3.0
    );
    let sent = (seed_002(&credential()).len() * 3
        + seed_002(&format!("{LOGIN}/wrong")).len()
        + seed_002("crm/whatever").len()) as f64;
    assert_eq!(value(text, "imsbridge_request_bytes_total"), sent);
    assert!(value(text, "imsbridge_response_bytes_total") > 1000.0);
    assert!(value(text, "imsbridge_connections_accepted_total") >= 5.0);
    assert!(text.trim_end().ends_with("# EOF"));

    // A refused token: one retry, one more fetch.
    stack.ims.revoke_all();
    assert_eq!(
        post(stack.url(), seed_002(&credential()), &[]).await.status,
        200
    );
    let text = get(stack.proxy.admin, "/metrics").await.body;
    assert_eq!(value(&text, "imsbridge_retries_total"), 1.0);
    assert_eq!(
        value(
            &text,
            r#"imsbridge_token_fetches_total{profile="messagecenter",result="ok"}"#
        ),
        2.0
    );
}

#[tokio::test]
async fn failing_fetches_are_counted_and_expiry_drops_to_zero() {
    let (ims, campaign) = stand_ins().await;
    ims.set_failure(Some(ImsFailure::Status(503)));
    let proxy = Proxy::start(&config_text(&ims.url(), &campaign.url(), "", "")).await;
    let text = eventually("two failed fetches", Duration::from_secs(10), || async {
        let text = get(proxy.admin, "/metrics").await.body;
        text.contains(r#"result="failed"} 2"#).then_some(text)
    })
    .await;
    assert!(
        value(
            &text,
            r#"imsbridge_token_fetches_total{profile="messagecenter",result="failed"}"#
        ) >= 2.0
    );
    assert_eq!(
        value(
            &text,
            r#"imsbridge_token_expiry_seconds{profile="messagecenter"}"#
        ),
        0.0
    );
}

#[tokio::test]
async fn request_ids_are_kept_or_made_and_passed_on() {
    let stack = Stack::default().await;
    let given = post(
        stack.url(),
        seed_002(&credential()),
        &[("x-request-id", "caller-chosen-42")],
    )
    .await;
    assert_eq!(given.headers["x-request-id"], "caller-chosen-42");
    let made = post(stack.url(), seed_002(&credential()), &[]).await;
    let id = made.headers["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(id.len(), 32);
    let seen = stack.campaign.requests();
    assert_eq!(seen[0].header("x-request-id"), Some("caller-chosen-42"));
    assert_eq!(seen[1].header("x-request-id"), Some(id.as_str()));
    // Refusals carry one too.
    let refused = post(stack.url(), seed_002("nobody/x"), &[]).await;
    assert_eq!(refused.headers["x-request-id"].len(), 32);
}

/// A test PKI: a CA for servers, a CA for callers, and their certificates.
struct Pki {
    server_ca: String,
    client_ca: String,
    server: rcgen::KeyPair,
    server_cert: String,
    clients: Vec<(String, rcgen::KeyPair, String)>,
    stranger: (String, rcgen::KeyPair),
    /// The CA of the callers' certificates, for more of them.
    callers: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

fn ca(name: &str) -> rcgen::CertifiedIssuer<'static, rcgen::KeyPair> {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap()).unwrap()
}

fn leaf(
    sans: &[&str],
    cn: &str,
    issuer: &rcgen::CertifiedIssuer<'_, rcgen::KeyPair>,
) -> (String, rcgen::KeyPair) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(
        sans.iter()
            .map(std::string::ToString::to_string)
            .collect::<Vec<_>>(),
    )
    .unwrap();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "Example");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    (params.signed_by(&key, issuer).unwrap().pem(), key)
}

impl Pki {
    fn new(server_cn: &str) -> Pki {
        let servers = ca("servers");
        let callers = ca("callers");
        let (server_cert, server) = leaf(&["127.0.0.1"], server_cn, &servers);
        let clients = ["crm-pusher", "intruder"]
            .iter()
            .map(|cn| {
                let (cert, key) = leaf(&[&format!("{cn}.example.com")], cn, &callers);
                (cn.to_string(), key, cert)
            })
            .collect();
        let (stranger_cert, stranger_key) = leaf(&[], "crm-pusher", &ca("somebody else"));
        Pki {
            server_ca: servers.pem(),
            client_ca: callers.pem(),
            server,
            server_cert,
            clients,
            stranger: (stranger_cert, stranger_key),
            callers,
        }
    }

    /// A client with a certificate of the callers' CA made from `params`.
    fn client_with(&self, params: rcgen::CertificateParams) -> Arc<rustls::ClientConfig> {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.callers).unwrap().pem();
        self.client(Some((&cert, &key)))
    }

    fn write(&self, dir: &Path) {
        std::fs::write(dir.join("server.pem"), &self.server_cert).unwrap();
        std::fs::write(dir.join("server.key"), self.server.serialize_pem()).unwrap();
        std::fs::write(dir.join("clients.pem"), &self.client_ca).unwrap();
    }

    /// A client trusting the server CA, with the given certificate and key.
    fn client(&self, identity: Option<(&str, &rcgen::KeyPair)>) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pki_types::CertificateDer::pem_slice_iter(self.server_ca.as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
        let mut config = match identity {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => builder
                .with_client_auth_cert(
                    vec![
                        rustls_pki_types::CertificateDer::from_pem_slice(cert.as_bytes()).unwrap(),
                    ],
                    PrivateKeyDer::Pkcs8(key.serialize_der().into()),
                )
                .unwrap(),
        };
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Arc::new(config)
    }

    fn caller(&self, cn: &str) -> Arc<rustls::ClientConfig> {
        let (_, key, cert) = self.clients.iter().find(|(name, ..)| name == cn).unwrap();
        self.client(Some((cert, key)))
    }
}

use rustls_pki_types::pem::PemObject;

/// One SOAP POST over TLS (HTTP/2 when the server agrees to it); the status, and the common
/// name of the server's certificate.
async fn tls_post(
    addr: std::net::SocketAddr,
    client: Arc<rustls::ClientConfig>,
) -> Result<(u16, String), String> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(client);
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let stream = connector
        .connect(name, stream)
        .await
        .map_err(|e| e.to_string())?;
    let server_cert = &stream.get_ref().1.peer_certificates().unwrap()[0];
    let server_subject = x509_parser::parse_x509_certificate(server_cert)
        .unwrap()
        .1
        .subject()
        .iter_common_name()
        .next()
        .unwrap()
        .as_str()
        .unwrap()
        .to_owned();
    let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
    let body = Full::new(Bytes::from(seed_002(&credential())));
    let request = |uri: &str| {
        Request::post(uri)
            .header("content-type", "text/xml")
            .body(body.clone())
            .unwrap()
    };
    let response = if h2 {
        let (mut sender, connection) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            TokioIo::new(stream),
        )
        .await
        .map_err(|e| e.to_string())?;
        tokio::spawn(connection);
        sender
            .send_request(request(&format!("https://127.0.0.1{SOAP_PATH}")))
            .await
    } else {
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(connection);
        sender.send_request(request(SOAP_PATH)).await
    }
    .map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let _ = response.into_body().collect().await;
    Ok((status, server_subject))
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("imsbridge-ops-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test]
async fn tls_and_mutual_tls_on_the_listener() {
    let stack = Stack::default().await;
    let pki = Pki::new("imsbridge");
    let dir = temp_dir("mtls");
    pki.write(&dir);
    let plain_tls = with_server(
        &config_text(&stack.ims.url(), &stack.campaign.url(), "", ""),
        &format!(
            "tls = {{ cert = \"{0}/server.pem\", key = {{ file = \"{0}/server.key\" }} }}",
            dir.display()
        ),
    );
    let proxy = Proxy::start(&plain_tls).await;
    assert_eq!(
        tls_post(proxy.addr, pki.client(None)).await.unwrap().0,
        200,
        "TLS, no client certificate"
    );

    let mutual = with_server(
        &config_text(
            &stack.ims.url(),
            &stack.campaign.url(),
            "",
            "client_cert_subject = \"CN=crm-pusher,O=Example\"",
        ),
        &format!(
            "tls = {{ cert = \"{0}/server.pem\", key = {{ file = \"{0}/server.key\" }}, client_ca = \"{0}/clients.pem\" }}",
            dir.display()
        ),
    );
    let proxy = Proxy::start(&mutual).await;
    // The bound caller with its certificate: through.
    assert_eq!(
        tls_post(proxy.addr, pki.caller("crm-pusher"))
            .await
            .unwrap()
            .0,
        200
    );
    // Another caller's certificate (same CA): the credential is refused.
    assert_eq!(
        tls_post(proxy.addr, pki.caller("intruder"))
            .await
            .unwrap()
            .0,
        500
    );
    // No certificate, or one from another CA: no connection at all.
    assert!(tls_post(proxy.addr, pki.client(None)).await.is_err());
    let (cert, key) = (&pki.stranger.0, &pki.stranger.1);
    assert!(
        tls_post(proxy.addr, pki.client(Some((cert, key))))
            .await
            .is_err()
    );
    assert_eq!(
        stack.campaign.requests().len(),
        2,
        "only the good calls reached Campaign"
    );

    // Bound by a DNS name of the certificate instead (its subject is then any).
    let by_name = with_server(
        &config_text(
            &stack.ims.url(),
            &stack.campaign.url(),
            "",
            "client_cert_san = [\"dns:crm-pusher.example.com\"]",
        ),
        &format!(
            "tls = {{ cert = \"{0}/server.pem\", key = {{ file = \"{0}/server.key\" }}, client_ca = \"{0}/clients.pem\" }}",
            dir.display()
        ),
    );
    let proxy = Proxy::start(&by_name).await;
    let status = |cn| {
        let client = pki.caller(cn);
        async move { tls_post(proxy.addr, client).await.unwrap().0 }
    };
    assert_eq!(status("crm-pusher").await, 200);
    assert_eq!(status("intruder").await, 500);
    assert_eq!(stack.campaign.requests().len(), 3);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Callers bound to what x509-parser reads in their certificates: attribute types by number,
/// arcs past 2.40 (a first octet of 120 and more), values of other string types, a CN written to
/// look like two attributes, and subjectAltNames of every kind the config takes.
#[tokio::test]
async fn client_certificates_are_read_as_parsed_names() {
    use rcgen::DnType::{CommonName, CustomDnType, OrganizationName};
    use rcgen::{DnValue, SanType};
    let stack = Stack::default().await;
    let pki = Pki::new("imsbridge");
    let dir = temp_dir("mtls-names");
    pki.write(&dir);
    let tls = format!(
        "tls = {{ cert = \"{0}/server.pem\", key = {{ file = \"{0}/server.key\" }}, client_ca = \"{0}/clients.pem\" }}",
        dir.display()
    );
    let bound_to = |binding: &str| {
        with_server(
            &config_text(&stack.ims.url(), &stack.campaign.url(), "", binding),
            &tls,
        )
    };
    let with_subject = |subject: Vec<(rcgen::DnType, DnValue)>, sans: Vec<SanType>| {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        for (kind, value) in subject {
            params.distinguished_name.push(kind, value);
        }
        params.subject_alt_names = sans;
        pki.client_with(params)
    };
    let status = |proxy: std::net::SocketAddr, client| async move {
        tls_post(proxy, client).await.unwrap().0
    };

    let proxy = Proxy::start(&bound_to(
        "client_cert_subject = \"2.5.4.3=crm-pusher,2.40.7=Zoë ☃,1.3.6.1.4.1.311.60.2.1.3=FR,O=Example\\\\, Inc.\"",
    ))
    .await;
    let subject = |cn: &str| {
        vec![
            (CommonName, DnValue::Utf8String(cn.into())),
            (
                CustomDnType(vec![2, 40, 7]),
                DnValue::BmpString("Zoë ☃".try_into().unwrap()),
            ),
            (
                CustomDnType(vec![1, 3, 6, 1, 4, 1, 311, 60, 2, 1, 3]),
                DnValue::PrintableString("FR".try_into().unwrap()),
            ),
            (
                OrganizationName,
                DnValue::Utf8String("Example, Inc.".into()),
            ),
        ]
    };
    assert_eq!(
        status(proxy.addr, with_subject(subject("crm-pusher"), vec![])).await,
        200
    );
    assert_eq!(
        status(proxy.addr, with_subject(subject("intruder"), vec![])).await,
        500
    );
    // One CN that a text comparison would read as the bound subject's attributes.
    let posing = vec![(
        CommonName,
        DnValue::Utf8String(
            "crm-pusher,2.40.7=Zoë ☃,1.3.6.1.4.1.311.60.2.1.3=FR,O=Example\\, Inc.".into(),
        ),
    )];
    assert_eq!(status(proxy.addr, with_subject(posing, vec![])).await, 500);
    let slashed = vec![(
        CommonName,
        DnValue::Utf8String("crm-pusher/O=Example, Inc.".into()),
    )];
    assert_eq!(status(proxy.addr, with_subject(slashed, vec![])).await, 500);
    assert_eq!(stack.campaign.requests().len(), 1);

    let proxy = Proxy::start(&bound_to(
        "client_cert_san = [\"email:crm@example.com\", \"ip:10.9.8.7\", \"uri:spiffe://example.com/crm\", \"dns:crm.example.com\"]",
    ))
    .await;
    let nobody = || vec![(CommonName, DnValue::Utf8String("whoever".into()))];
    for (san, expected) in [
        (
            SanType::Rfc822Name("crm@EXAMPLE.com".try_into().unwrap()),
            200,
        ),
        (SanType::IpAddress("10.9.8.7".parse().unwrap()), 200),
        (
            SanType::URI("spiffe://example.com/crm".try_into().unwrap()),
            200,
        ),
        (SanType::DnsName("CRM.example.com".try_into().unwrap()), 200),
        (
            SanType::Rfc822Name("other@example.com".try_into().unwrap()),
            500,
        ),
        (SanType::IpAddress("10.9.8.6".parse().unwrap()), 500),
        (SanType::DnsName("10.9.8.7".try_into().unwrap()), 500),
        (
            SanType::URI("spiffe://example.com/crm/x".try_into().unwrap()),
            500,
        ),
    ] {
        let shown = format!("{san:?}");
        assert_eq!(
            status(proxy.addr, with_subject(nobody(), vec![san])).await,
            expected,
            "{shown}"
        );
    }
    assert_eq!(stack.campaign.requests().len(), 5);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn certificates_are_reloaded_without_a_restart() {
    let stack = Stack::default().await;
    let dir = temp_dir("reload");
    let first = Pki::new("first-certificate");
    first.write(&dir);
    let text = with_server(
        &config_text(&stack.ims.url(), &stack.campaign.url(), "", ""),
        &format!(
            "tls = {{ cert = \"{0}/server.pem\", key = {{ file = \"{0}/server.key\" }} }}",
            dir.display()
        ),
    );
    let load = || Config::parse(&text, Path::new("."), &env()).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (reload, reloads) = tokio::sync::mpsc::channel(1);
    tokio::spawn(imsbridge::run_reloadable(
        imsbridge::Listeners {
            proxy: listener.into(),
            admin: None,
        },
        load(),
        std::future::pending(),
        reloads,
    ));
    let (status, subject) = tls_post(addr, first.client(None)).await.unwrap();
    assert_eq!((status, subject.as_str()), (200, "first-certificate"));

    let second = Pki::new("second-certificate");
    second.write(&dir);
    reload.send(Ok(load())).await.unwrap();
    let seen = eventually(
        "the new certificate served",
        Duration::from_secs(5),
        || async {
            tls_post(addr, second.client(None))
                .await
                .ok()
                .map(|(_, subject)| subject)
        },
    )
    .await;
    assert_eq!(seen, "second-certificate");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The metrics an operator alerts on: the build, the process, IMS's and Campaign's times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn build_process_and_latency_metrics_are_exported_and_move() {
    let stack = Stack::default().await;
    let scrape = || async { get(stack.proxy.admin, "/metrics").await.body };
    let before = scrape().await;
    let value = |text: &str, name: &str| {
        metric(text, name).unwrap_or_else(|| panic!("no {name} in:\n{text}"))
    };
    let build = before
        .lines()
        .find(|l| l.starts_with("imsbridge_build_info{"))
        .unwrap_or_else(|| panic!("no build_info:\n{before}"));
    assert!(
        build.contains(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION"))),
        "{build}"
    );
    assert!(build.contains("commit=\""), "{build}");
    assert!(build.ends_with(" 1"), "{build}");
    assert!(value(&before, "imsbridge_process_resident_memory_bytes") > 1e6);
    assert!(value(&before, "imsbridge_process_open_fds") > 3.0);
    assert!(
        value(&before, "imsbridge_process_max_fds") >= value(&before, "imsbridge_process_open_fds")
    );
    assert!(value(&before, "imsbridge_process_start_time_seconds") > 1.7e9);
    let first_bytes = |text: &str| {
        metric(
            text,
            "imsbridge_upstream_first_byte_seconds_count{upstream=\"default\"}",
        )
        .unwrap_or(0.0)
    };
    let cpu_before = value(&before, "imsbridge_process_cpu_seconds");
    for _ in 0..20 {
        assert_eq!(
            post(stack.url(), seed_002(&credential()), &[]).await.status,
            200
        );
    }
    let after = scrape().await;
    assert_eq!(first_bytes(&after) - first_bytes(&before), 20.0, "{after}");
    // The token the calls took was fetched once, and timed.
    assert_eq!(
        value(
            &after,
            "imsbridge_ims_fetch_duration_seconds_count{profile=\"messagecenter\"}"
        ),
        1.0,
        "{after}"
    );
    assert!(
        value(
            &after,
            "imsbridge_upstream_first_byte_seconds_sum{upstream=\"default\"}"
        ) > 0.0
    );
    assert!(
        value(&after, "imsbridge_process_cpu_seconds") > cpu_before,
        "the CPU time moves"
    );
    stack.proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_on_every_worker_and_a_reload_swaps_the_certificate_on_all() {
    let (ims, campaign) = stand_ins().await;
    let pki = Pki::new("imsbridge-first");
    let dir = temp_dir("tls-workers");
    pki.write(&dir);
    let path = super::cli::write_config(&dir, &ims.url(), &campaign.url(), "", "");
    let tls = format!(
        "tls = {{ cert = \"{0}/server.pem\", key = {{ file = \"{0}/server.key\" }} }}",
        dir.display()
    );
    std::fs::write(
        &path,
        with_server(&std::fs::read_to_string(&path).unwrap(), &tls),
    )
    .unwrap();
    let mut running = super::cli::Running::start(&path, "info");
    let client = pki.client(None);
    // Connections of their own: both workers take some (the kernel spreads them).
    for _ in 0..24 {
        let (status, subject) = tls_post(running.addr, client.clone()).await.unwrap();
        assert_eq!((status, subject.as_str()), (200, "imsbridge-first"));
    }
    let accepted = |metrics: &str, worker: usize| {
        metric(
            metrics,
            &format!("imsbridge_worker_connections_accepted_total{{worker=\"{worker}\"}}"),
        )
        .unwrap_or(0.0)
    };
    let metrics = get(running.admin, "/metrics").await.body;
    let before = [accepted(&metrics, 0), accepted(&metrics, 1)];
    assert!(before.iter().all(|n| *n > 0.0), "{before:?}");
    // A new certificate (of another CA): after SIGHUP, every worker's new connections get it.
    let renewed = Pki::new("imsbridge-renewed");
    renewed.write(&dir);
    running.signal("HUP");
    running.wait_for("config reloaded");
    let client = renewed.client(None);
    for _ in 0..24 {
        let (status, subject) = tls_post(running.addr, client.clone()).await.unwrap();
        assert_eq!((status, subject.as_str()), (200, "imsbridge-renewed"));
    }
    let metrics = get(running.admin, "/metrics").await.body;
    let after = [accepted(&metrics, 0), accepted(&metrics, 1)];
    assert!(
        after[0] > before[0] && after[1] > before[1],
        "{before:?} {after:?}"
    );
    let (status, log) = running.stop();
    assert!(status.success(), "{log}");
    std::fs::remove_dir_all(&dir).unwrap();
}
