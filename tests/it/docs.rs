//! The documentation does what it says. Every `imsbridge` command that README.md and docs/*.md
//! show is one the binary takes, every TOML block of theirs uses keys the parser knows, and the
//! steps of the Quick start and of docs/deploy.md (the secrets, systemd, the container,
//! Kubernetes) are run as written, against the stand-ins: the shell commands by bash, in a
//! folder of their own, with the machine's absolute paths (`/etc`, `/usr/local/bin`, `/var/lib`)
//! under it. What cannot run here is replaced by what it does, and said so where it is:
//! `systemctl` (the unit's `LoadCredential=` and `StateDirectory=`, as paths), `docker run` (its
//! mounts as paths, its environment, the image's command from the Dockerfile), `kubectl` and
//! `kustomize` (the kustomization's files and the config read as the pod would).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine;
use bytes::Bytes;
use http::Request;

use super::cli::{Running, temp_dir};
use crate::support::*;
use imsbridge::demo::{StandInCampaign, StandInIms};

const BIN: &str = env!("CARGO_BIN_EXE_imsbridge");

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// README.md and every page of docs/, by name.
fn pages() -> Vec<(String, String)> {
    let mut pages = vec![("README.md".to_owned(), read("README.md"))];
    let mut names: Vec<String> = std::fs::read_dir(repo("docs"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".md"))
        .collect();
    names.sort();
    for name in names {
        let text = read(&format!("docs/{name}"));
        pages.push((format!("docs/{name}"), text));
    }
    pages
}

/// The fenced blocks of `text` whose info string is `lang`, their indentation (a list's)
/// taken off.
fn blocks(text: &str, lang: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut current: Option<(usize, Vec<String>)> = None;
    for line in text.lines() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        match &mut current {
            None if trimmed == format!("```{lang}") => current = Some((indent, Vec::new())),
            Some(_) if trimmed == "```" => {
                let (_, lines) = current.take().unwrap();
                found.push(lines.join("\n") + "\n");
            }
            Some((indent, lines)) => {
                let cut = line.len().min(*indent);
                lines.push(line[cut..].to_owned());
            }
            None => {}
        }
    }
    found
}

/// The part of `text` under the heading `## title` (or `### title`), up to the next heading of
/// that level or above.
fn section<'a>(text: &'a str, title: &str) -> &'a str {
    for level in ["## ", "### "] {
        let heading = format!("\n{level}{title}\n");
        if let Some(at) = text.find(&heading) {
            let rest = &text[at + heading.len()..];
            let end = rest.find(&format!("\n{level}")).unwrap_or(rest.len());
            let end = rest[..end].find("\n## ").unwrap_or(end);
            return &rest[..end];
        }
    }
    panic!("no section {title}")
}

/// A shell line split into simple commands, each into its words: quotes taken off, `#`
/// comments dropped, `\` continuations joined; `|`, `&&`, `;`, `&`, `(`, `)` end a command.
fn simple_commands(script: &str) -> Vec<Vec<String>> {
    let script = script.replace("\\\n", " ");
    let mut commands = Vec::new();
    for line in script.lines() {
        let mut words: Vec<String> = Vec::new();
        let mut word = String::new();
        let mut in_word = false;
        let mut chars = line.chars().peekable();
        let mut quote: Option<char> = None;
        let end = |words: &mut Vec<String>, word: &mut String, in_word: &mut bool| {
            if *in_word {
                words.push(std::mem::take(word));
                *in_word = false;
            }
        };
        while let Some(c) = chars.next() {
            match (quote, c) {
                (Some(q), c) if c == q => quote = None,
                (Some(_), c) => word.push(c),
                (None, '\'' | '"') => {
                    quote = Some(c);
                    in_word = true;
                }
                (None, '#') if !in_word => break,
                (None, ' ' | '\t') => end(&mut words, &mut word, &mut in_word),
                (None, '|' | ';' | '&' | '(' | ')') => {
                    end(&mut words, &mut word, &mut in_word);
                    if chars.peek() == Some(&c) {
                        chars.next();
                    }
                    commands.push(std::mem::take(&mut words));
                }
                (None, c) => {
                    word.push(c);
                    in_word = true;
                }
            }
        }
        end(&mut words, &mut word, &mut in_word);
        commands.push(words);
    }
    commands.retain(|words| !words.is_empty());
    commands
}

