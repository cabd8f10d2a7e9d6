//! Outgoing connections through an HTTP proxy (issue "Enterprise networks"): a forward proxy on
//! loopback that tunnels `CONNECT` and records each tunnel it opened, with or without
//! `Proxy-Authorization`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use crate::support::*;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// A forward proxy that tunnels `CONNECT host:port`; what it tunnelled, in order.
struct ForwardProxy {
    addr: SocketAddr,
    tunnels: Arc<Mutex<Vec<String>>>,
}

impl ForwardProxy {
    /// `credentials`: the `Proxy-Authorization` value it requires, if any (else 407).
    async fn start(credentials: Option<&'static str>) -> ForwardProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let tunnels = Arc::new(Mutex::new(Vec::new()));
        let recorded = tunnels.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let recorded = recorded.clone();
                tokio::spawn(async move {
                    let _ = tunnel(stream, credentials, &recorded).await;
                });
            }
        });
        ForwardProxy { addr, tunnels }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn tunnels(&self) -> Vec<String> {
        self.tunnels.lock().unwrap().clone()
    }
}

async fn tunnel(
    stream: TcpStream,
    credentials: Option<&str>,
    recorded: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    let mut stream = BufReader::new(stream);
    let mut request = String::new();
    stream.read_line(&mut request).await?;
    let mut authorized = credentials.is_none();
    loop {
        let mut line = String::new();
        stream.read_line(&mut line).await?;
        if line == "\r\n" || line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("proxy-authorization")
        {
            authorized |= Some(value.trim()) == credentials;
        }
    }
    let mut words = request.split_whitespace();
    let (Some("CONNECT"), Some(target)) = (words.next(), words.next()) else {
        return stream
            .get_mut()
            .write_all(b"HTTP/1.1 405 Method Not Allowed\r\ncontent-length: 0\r\n\r\n")
            .await;
    };
    if !authorized {
        return stream
            .get_mut()
            .write_all(b"HTTP/1.1 407 Proxy Authentication Required\r\ncontent-length: 0\r\n\r\n")
            .await;
    }
    recorded.lock().unwrap().push(target.to_owned());
    let mut upstream = TcpStream::connect(target).await?;
    stream
        .get_mut()
        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .await?;
    tokio::io::copy_bidirectional(&mut stream, &mut upstream).await?;
    Ok(())
}

/// The stand-ins and a proxy whose `[egress]` is `egress`.
async fn stack_with_egress(egress: &str) -> Stack {
    let (ims, campaign) = stand_ins().await;
    let text = format!(
        "{}\n[egress]\n{egress}\n",
        config_text(&ims.url(), &campaign.url(), "", "")
    );
    let config = imsbridge::config::Config::parse(&text, std::path::Path::new("."), &env())
        .expect("valid config");
    let proxy = Proxy::start_config(config).await;
    Stack {
        ims,
        campaign,
        proxy,
    }
}

fn authority(url: &str) -> String {
    url.trim_start_matches("http://").to_owned()
}

#[tokio::test]
async fn ims_and_campaign_are_reached_through_the_egress_proxy() {
    let forward = ForwardProxy::start(None).await;
    let stack = stack_with_egress(&format!("proxy = \"{}\"", forward.url())).await;
    let answer = post(stack.url(), seed_002(&credential()), &[]).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    // One tunnel to IMS for the token, one to Campaign for the call.
    let tunnels = forward.tunnels();
    assert!(
        tunnels.contains(&authority(&stack.ims.url())),
        "{tunnels:?}"
    );
    assert!(
        tunnels.contains(&authority(&stack.campaign.url())),
        "{tunnels:?}"
    );

    // The hosts of `no_proxy` are reached straight.
    let forward = ForwardProxy::start(None).await;
    let stack = stack_with_egress(&format!(
        "proxy = \"{}\"\nno_proxy = [\"127.0.0.1\"]",
        forward.url()
    ))
    .await;
    assert_eq!(
        post(stack.url(), seed_002(&credential()), &[]).await.status,
        200
    );
    assert!(forward.tunnels().is_empty(), "{:?}", forward.tunnels());
}

#[tokio::test]
async fn a_proxy_that_wants_credentials_gets_them_from_the_url() {
    // `Basic` of `squid:pa55word`.
    let forward = ForwardProxy::start(Some("Basic c3F1aWQ6cGE1NXdvcmQ=")).await;
    let with = format!("proxy = \"http://squid:pa55word@{}\"", forward.addr);
    let stack = stack_with_egress(&with).await;
    assert_eq!(
        post(stack.url(), seed_002(&credential()), &[]).await.status,
        200
    );
    assert_eq!(forward.tunnels().len(), 2);
    // Without them, the proxy refuses: no token, a Server fault, nothing reaches Campaign.
    let without = ForwardProxy::start(Some("Basic c3F1aWQ6cGE1NXdvcmQ=")).await;
    let stack = stack_with_egress(&format!("proxy = \"{}\"", without.url())).await;
    post(stack.url(), seed_002(&credential()), &[])
        .await
        .assert_fault(500, "Server", "not available");
    assert!(without.tunnels().is_empty());
    assert!(stack.campaign.requests().is_empty());
    // A wrong password: refused as well, and never shown where the failure is told.
    let stack = stack_with_egress(&format!(
        "proxy = \"http://squid:not-the-Pa55word@{}\"",
        without.addr
    ))
    .await;
    post(stack.url(), seed_002(&credential()), &[])
        .await
        .assert_fault(500, "Server", "not available");
    let ready = get(stack.proxy.admin, "/readyz").await;
    assert!(
        ready.body.contains("profile messagecenter: no token yet"),
        "{}",
        ready.body
    );
    assert!(!ready.body.contains("not-the-Pa55word"), "{}", ready.body);
}
