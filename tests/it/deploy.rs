//! The deployment files hold what they claim: Kubernetes manifests valid against the
//! Kubernetes schemas (with `kubernetes-validate`, installed from PyPI by this test), probes and
//! references that match the config they carry, a systemd unit that `systemd-analyze verify`
//! accepts, a Grafana dashboard and Prometheus alerts whose queries name metrics the proxy
//! exports, and a container image without a shell that runs as non-root.
//!
//! The schema and unit checks need Python with pip and PyPI, and systemd-analyze: without
//! them they are skipped and say so, unless `IMSBRIDGE_REQUIRE_ALL_TESTS=1` (`.ci/run`).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::*;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

const MANIFESTS: [&str; 7] = [
    "secret.yaml",
    "deployment.yaml",
    "service.yaml",
    "hpa.yaml",
    "pdb.yaml",
    "networkpolicy.yaml",
    "valkey.yaml",
];
/// The validator and the Kubernetes version its schemas are checked against.
const VALIDATOR: &str = "kubernetes-validate==1.37.0";
const KUBERNETES: &str = "1.37.0";

/// `kubernetes-validate` in a virtualenv under `target/`, installed once; `Err` says why it
/// cannot be.
fn validator() -> Result<PathBuf, String> {
    let bin = |venv: &Path| venv.join("bin/kubernetes-validate");
    python_tool("kubernetes-validate", VALIDATOR, |venv| bin(venv).exists()).map(|v| bin(&v))
}