/// The arguments of an `imsbridge` command (after `VAR=value` words and the program's path),
/// up to a redirection; `None` for any other program.
fn imsbridge_args(words: &[String]) -> Option<Vec<String>> {
    let mut words = words.iter().skip_while(|w| {
        w.split_once('=').is_some_and(|(name, _)| {
            !name.is_empty() && name.chars().all(|c| c.is_ascii_uppercase() || c == '_')
        })
    });
    let program = words.next()?;
    if Path::new(program).file_name()? != "imsbridge" {
        return None;
    }
    Some(
        words
            .take_while(|w| !w.starts_with('>') && !w.starts_with('<') && !w.starts_with("2>"))
            .cloned()
            .collect(),
    )
}

#[test]
fn every_imsbridge_command_the_docs_show_is_one_the_binary_takes() {
    let mut checked = 0;
    for (page, text) in pages() {
        for block in blocks(&text, "sh") {
            for words in simple_commands(&block) {
                let Some(args) = imsbridge_args(&words) else {
                    continue;
                };
                // Every option and subcommand known: clap refuses an unknown one before it
                // reads `--help`.
                let output = Command::new(BIN)
                    .args(&args)
                    .arg("--help")
                    .output()
                    .unwrap();
                assert!(
                    output.status.success(),
                    "{page}: `imsbridge {}` is not a command the binary takes:\n{}",
                    args.join(" "),
                    String::from_utf8_lossy(&output.stderr)
                );
                checked += 1;
            }
        }
    }
    // The extraction works: the pages show dozens.
    assert!(checked >= 10, "only {checked} commands found");
    // And the check can fail.
    let output = Command::new(BIN)
        .args(["cutover", "--admin-url", "x", "--help"])
        .output()
        .unwrap();
    assert!(!output.status.success());
}

