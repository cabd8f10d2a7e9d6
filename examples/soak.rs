//! Soak run (not part of CI): steady load through the proxy for a while, with 2-second IMS
//! tokens and every token revoked every 30 seconds. Prints requests sent, failed, token fetches
//! and replays; exits 1 if any request failed. Everything is on 127.0.0.1.
//!
//!     cargo run --release --example soak -- [SECONDS] [CONCURRENCY]
//!
//! (`bench/soak.sh` runs it for 5 minutes.)

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use imsbridge::config::Config;
use imsbridge::demo::{SEED_002_BEFORE, StandInCampaign, StandInIms};
use tokio::net::TcpListener;

const REVOKE_EVERY: Duration = Duration::from_secs(30);
const TOKEN_LIFETIME: Duration = Duration::from_secs(2);

#[derive(Default)]
struct Counts {
    sent: AtomicU64,
    ok: AtomicU64,
    failed: AtomicU64,
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let seconds: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(300);
    let concurrency: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(16);

    let ims = StandInIms::start().await.expect("stand-in IMS");
    ims.add_client("soak-client", "soak-client-secret");
    ims.set_lifetime(TOKEN_LIFETIME);
    let campaign = StandInCampaign::start(Some(ims.token_check()))
        .await
        .expect("stand-in Campaign");
    let password = "soak-password-7f3a";
    let config = format!(
        r#"
[upstream]
url = "{campaign}"
timeout = "10s"

[ims]
host = "{ims}"
timeout = "5s"

[profiles.soak]
type = "oauth"
client_id = "soak-client"
client_secret = "soak-client-secret"
scopes = ["openid", "AdobeID"]

[[callers]]
name = "soak"
login = "mc"
password = "{hash}"
profile = "soak"
"#,
        campaign = campaign.url(),
        ims = ims.url(),
        hash = imsbridge::cli::hash_password(password),
    );
    let config = Config::parse(&config, Path::new("."), &HashMap::new()).expect("config");
    let proxy = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = proxy.local_addr().unwrap();
    tokio::spawn(imsbridge::run(
        imsbridge::Listeners {
            proxy: proxy.into(),
            admin: None,
        },
        config,
        std::future::pending(),
    ));

    let body = Bytes::from(SEED_002_BEFORE.replace("SESSION_TOKEN", &format!("mc/{password}")));
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let counts = Arc::new(Counts::default());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds);
    println!(
        "soak: {seconds} s, {concurrency} concurrent callers, {}-second tokens, all tokens revoked every {} s",
        TOKEN_LIFETIME.as_secs(),
        REVOKE_EVERY.as_secs()
    );
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (client, counts, body) = (client.clone(), counts.clone(), body.clone());
            tokio::spawn(async move {
                while tokio::time::Instant::now() < deadline {
                    let request = Request::post(format!("http://{addr}/nl/jsp/soaprouter.jsp"))
                        .header("content-type", "text/xml; charset=utf-8")
                        .header("soapaction", "nms:rtEvent#PushEvent")
                        .body(Full::new(body.clone()))
                        .unwrap();
                    counts.sent.fetch_add(1, Ordering::Relaxed);
                    let ok = match client.request(request).await {
                        Ok(response) => {
                            let status = response.status();
                            let read = response.into_body().collect().await.is_ok();
                            status == 200 && read
                        }
                        Err(_) => false,
                    };
                    let counter = if ok { &counts.ok } else { &counts.failed };
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();

    let started = tokio::time::Instant::now();
    let mut next_revoke = started + REVOKE_EVERY;
    let mut revocations = 0;
    while tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(10).min(deadline - tokio::time::Instant::now()))
            .await;
        if tokio::time::Instant::now() >= next_revoke {
            ims.revoke_all();
            revocations += 1;
            next_revoke += REVOKE_EVERY;
        }
        println!(
            "  {:>4} s: sent {}, failed {}, token fetches {}",
            started.elapsed().as_secs(),
            counts.sent.load(Ordering::Relaxed),
            counts.failed.load(Ordering::Relaxed),
            ims.token_requests()
        );
    }
    for worker in workers {
        let _ = worker.await;
    }
    let sent = counts.sent.load(Ordering::Relaxed);
    let failed = counts.failed.load(Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    println!("requests sent:   {sent} ({:.0}/s)", sent as f64 / elapsed);
    println!("requests failed: {failed}");
    println!(
        "token fetches:   {} ({revocations} revocations)",
        ims.token_requests()
    );
    println!(
        "calls refused by Campaign and replayed: {}",
        campaign.refused()
    );
    if failed > 0 {
        std::process::exit(1);
    }
}