fn validate(validator: &Path, files: &[PathBuf]) -> (bool, String) {
    let output = Command::new(validator)
        .args(["--kubernetes-version", KUBERNETES, "--strict"])
        .args(files)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[test]
fn kubernetes_manifests_pass_the_kubernetes_schemas() {
    let validator = match validator() {
        Ok(validator) => validator,
        Err(why) => return skip("kubernetes_manifests_pass_the_kubernetes_schemas", &why),
    };
    let files: Vec<PathBuf> = MANIFESTS
        .iter()
        .map(|f| repo(&format!("deploy/kubernetes/{f}")))
        .collect();
    let (ok, text) = validate(&validator, &files);
    assert!(ok, "{text}");
    for file in MANIFESTS {
        assert!(
            text.contains(&format!("kubernetes/{file} passed")),
            "{file}:\n{text}"
        );
    }
    // The check can fail: a port that is not a number, an unknown field.
    let dir = std::env::temp_dir().join(format!("imsbridge-k8s-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let broken = dir.join("deployment.yaml");
    std::fs::write(
        &broken,
        read("deploy/kubernetes/deployment.yaml")
            .replace("containerPort: 8080", "containerPort: eighty")
            .replace(
                "readOnlyRootFilesystem: true",
                "readOnlyRootFilesystem: true\n            readOnlyEverything: true",
            ),
    )
    .unwrap();
    let (ok, text) = validate(&validator, &[broken]);
    assert!(!ok, "a broken manifest passed:\n{text}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_manifests_agree_with_the_config_they_carry() {
    let kustomization = read("deploy/kubernetes/kustomization.yaml");
    let deployment = read("deploy/kubernetes/deployment.yaml");
    let secret = read("deploy/kubernetes/secret.yaml");
    // The config the kustomization makes the ConfigMap of is a valid imsbridge config, secrets
    // from the Secret.
    let toml = read("deploy/kubernetes/imsbridge.toml");
    assert!(
        kustomization.contains(
            "configMapGenerator:\n  - name: imsbridge-config\n    files:\n      - imsbridge.toml\n"
        ),
        "{kustomization}"
    );
    // The same name across edits, and a directory mount: an edit reaches the running pods.
    assert!(kustomization.contains("disableNameSuffixHash: true"));
    assert!(
        !deployment.contains("subPath"),
        "Kubernetes never updates a subPath mount"
    );
    assert!(deployment.contains("mountPath: /etc/imsbridge/config\n"));
    assert!(deployment.contains("\"--config\", \"/etc/imsbridge/config/imsbridge.toml\""));
    let dir = std::env::temp_dir().join(format!("imsbridge-k8s-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mounted = "/etc/imsbridge/secrets/";
    for line in secret
        .lines()
        .filter(|l| l.starts_with("  ") && l.contains(": \""))
    {
        let name = line.trim().split(':').next().unwrap();
        // A file of the mounted Secret, or (the state store's password) an environment
        // variable the Deployment makes of it.
        assert!(
            toml.contains(&format!("{mounted}{name}"))
                || deployment.contains(&format!("key: {name}\n")),
            "{name} is not used by the config"
        );
        let value = match name {
            "crm-events-password-hash" => cheap_hash("x"),
            _ => "a-secret-of-more-than-thirty-two-characters".to_owned(),
        };
        std::fs::write(dir.join(name), value).unwrap();
    }
    let toml = toml.replace(mounted, &format!("{}/", dir.display()));
    // REDIS_URL as the Deployment makes it, for the Valkey of valkey.yaml.
    assert!(toml.contains("redis = { env = \"REDIS_URL\" }"));
    assert!(deployment.contains(
        "- name: REDIS_URL\n              value: \"redis://:$(VALKEY_PASSWORD)@imsbridge-valkey:6379/0\""
    ));
    let valkey = read("deploy/kubernetes/valkey.yaml");
    assert!(valkey.contains("name: imsbridge-valkey\n") && valkey.contains("port: 6379"));
    let mut env = env();
    env.insert(
        "REDIS_URL".to_owned(),
        "redis://:password@imsbridge-valkey:6379/0".to_owned(),
    );
    let config = imsbridge::config::Config::parse(&toml, &dir, &env).unwrap();
    assert!(matches!(
        config.state.backend,
        imsbridge::config::StateBackend::Redis { .. }
    ));
    // Probes reach the admin listener, callers the proxy listener.
    assert_eq!(config.server.admin_listen.to_string(), "0.0.0.0:9090");
    assert_eq!(config.server.listen.to_string(), "0.0.0.0:8080");
    assert!(deployment.contains("name: admin\n              containerPort: 9090"));
    assert!(deployment.contains("name: soap\n              containerPort: 8080"));
    assert!(deployment.contains("path: /readyz\n              port: admin"));
    assert!(deployment.contains("path: /healthz\n              port: admin"));
    // References resolve.
    assert!(
        deployment.contains("secretName: imsbridge-credentials")
            && secret.contains("name: imsbridge-credentials")
    );
    assert!(deployment.contains("name: imsbridge-config"));
    assert!(deployment.contains(&format!("mountPath: {}", mounted.trim_end_matches('/'))));
    // The grace period outlasts the drain.
    assert!(config.server.limits.shutdown_grace.as_secs() < 45);
    assert!(deployment.contains("terminationGracePeriodSeconds: 45"));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `systemd-analyze ARGS` on `unit` as installed, with the binary where this build put it.
fn systemd_analyze(args: &[&str], unit: &str) -> std::process::Output {
    static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let run = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("imsbridge-systemd-{}-{run}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("imsbridge.service");
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/imsbridge", env!("CARGO_BIN_EXE_imsbridge")),
    )
    .unwrap();
    let output = Command::new("systemd-analyze")
        .args(args)
        .arg(&path)
        .output()
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    output
}

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify() {
    if let Err(why) = tool("systemd-analyze", &["--version"]) {
        return skip("the_systemd_unit_passes_systemd_analyze_verify", &why);
    }
    let verify = |unit: &str| {
        let output = systemd_analyze(&["verify"], unit);
        // It only warns for what it ignores: silence is the verdict.
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        (output.status.success() && said.trim().is_empty(), said)
    };
    let unit = read("deploy/systemd/imsbridge.service");
    let (ok, said) = verify(&unit);
    assert!(ok, "{said}");
    for setting in [
        "DynamicUser=yes",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "LoadCredential=",
        "KillSignal=SIGTERM",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "Type=notify\n",
        "NotifyAccess=main",
        // The directory of [state] path, the service's own.
        "StateDirectory=imsbridge\n",
        "path = \"/var/lib/imsbridge/state.db\"",
    ] {
        assert!(unit.contains(setting), "{setting}");
    }
    let (ok, said) = verify(&unit.replace("ProtectSystem=strict", "ProtectSystem=sometimes"));
    assert!(!ok, "a broken unit passed: {said}");

    // The hardening stays where it was (exposure 1.5, "OK", with Type=exec before Type=notify).
    let exposure = |unit: &str| {
        let output = systemd_analyze(&["security", "--offline=true", "--no-pager"], unit);
        let said = String::from_utf8_lossy(&output.stdout).into_owned();
        said.lines()
            .find_map(|l| {
                l.split("Overall exposure level for imsbridge.service: ")
                    .nth(1)
            })
            .and_then(|rest| rest.split_whitespace().next()?.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no exposure level:\n{said}"))
    };
    assert!(exposure(&unit) <= 1.5, "{}", exposure(&unit));
    // The measure can fail: with the capabilities kept, the exposure rises.
    assert!(exposure(&unit.replace("CapabilityBoundingSet=\n", "")) > 1.5);
}

#[tokio::test]
async fn the_dashboard_queries_metrics_the_proxy_exports() {
    let dashboard: serde_json::Value =
        serde_json::from_str(&read("deploy/grafana/imsbridge.json")).unwrap();
    let mut exprs = Vec::new();
    fn walk(value: &serde_json::Value, exprs: &mut Vec<String>) {
        match value {
            serde_json::Value::Object(map) => {
                for (key, value) in map {
                    match (key.as_str(), value) {
                        ("expr", serde_json::Value::String(expr)) => exprs.push(expr.clone()),
                        _ => walk(value, exprs),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| walk(v, exprs)),
            _ => {}
        }
    }
    walk(&dashboard, &mut exprs);
    assert!(exprs.len() >= 10);
    // A panel per caller: its mode, and its share of ims traffic.
    let repeated: Vec<&str> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["repeat"] == "caller")
        .map(|p| p["title"].as_str().unwrap())
        .collect();
    assert_eq!(
        repeated,
        [
            "$caller: mode",
            "$caller: share of requests going the ims way"
        ]
    );

    assert_exported(&exprs).await;
}

/// Every metric the PromQL `exprs` name is exported by a proxy that served a call, and every
/// label they group by is one of its labels.
async fn assert_exported(exprs: &[String]) {
    let stack = Stack::default().await;
    assert_eq!(
        post(stack.url(), seed_002(&credential()), &[]).await.status,
        200
    );
    let metrics = get(stack.proxy.admin, "/metrics").await.body;
    for expr in exprs {
        for (at, _) in expr.match_indices("imsbridge_") {
            let name: String = expr[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            let family = ["_total", "_bucket", "_count", "_sum"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .unwrap_or(&name);
            assert!(
                metrics.contains(&format!("# TYPE {family} ")),
                "`{name}` in `{expr}` is not exported:\n{metrics}"
            );
        }
        for (at, _) in expr.match_indices("by (") {
            let labels = &expr[at + 4..];
            let labels = &labels[..labels.find(')').unwrap()];
            for label in labels.split(',').map(str::trim) {
                assert!(
                    metrics.contains(&format!("{label}=\"")),
                    "no metric has the label `{label}` of `{expr}`:\n{metrics}"
                );
            }
        }
    }
    stack.proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_alerts_are_prometheus_rules_on_metrics_the_proxy_exports() {
    // PyYAML comes with kubernetes-validate.
    let python = match validator() {
        Ok(validator) => validator.with_file_name("python"),
        Err(why) => {
            return skip(
                "the_alerts_are_prometheus_rules_on_metrics_the_proxy_exports",
                &why,
            );
        }
    };
    let load = |path: &str| -> serde_json::Value {
        let output = Command::new(&python)
            .args([
                "-c",
                "import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))",
            ])
            .arg(repo(path))
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{path}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).unwrap()
    };
    let rules = load("deploy/prometheus/alerts.yaml");
    // The operator's PrometheusRule carries the same groups; its ServiceMonitor scrapes the
    // admin port of the Service.
    let rule = load("deploy/kubernetes/prometheusrule.yaml");
    assert_eq!(rule["kind"], "PrometheusRule");
    assert_eq!(rule["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(
        rule["spec"]["groups"], rules["groups"],
        "prometheusrule.yaml differs"
    );
    let monitor = load("deploy/kubernetes/servicemonitor.yaml");
    let service = load("deploy/kubernetes/service.yaml");
    assert_eq!(monitor["kind"], "ServiceMonitor");
    assert_eq!(
        monitor["spec"]["selector"]["matchLabels"],
        service["metadata"]["labels"]
    );
    let endpoint = &monitor["spec"]["endpoints"][0];
    assert_eq!(endpoint["path"], "/metrics");
    assert!(
        service["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == endpoint["port"]),
        "the ServiceMonitor's port is the Service's"
    );
    let mut names = Vec::new();
    let mut exprs = Vec::new();
    for group in rules["groups"].as_array().unwrap() {
        assert!(group["name"].is_string());
        for rule in group["rules"].as_array().unwrap() {
            let name = rule["alert"].as_str().expect("an alert name");
            let fields: Vec<&str> = rule
                .as_object()
                .unwrap()
                .keys()
                .map(std::string::String::as_str)
                .collect();
            for field in &fields {
                assert!(
                    ["alert", "expr", "for", "labels", "annotations"].contains(field),
                    "{name}: `{field}` is no field of an alerting rule"
                );
            }
            assert!(
                ["warning", "critical"].contains(&rule["labels"]["severity"].as_str().unwrap()),
                "{name}"
            );
            assert!(rule["annotations"]["summary"].is_string(), "{name}");
            names.push(name.to_owned());
            exprs.push(rule["expr"].as_str().expect("an expression").to_owned());
        }
    }
    // Token health and Campaign's nodes: what /readyz leaves to alerts.
    for wanted in [
        "ImsbridgeTokenExpiringSoon",
        "ImsbridgeTokenFetchesFailing",
        "ImsbridgeCampaignNodeDown",
        "ImsbridgeCampaignUnreachable",
        "ImsbridgeCampaign5xx",
        "ImsbridgeConfigReloadRefused",
        "ImsbridgeRefusalsRising",
    ] {
        assert!(
            names.iter().any(|n| n == wanted),
            "{wanted} missing: {names:?}"
        );
    }
    assert_exported(&exprs).await;
}

#[test]
fn the_container_image_has_no_shell_and_runs_as_non_root() {
    let dockerfile = read("deploy/container/Dockerfile");
    let stages: Vec<&str> = dockerfile
        .lines()
        .filter(|l| l.starts_with("FROM "))
        .collect();
    assert_eq!(stages.len(), 2, "a build stage, then the runtime stage");
    assert!(
        stages[1].contains("gcr.io/distroless/") && stages[1].contains(":nonroot"),
        "{}",
        stages[1]
    );
    assert!(dockerfile.contains("USER nonroot"));
    assert!(dockerfile.contains("cargo build --release --locked"));
    assert!(
        dockerfile.contains("ENTRYPOINT [\"/usr/local/bin/imsbridge\"]"),
        "exec form: no shell needed"
    );
    // What the build copies exists.
    for line in dockerfile
        .lines()
        .filter(|l| l.starts_with("COPY ") && !l.contains("--from"))
    {
        for path in line
            .split_whitespace()
            .skip(1)
            .collect::<Vec<_>>()
            .split_last()
            .unwrap()
            .1
        {
            assert!(repo(path).exists(), "{path}");
        }
    }
}

/// The build stage of the Dockerfile, read as `docker build` would: the `WORKDIR`, what each
/// `COPY` takes from the context and where it puts it, the `ARG`s and the `RUN` command.
struct BuildStage {
    workdir: String,
    copies: Vec<(Vec<String>, String)>,
    args: Vec<(String, String)>,
    run: Vec<String>,
}

fn build_stage(dockerfile: &str) -> BuildStage {
    let mut stage = BuildStage {
        workdir: "/".to_owned(),
        copies: Vec::new(),
        args: Vec::new(),
        run: Vec::new(),
    };
    let mut stages = 0;
    for line in dockerfile.lines().map(str::trim) {
        let (instruction, rest) = line.split_once(' ').unwrap_or((line, ""));
        match instruction {
            "FROM" => stages += 1,
            _ if stages != 1 => {}
            "WORKDIR" => stage.workdir = rest.trim().to_owned(),
            "COPY" => {
                let mut words: Vec<String> = rest.split_whitespace().map(str::to_owned).collect();
                assert!(!words.iter().any(|w| w.starts_with("--")), "{line}");
                let dest = words.pop().unwrap();
                stage.copies.push((words, dest));
            }
            "ARG" => {
                let (name, default) = rest.trim().split_once('=').unwrap_or((rest.trim(), ""));
                stage.args.push((name.to_owned(), default.to_owned()));
            }
            "RUN" => {
                assert!(stage.run.is_empty(), "one RUN in the build stage: {line}");
                stage.run = rest.split_whitespace().map(str::to_owned).collect();
            }
            _ => {}
        }
    }
    stage
}

fn copy_tree(from: &Path, to: &Path) {
    if from.is_dir() {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            copy_tree(&entry.path(), &to.join(entry.file_name()));
        }
    } else {
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(from, to).unwrap_or_else(|e| panic!("{}: {e}", from.display()));
    }
}

/// The container build without Docker: exactly what the Dockerfile's build stage copies, into
/// an empty directory, and its `RUN` command there (`--offline`, against the registry cache
/// this build filled). The release profile's optimisation is turned down through cargo's
/// `CARGO_PROFILE_RELEASE_*` variables: what is checked is that the copied tree builds, not how
/// fast the result runs, and an optimised build would cost the suite minutes. Its
/// dependencies are kept under `target/tmp`, so that only the first run pays for them.
#[test]
fn the_container_build_works_from_the_paths_the_dockerfile_copies() {
    let dockerfile = read("deploy/container/Dockerfile");
    let stage = build_stage(&dockerfile);
    assert_eq!(stage.workdir, "/src");
    assert_eq!(
        stage.run[..3],
        ["cargo", "build", "--release"],
        "{:?}",
        stage.run
    );
    assert!(stage.run.contains(&"--locked".to_owned()));
    // The runtime stage takes the binary where that command puts it.
    assert!(dockerfile.contains("COPY --from=build /src/target/release/imsbridge "));

    let context = std::env::temp_dir().join(format!("imsbridge-container-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&context);
    std::fs::create_dir_all(&context).unwrap();
    // As `COPY` does: a folder's content goes into the destination; a file into it when it
    // ends in `/`, else it becomes the destination.
    for (sources, dest) in &stage.copies {
        let into = context.join(dest.trim_start_matches("./"));
        for source in sources {
            let from = repo(source);
            assert!(
                from.exists(),
                "the Dockerfile copies {source}, which is not in the repository"
            );
            if from.is_dir() || !dest.ends_with('/') {
                copy_tree(&from, &into);
            } else {
                copy_tree(&from, &into.join(from.file_name().unwrap()));
            }
        }
    }
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).join("container-build");
    let commit = "c0ffee0c0ffe";
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()));
    command
        .args(&stage.run[1..])
        .arg("--offline")
        .current_dir(&context)
        .env("CARGO_TARGET_DIR", &target)
        .env_remove("IMSBRIDGE_COMMIT")
        .env("CARGO_PROFILE_RELEASE_OPT_LEVEL", "0")
        .env("CARGO_PROFILE_RELEASE_LTO", "false")
        .env("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "256")
        .env("CARGO_PROFILE_RELEASE_INCREMENTAL", "true")
        .env_remove("RUSTFLAGS");
    // The build arguments, as `docker build --build-arg IMSBRIDGE_COMMIT=…` sets them.
    for (name, default) in &stage.args {
        command.env(
            name,
            if name == "IMSBRIDGE_COMMIT" {
                commit
            } else {
                default
            },
        );
    }
    let built = command.output().unwrap();
    std::fs::remove_dir_all(&context).unwrap();
    assert!(
        built.status.success(),
        "the Dockerfile's build fails on what it copies:\n{}",
        String::from_utf8_lossy(&built.stderr)
    );
    // The commit comes in as a build argument (the context has no .git: .dockerignore).
    assert!(
        stage
            .args
            .iter()
            .any(|(name, _)| name == "IMSBRIDGE_COMMIT")
    );
    assert!(read(".dockerignore").lines().any(|l| l == ".git/"));
    // The binary says the commit it was given, as imsbridge_build_info does.
    let version = Command::new(target.join("release/imsbridge"))
        .arg("--version")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&version.stdout);
    assert!(said.contains(&format!("(commit {commit})")), "{said}");
}