#[test]
fn every_toml_block_of_the_docs_uses_keys_the_parser_knows() {
    let dir = temp_dir("docs-toml");
    let env = HashMap::new();
    let mut checked = 0;
    for (page, text) in pages() {
        for block in blocks(&text, "toml") {
            // A block is often a part of a config: what it lacks (a secret's value, the
            // upstream) is not its fault; an unknown key or a value of the wrong type is.
            if let Err(error @ imsbridge::config::ConfigError::Syntax { .. }) =
                imsbridge::config::Config::parse(&block, &dir, &env)
                && !error.to_string().contains("missing field")
            {
                panic!("{page}: {error}\n{block}");
            }
            checked += 1;
        }
    }
    assert!(checked >= 8, "only {checked} blocks found");
    assert!(matches!(
        imsbridge::config::Config::parse("[server]\nlisen = \"x\"\n", &dir, &env),
        Err(imsbridge::config::ConfigError::Syntax { .. })
    ));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Runs `script` with bash in `dir`, `target/release/imsbridge` being this build's binary;
/// its standard output.
fn bash(dir: &Path, script: &str, env: &[(&str, &str)]) -> String {
    let output = Command::new("bash")
        .arg("-euo")
        .arg("pipefail")
        .arg("-c")
        .arg(script.replace("target/release/imsbridge", BIN))
        .current_dir(dir)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{script}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The password the docs' examples give the operator, and the admin page.
const OPERATOR_PASSWORD: &str = "the-operator-password";
const ADMIN_PASSWORD: &str = "a-password-for-the-admin-page";
/// The client the docs' configs name, and the secret docs/deploy.md gives it.
const DOCS_CLIENT_ID: &str = "0123456789abcdef0123456789abcdef";
const DOCS_CLIENT_SECRET: &str = "the-oauth-client-secret";

/// A stand-in IMS that knows the docs' client (with `secret`), a stand-in Campaign.
async fn docs_stand_ins(secret: &str) -> (StandInIms, StandInCampaign) {
    let ims = StandInIms::start().await.unwrap();
    ims.add_client(DOCS_CLIENT_ID, secret);
    let campaign = StandInCampaign::start(Some(ims.token_check()))
        .await
        .unwrap();
    (ims, campaign)
}

/// A config of the docs pointed at the stand-ins.
fn at_stand_ins(config: &str, ims: &StandInIms, campaign: &StandInCampaign) -> String {
    let config = config
        .replace("https://mycompany-mc.campaign.adobe.com", &campaign.url())
        .replace("https://ims-na1.adobelogin.com", &ims.url());
    assert!(config.contains(&campaign.url()) && config.contains(&ims.url()));
    config
}

/// The config's listeners on free ports (the docs name fixed ones).
fn on_free_ports(config: &str) -> String {
    config.replace(":8080\"", ":0\"").replace(":9090\"", ":0\"")
}

/// The seed-002 call of `mc` with `password`, through `proxy`.
async fn call(proxy: std::net::SocketAddr, password: &str) -> Answer {
    post(proxy, seed_002(&format!("mc/{password}")), &[]).await
}

async fn admin_get(admin: std::net::SocketAddr, path: &str, password: Option<&str>) -> u16 {
    let mut request = Request::get(path).header("host", "localhost");
    if let Some(password) = password {
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("ops:{password}"));
        request = request.header("authorization", format!("Basic {basic}"));
    }
    send(
        admin,
        request.body(http_body_util::Empty::<Bytes>::new()).unwrap(),
    )
    .await
    .status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quick_start_works_as_written() {
    let readme = read("README.md");
    let quick = section(&readme, "Quick start");
    let (ims, campaign) = docs_stand_ins(CLIENT_SECRET).await;
    let dir = temp_dir("docs-quick-start");
    let shell = blocks(quick, "sh");
    // Step 2: the hash (the build is this test's).
    let hash = bash(&dir, &shell[0].replace("cargo build --release\n", ""), &[]);
    let hash = hash.trim();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    // Step 3: the config, with the hash step 2 printed.
    let config = &blocks(quick, "toml")[0];
    let placeholder = "\"$argon2id$v=19$m=19456,t=2,p=1$…\"";
    assert!(config.contains(placeholder));
    let config = at_stand_ins(
        &config.replace(placeholder, &format!("\"{hash}\"")),
        &ims,
        &campaign,
    );
    std::fs::write(dir.join("imsbridge.toml"), on_free_ports(&config)).unwrap();
    // Step 4: check --probe, the secret in the environment as shown.
    let said = bash(
        &dir,
        &shell[1].replace(
            "MC_CLIENT_SECRET=…",
            &format!("MC_CLIENT_SECRET={CLIENT_SECRET}"),
        ),
        &[],
    );
    assert!(said.contains("the call ran as operator"), "{said}");
    // Step 5: run, and a call of the integration.
    assert!(shell[2].contains("imsbridge run --config imsbridge.toml"));
    let running = Running::start(&dir.join("imsbridge.toml"), "info");
    let answer = call(running.addr, OPERATOR_PASSWORD).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(admin_get(running.admin, "/readyz", None).await, 200);
    let (status, _) = running.stop();
    assert!(status.success());
    // [state] path: beside the config.
    assert!(dir.join("imsbridge-state.db").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// What the docs' shell commands use beyond bash and coreutils; `Err` names what is missing.
fn shell_tools() -> Result<(), String> {
    tool("openssl", &["version"])?;
    tool("curl", &["--version"])
}

/// A folder laid out as the repository is for docs/deploy.md's commands: `deploy/` (a copy),
/// `target/release/imsbridge` (this build's), and the secrets made by "The secrets"; `None`
/// (and a `SKIPPED` line) without the tools they use.
fn deploy_workdir(name: &str) -> Option<PathBuf> {
    if let Err(why) = shell_tools() {
        skip(name, &why);
        return None;
    }
    let dir = temp_dir(name);
    let _ = std::fs::remove_dir_all(&dir);
    copy_tree(&repo("deploy"), &dir.join("deploy"));
    std::fs::create_dir_all(dir.join("target/release")).unwrap();
    std::os::unix::fs::symlink(BIN, dir.join("target/release/imsbridge")).unwrap();
    let deploy = read("docs/deploy.md");
    // One shell, as a reader's terminal is: the first block's umask holds for the second.
    bash(
        &dir,
        &blocks(section(&deploy, "The secrets"), "sh").join("\n"),
        &[],
    );
    Some(dir)
}

#[test]
fn the_secrets_are_made_as_docs_deploy_says() {
    let Some(dir) = deploy_workdir("docs-secrets") else {
        return;
    };
    let secrets = dir.join("secrets");
    let mode = |name: &str| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(secrets.join(name))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode(""), 0o700);
    for name in [
        "mc-client-secret",
        "crm-events-password-hash",
        "admin-password-hash",
        "session-secret",
        "valkey-password",
    ] {
        assert_eq!(mode(name), 0o600, "{name}");
    }
    let text = |name: &str| std::fs::read_to_string(secrets.join(name)).unwrap();
    assert_eq!(text("mc-client-secret"), DOCS_CLIENT_SECRET);
    assert!(text("admin-password-hash").starts_with("$argon2id$"));
    assert!(text("session-secret").len() >= 32);
    assert_eq!(text("valkey-password").len(), 64);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_as_docs_deploy_says() {
    let Some(dir) = deploy_workdir("docs-systemd") else {
        return;
    };
    let root = dir.join("root");
    let deploy = read("docs/deploy.md");
    let systemd = section(&deploy, "systemd");
    let shell = blocks(systemd, "sh");
    // The install commands, their absolute paths under `root`; systemctl is what cannot run
    // here: what it would do follows.
    let mut installs = String::new();
    let mut systemctl = Vec::new();
    for line in shell[0].lines() {
        if line.starts_with("systemctl ") {
            systemctl.push(line.to_owned());
            continue;
        }
        assert!(line.starts_with("install "), "{line}");
        let root = root.display().to_string();
        installs.push_str(
            &line
                .replace(" /usr/local/bin/", &format!(" {root}/usr/local/bin/"))
                .replace(" /etc/", &format!(" {root}/etc/")),
        );
        installs.push('\n');
    }
    std::fs::create_dir_all(root.join("usr/local/bin")).unwrap();
    std::fs::create_dir_all(root.join("etc/systemd/system")).unwrap();
    bash(&dir, &installs, &[]);
    assert_eq!(
        systemctl,
        [
            "systemctl daemon-reload",
            "systemctl enable --now imsbridge"
        ]
    );
    // The unit as installed: its credentials are the files installed, its command the config.
    let unit = std::fs::read_to_string(root.join("etc/systemd/system/imsbridge.service")).unwrap();
    let credentials: Vec<(String, String)> = unit
        .lines()
        .filter_map(|l| l.strip_prefix("LoadCredential="))
        .map(|l| {
            let (name, path) = l.split_once(':').unwrap();
            (name.to_owned(), path.to_owned())
        })
        .collect();
    assert_eq!(credentials.len(), 3, "{credentials:?}");
    assert!(unit.contains(
        "ExecStart=/usr/local/bin/imsbridge run --config /etc/imsbridge/imsbridge.toml\n"
    ));
    assert!(unit.contains("StateDirectory=imsbridge\n"));
    // What systemd does at start: each credential at /run/credentials/imsbridge.service/NAME,
    // /var/lib/imsbridge made.
    let run_credentials = root.join("run/credentials/imsbridge.service");
    std::fs::create_dir_all(&run_credentials).unwrap();
    for (name, path) in &credentials {
        let installed = root.join(path.trim_start_matches('/'));
        assert!(
            installed.exists(),
            "LoadCredential={name}:{path}, not installed"
        );
        std::fs::copy(&installed, run_credentials.join(name)).unwrap();
    }
    std::fs::create_dir_all(root.join("var/lib/imsbridge")).unwrap();
    let config = std::fs::read_to_string(root.join("etc/imsbridge/imsbridge.toml")).unwrap();
    let (ims, campaign) = docs_stand_ins(DOCS_CLIENT_SECRET).await;
    // "Set upstream.url and the profile's client_id": the stand-ins'.
    let config = at_stand_ins(&config, &ims, &campaign)
        .replace(
            "/run/credentials/",
            &format!("{}/run/credentials/", root.display()),
        )
        .replace(
            "/var/lib/imsbridge/",
            &format!("{}/var/lib/imsbridge/", root.display()),
        );
    for (name, _) in &credentials {
        assert!(
            config.contains(&format!("/run/credentials/imsbridge.service/{name}\"")),
            "{name} unused"
        );
    }
    let path = root.join("etc/imsbridge/imsbridge.toml");
    std::fs::write(&path, on_free_ports(&config)).unwrap();
    let running = Running::start(&path, "info");
    let answer = call(running.addr, OPERATOR_PASSWORD).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    // Then: readyz, and the verdicts with the admin password as shown.
    let admin = running.admin.to_string();
    let then = shell[1]
        .lines()
        .filter(|l| !l.starts_with("systemctl "))
        .map(|l| {
            l.replace("127.0.0.1:9090", &admin)
                .replace("imsbridge cutover", "target/release/imsbridge cutover")
        })
        .collect::<Vec<_>>()
        .join("\n");
    let said = bash(&dir, &then, &[]);
    assert!(
        said.contains("ready") && said.contains("crm-events"),
        "{said}"
    );
    assert_eq!(admin_get(running.admin, "/", None).await, 401);
    assert_eq!(
        admin_get(running.admin, "/", Some(ADMIN_PASSWORD)).await,
        200
    );
    let (status, log) = running.stop();
    assert!(status.success(), "{log}");
    assert!(root.join("var/lib/imsbridge/state.db").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The image's command: the Dockerfile's `ENTRYPOINT` and `CMD`, exec form.
fn image_command() -> Vec<String> {
    let dockerfile = read("deploy/container/Dockerfile");
    let exec = |instruction: &str| -> Vec<String> {
        let line = dockerfile
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{instruction} ")))
            .unwrap_or_else(|| panic!("no {instruction}"));
        serde_json::from_str(line).unwrap()
    };
    let mut command = exec("ENTRYPOINT");
    command.extend(exec("CMD"));
    command
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_container_runs_as_docs_deploy_says() {
    let Some(dir) = deploy_workdir("docs-container") else {
        return;
    };
    let deploy = read("docs/deploy.md");
    let container = section(&deploy, "Container");
    let shell = blocks(container, "sh");
    assert!(shell[0].starts_with("docker build -f deploy/container/Dockerfile"));
    // The Quick start's config as written (at the stand-ins, with the hash of its step 2).
    let (ims, campaign) = docs_stand_ins(DOCS_CLIENT_SECRET).await;
    let readme = read("README.md");
    let quick = &blocks(section(&readme, "Quick start"), "toml")[0];
    let hash = bash(
        &dir,
        &format!("printf '%s\\n' '{OPERATOR_PASSWORD}' | target/release/imsbridge hash-password"),
        &[],
    );
    let quick = at_stand_ins(
        &quick.replace(
            "\"$argon2id$v=19$m=19456,t=2,p=1$…\"",
            &format!("\"{}\"", hash.trim()),
        ),
        &ims,
        &campaign,
    );
    std::fs::write(dir.join("imsbridge.toml"), quick).unwrap();
    // The container's config, made as shown.
    bash(&dir, &shell[1], &[]);
    let container_config = std::fs::read_to_string(dir.join("imsbridge-container.toml")).unwrap();
    assert!(container_config.contains("admin_listen = \"0.0.0.0:9090\""));
    assert!(container_config.contains("path = \"/var/lib/imsbridge/state.db\""));
    // `docker run`, read: its mounts, its environment, the image's command.
    let mut env: Vec<(String, String)> = Vec::new();
    let mut mounts: Vec<(String, PathBuf)> = Vec::new();
    let mut image = None;
    for words in simple_commands(&shell[2]) {
        match words[0].as_str() {
            "export" => {
                let (name, value) = words[1].split_once('=').unwrap();
                env.push((name.to_owned(), value.to_owned()));
            }
            "docker" => {
                assert_eq!(words[1], "run");
                let mut words = words[2..].iter();
                while let Some(word) = words.next() {
                    match word.as_str() {
                        "--rm" => {}
                        "-p" => {
                            let ports = words.next().unwrap();
                            assert!(["8080:8080", "9090:9090"].contains(&ports.as_str()));
                        }
                        "-v" => {
                            let spec = words.next().unwrap();
                            let mut parts = spec.split(':');
                            let (from, to) = (parts.next().unwrap(), parts.next().unwrap());
                            let host = match from.strip_prefix("$PWD/") {
                                Some(file) => dir.join(file),
                                // A named volume: a folder of its own, empty at first.
                                None => {
                                    let volume = dir.join("volumes").join(from);
                                    std::fs::create_dir_all(&volume).unwrap();
                                    volume
                                }
                            };
                            mounts.push((to.to_owned(), host));
                        }
                        "-e" => {
                            let name = words.next().unwrap();
                            assert!(env.iter().any(|(n, _)| n == name), "-e {name}, never set");
                        }
                        other if image.is_none() && !other.starts_with('-') => {
                            image = Some(other.to_owned());
                        }
                        other => panic!("a docker run argument this test does not know: {other}"),
                    }
                }
            }
            other => panic!("{other}"),
        }
    }
    assert_eq!(image.as_deref(), Some("imsbridge:0.1.0"));
    // The container's paths, as the mounts make them.
    let mapped = |text: &str| {
        mounts.iter().fold(text.to_owned(), |text, (to, host)| {
            text.replace(to.as_str(), &host.display().to_string())
        })
    };
    let command = image_command();
    assert_eq!(command[0], "/usr/local/bin/imsbridge");
    let config_at = command
        .iter()
        .position(|w| w == "--config")
        .map(|i| command[i + 1].clone())
        .unwrap();
    let mounted_config = mounts
        .iter()
        .find(|(to, _)| *to == config_at)
        .map(|(_, host)| host.clone())
        .expect("the config the image reads is mounted");
    // The mounted config, read in the container: its paths the mounts', its ports free ones.
    let read_in_container = dir.join("in-container.toml");
    std::fs::write(
        &read_in_container,
        on_free_ports(&mapped(&std::fs::read_to_string(&mounted_config).unwrap())),
    )
    .unwrap();
    let mut args: Vec<String> = command[1..].to_vec();
    let at = args.iter().position(|w| w == "--config").unwrap();
    args[at + 1] = read_in_container.display().to_string();
    let mut run = Command::new(BIN);
    run.args(&args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().map(|(n, v)| (n.as_str(), v.as_str())));
    let running = Running::spawn(&mut run);
    assert!(running.admin.ip().is_unspecified(), "{}", running.admin);
    let admin = std::net::SocketAddr::from(([127, 0, 0, 1], running.admin.port()));
    let proxy = std::net::SocketAddr::from(([127, 0, 0, 1], running.addr.port()));
    let answer = call(proxy, OPERATOR_PASSWORD).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(admin_get(admin, "/readyz", None).await, 200);
    assert_eq!(admin_get(admin, "/metrics", None).await, 200);
    assert_eq!(admin_get(admin, "/", None).await, 401);
    assert_eq!(admin_get(admin, "/", Some(ADMIN_PASSWORD)).await, 200);
    let (status, log) = running.stop();
    assert!(status.success(), "{log}");
    // With its password, the admin listener on 0.0.0.0 is not warned of.
    assert!(!log.contains("has no [admin] password"), "{log}");
    // The state went to the volume.
    assert!(dir.join("volumes/imsbridge-state/state.db").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn kubernetes_secrets_and_config_as_docs_deploy_says() {
    let Some(dir) = deploy_workdir("docs-kubernetes") else {
        return;
    };
    let deploy = read("docs/deploy.md");
    let kubernetes = section(&deploy, "Kubernetes");
    let shell = blocks(kubernetes, "sh");
    // The Secret's files, copied as shown.
    let copy = shell
        .iter()
        .find(|block| block.contains("deploy/kubernetes/secrets"))
        .unwrap();
    bash(&dir, copy, &[]);
    let kustomization = read("deploy/kubernetes/kustomization.yaml");
    let generated: Vec<&str> = kustomization
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- secrets/"))
        .collect();
    assert_eq!(generated.len(), 5, "{generated:?}");
    let secrets = dir.join("deploy/kubernetes/secrets");
    for name in &generated {
        assert!(
            secrets.join(name).exists(),
            "the secretGenerator's {name} was not made"
        );
    }
    // The config as a pod reads it: the Secret's files where the volume mounts them.
    let config = read("deploy/kubernetes/imsbridge.toml").replace(
        "/etc/imsbridge/secrets/",
        &format!("{}/", secrets.display()),
    );
    let valkey_password = std::fs::read_to_string(secrets.join("valkey-password")).unwrap();
    let env = HashMap::from([(
        "REDIS_URL".to_owned(),
        format!("redis://:{valkey_password}@imsbridge-valkey:6379/0"),
    )]);
    let parsed = imsbridge::config::Config::parse(&config, &dir, &env).unwrap();
    assert!(parsed.admin.password.is_some());
    assert!(parsed.sessions.is_some());
    // What cannot run here: the commands are shown, and name this folder.
    let all = shell.join("\n");
    for command in [
        "kubectl apply -k deploy/kubernetes",
        "kubectl -n imsbridge rollout status deployment/imsbridge",
        "kubectl label namespace crm imsbridge/caller=true",
    ] {
        assert!(all.contains(command), "{command}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A heading's anchor as GitHub makes it: lower case, spaces to `-`, punctuation dropped.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

#[test]
fn every_link_of_the_docs_reaches_a_page_and_a_heading() {
    let pages = pages();
    let anchors = |text: &str| -> Vec<String> {
        let mut in_code = false;
        text.lines()
            .filter(|line| {
                if line.trim_start().starts_with("```") {
                    in_code = !in_code;
                }
                !in_code && line.starts_with('#')
            })
            .map(|line| anchor(line.trim_start_matches('#')))
            .collect()
    };
    let mut checked = 0;
    for (page, text) in &pages {
        let base = repo(page).parent().unwrap().to_path_buf();
        for link in text.split("](").skip(1) {
            let target = link.split(')').next().unwrap();
            if target.starts_with("http") {
                continue;
            }
            let (path, fragment) = target.split_once('#').unwrap_or((target, ""));
            let file = if path.is_empty() {
                repo(page)
            } else {
                base.join(path)
            };
            assert!(file.exists(), "{page}: {target}: no {}", file.display());
            if !fragment.is_empty() {
                let text = std::fs::read_to_string(&file).unwrap();
                assert!(
                    anchors(&text).iter().any(|a| a == fragment),
                    "{page}: {target}: no such heading"
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 20, "only {checked} links");
}

#[test]
fn the_readme_speaks_to_a_new_user() {
    let readme = read("README.md");
    // The first screen and the Quick start; the reference is in docs/.
    assert!(
        readme.lines().count() < 250,
        "{} lines",
        readme.lines().count()
    );
    for page in [
        "callers",
        "configuration",
        "migration",
        "operations",
        "deploy",
        "performance",
        "development",
    ] {
        assert!(readme.contains(&format!("(docs/{page}.md)")), "{page}");
    }
    // Words only this repository knows.
    for word in [
        "seed 00",
        "issue 1",
        "issue 2",
        "the `ims` way",
        "the ims way",
    ] {
        assert!(!readme.contains(word), "{word}");
    }
    // Logoff is said once, in docs/configuration.md, with the state store's rule.
    let configuration = read("docs/configuration.md");
    assert_eq!(configuration.matches("**Logoff**").count(), 1);
    for page in pages() {
        assert!(!page.1.contains("Logoff is answered locally"), "{}", page.0);
    }
}

#[test]
fn what_the_try_out_and_the_deployment_write_is_ignored_by_git() {
    if let Err(why) = tool("git", &["--version"]) {
        return skip(
            "what_the_try_out_and_the_deployment_write_is_ignored_by_git",
            &why,
        );
    }
    let ignored = |path: &str| {
        Command::new("git")
            .args(["check-ignore", "-q", path])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .unwrap()
            .success()
    };
    if !ignored("target/x") {
        // Not a git checkout (a crate tarball): nothing to ask.
        return skip(
            "what_the_try_out_and_the_deployment_write_is_ignored_by_git",
            "not a git checkout",
        );
    }
    for path in [
        "imsbridge-try.toml",
        "imsbridge-state.db",
        "imsbridge-container.toml",
        "secrets/mc-client-secret",
        "deploy/kubernetes/secrets/mc-client-secret",
    ] {
        assert!(ignored(path), "{path} is not ignored");
    }
    assert!(!ignored("deploy/kubernetes/kustomization.yaml"));
}
