//! The admin listener's `[admin] password`: what names logins, addresses and verdicts asks for
//! HTTP Basic authentication; what probes and Prometheus read stays open; wrong guesses meet
//! the callers' failure limits; `imsbridge inventory` and `cutover` send it.

use std::net::SocketAddr;

use base64::Engine;
use bytes::Bytes;
use http::Request;

use crate::support::*;

const ADMIN_PASSWORD: &str = "admin-password-6e1f";

/// `[admin]` with the password's hash.
fn admin_table() -> String {
    format!("[admin]\npassword = \"{}\"\n", cheap_hash(ADMIN_PASSWORD))
}

/// `GET path` with `authorization` (none when `None`).
async fn get_with(admin: SocketAddr, path: &str, authorization: Option<&str>) -> Answer {
    let mut request = Request::get(path).header("host", "localhost");
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    send(
        admin,
        request.body(http_body_util::Empty::<Bytes>::new()).unwrap(),
    )
    .await
}

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

fn assert_asks_for_password(answer: &Answer, path: &str) {
    assert_eq!(answer.status, 401, "{path}: {}", answer.body);
    assert_eq!(
        answer.headers.get("www-authenticate").unwrap(),
        "Basic realm=\"imsbridge\", charset=\"UTF-8\"",
        "{path}"
    );
    // Nothing of what the page guards is in the refusal.
    for guarded in [LOGIN, LEGACY_LOGIN, "crm-events", "127.0.0.1"] {
        assert!(
            !answer.body.contains(guarded),
            "{path} shows {guarded}: {}",
            answer.body
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_the_inventory_and_the_verdicts_ask_for_the_password() {
    let stack = Stack::start(&admin_table(), "").await;
    // A call, so that the inventory and the page have a login and an address to show.
    let answer = post(stack.url(), seed_002(&credential()), &[]).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let admin = stack.proxy.admin;
    let right = basic("anyone", ADMIN_PASSWORD);
    for path in ["/", "/inventory", "/cutover"] {
        assert_asks_for_password(&get_with(admin, path, None).await, path);
        for wrong in [
            basic("admin", "not-the-password"),
            basic("admin", ""),
            format!("Bearer {ADMIN_PASSWORD}"),
            "Basic !!!not-base64".to_owned(),
            // The password alone, not `user:password`.
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(ADMIN_PASSWORD)
            ),
        ] {
            assert_asks_for_password(&get_with(admin, path, Some(&wrong)).await, path);
        }
        // Any user name, that password; the scheme's name in any case.
        for authorization in [
            right.clone(),
            basic("", ADMIN_PASSWORD),
            right.replace("Basic", "basic"),
        ] {
            let answer = get_with(admin, path, Some(&authorization)).await;
            assert_eq!(answer.status, 200, "{path}: {}", answer.body);
        }
    }
    let page = get_with(admin, "/", Some(&right)).await;
    assert!(page.body.contains(LOGIN), "{}", page.body);
    let inventory = get_with(admin, "/inventory", Some(&right)).await;
    assert!(
        inventory.body.contains(&format!("\"{LOGIN}\"")),
        "{}",
        inventory.body
    );
    // Probes and Prometheus need none.
    for path in ["/healthz", "/readyz", "/metrics"] {
        let answer = get_with(admin, path, None).await;
        assert_eq!(answer.status, 200, "{path}: {}", answer.body);
    }
    // The password never shows, in clear or hashed, on what is open.
    let metrics = get(admin, "/metrics").await;
    assert!(!metrics.body.contains(ADMIN_PASSWORD));
    assert!(!metrics.body.contains("$argon2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_password_the_page_stays_open() {
    let stack = Stack::default().await;
    for path in ["/", "/inventory", "/cutover"] {
        let answer = get_with(stack.proxy.admin, path, None).await;
        assert_eq!(answer.status, 200, "{path}: {}", answer.body);
        assert!(answer.headers.get("www-authenticate").is_none());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_admin_passwords_meet_the_callers_failure_limits() {
    let (ims, campaign) = stand_ins().await;
    let text = with_server(
        &config_text(&ims.url(), &campaign.url(), &admin_table(), ""),
        "password_failures = { per_login = \"3/h\", per_peer = \"1000/h\" }",
    );
    let proxy = Proxy::start(&text).await;
    for attempt in 0..3 {
        let wrong = basic("admin", &format!("guess-{attempt}"));
        assert_asks_for_password(&get_with(proxy.admin, "/", Some(&wrong)).await, "/");
    }
    // Past the limit, even the right password is refused (argon2 is not run): as for a
    // caller's login, the window has to pass.
    let right = basic("admin", ADMIN_PASSWORD);
    assert_asks_for_password(&get_with(proxy.admin, "/", Some(&right)).await, "/");
    assert_asks_for_password(
        &get_with(proxy.admin, "/cutover", Some(&right)).await,
        "/cutover",
    );
    // Probes are not locked out.
    assert_eq!(get(proxy.admin, "/readyz").await.status, 200);
    // The callers' own logins are not counted against: `mc` still gets through.
    let answer = post(proxy.addr, seed_002(&credential()), &[]).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    proxy.stop().await;
}

/// `imsbridge ARGS` with `env`, run off the runtime's threads.
async fn imsbridge(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_imsbridge"));
    command
        .args(args)
        .env_remove("IMSBRIDGE_ADMIN_PASSWORD")
        .envs(env.iter().copied());
    tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inventory_and_cutover_send_the_password_from_the_environment_or_a_file() {
    let stack = Stack::start(&admin_table(), "").await;
    let answer = post(stack.url(), seed_002(&credential()), &[]).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let admin = format!("http://{}", stack.proxy.admin);
    let dir = std::env::temp_dir().join(format!("imsbridge-admin-password-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("admin-password");
    std::fs::write(&file, format!("{ADMIN_PASSWORD}\n")).unwrap();
    let file = file.to_str().unwrap();
    let wrong_file = dir.join("wrong");
    std::fs::write(&wrong_file, "not-it").unwrap();
    let wrong_file = wrong_file.to_str().unwrap();

    for command in ["inventory", "cutover"] {
        // None: it says where the password goes.
        let refused = imsbridge(&[command, "--admin", &admin], &[]).await;
        assert!(!refused.status.success());
        let said = String::from_utf8_lossy(&refused.stderr);
        assert!(
            said.contains("IMSBRIDGE_ADMIN_PASSWORD") && said.contains("--admin-password-file"),
            "{said}"
        );
        // A wrong one: it says so, and never shows it.
        let wrong = imsbridge(
            &[
                command,
                "--admin",
                &admin,
                "--admin-password-file",
                wrong_file,
            ],
            &[],
        )
        .await;
        assert!(!wrong.status.success());
        let said = String::from_utf8_lossy(&wrong.stderr);
        assert!(said.contains("refused the admin password"), "{said}");
        assert!(!said.contains("not-it"), "{said}");
        // From the environment, and from a file (which wins over the environment).
        for (args, env) in [
            (
                vec![command, "--admin", &admin],
                vec![("IMSBRIDGE_ADMIN_PASSWORD", ADMIN_PASSWORD)],
            ),
            (
                vec![command, "--admin", &admin, "--admin-password-file", file],
                vec![("IMSBRIDGE_ADMIN_PASSWORD", "not-it")],
            ),
        ] {
            let read = imsbridge(&args, &env).await;
            let shown = String::from_utf8_lossy(&read.stdout);
            assert!(
                read.status.success(),
                "{args:?}: {shown}{}",
                String::from_utf8_lossy(&read.stderr)
            );
            // The `mc` login's caller, in the inventory's table as in the verdicts'.
            assert!(shown.contains("crm-events"), "{shown}");
        }
    }
    // A file that cannot be read: named.
    let missing = imsbridge(
        &[
            "cutover",
            "--admin",
            &admin,
            "--admin-password-file",
            "/nonexistent/pw",
        ],
        &[],
    )
    .await;
    assert!(!missing.status.success());
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("--admin-password-file /nonexistent/pw"),
        "{}",
        String::from_utf8_lossy(&missing.stderr)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
