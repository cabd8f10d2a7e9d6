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
use yaml_rust2::{Yaml, YamlLoader};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

const MANIFESTS: [&str; 9] = [
    "namespace.yaml",
    "deployment.yaml",
    "service.yaml",
    "hpa.yaml",
    "pdb.yaml",
    "networkpolicy.yaml",
    "valkey.yaml",
    "examples/loadbalancer.yaml",
    "examples/ingress.yaml",
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

/// A YAML file of the repository, every document of it.
fn yaml(path: &str) -> Vec<Yaml> {
    YamlLoader::load_from_str(&read(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// `node` at `path` (`spec.template.spec`), `BadValue` when absent.
fn at<'a>(node: &'a Yaml, path: &str) -> &'a Yaml {
    path.split('.').fold(node, |node, key| &node[key])
}

/// The item of a YAML list whose `name` is `name`.
fn named<'a>(list: &'a Yaml, name: &str) -> Option<&'a Yaml> {
    list.as_vec()?
        .iter()
        .find(|item| item["name"].as_str() == Some(name))
}

/// The ports of a NetworkPolicy's `ingress` or `egress` rules.
fn rule_ports(rules: &Yaml) -> Vec<i64> {
    rules
        .as_vec()
        .into_iter()
        .flatten()
        .flat_map(|rule| rule["ports"].as_vec().into_iter().flatten())
        .filter_map(|p| p["port"].as_i64())
        .collect()
}

/// The strings of a YAML list.
fn strings(node: &Yaml) -> Vec<String> {
    node.as_vec()
        .map(|items| {
            items
                .iter()
                .filter_map(|i| i.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The documents of the kustomization's resources, of `kind`.
fn resources(kind: &str) -> Vec<Yaml> {
    let kustomization = &yaml("deploy/kubernetes/kustomization.yaml")[0];
    strings(&kustomization["resources"])
        .iter()
        .flat_map(|file| yaml(&format!("deploy/kubernetes/{file}")))
        .filter(|doc| doc["kind"].as_str() == Some(kind))
        .collect()
}

#[test]
fn the_manifests_agree_with_the_config_they_carry() {
    let kustomization = &yaml("deploy/kubernetes/kustomization.yaml")[0];
    let deployment = &resources("Deployment")[0];
    let pod = at(deployment, "spec.template.spec");
    let container = &pod["containers"][0];
    // Every resource listed exists, and everything goes to a namespace the kustomization makes.
    for file in strings(&kustomization["resources"]) {
        assert!(
            repo(&format!("deploy/kubernetes/{file}")).exists(),
            "{file}"
        );
    }
    let namespace = kustomization["namespace"].as_str().unwrap();
    assert!(
        resources("Namespace")
            .iter()
            .any(|ns| at(ns, "metadata.name").as_str() == Some(namespace)),
        "the namespace {namespace} is not made by `kubectl apply -k`"
    );
    // The config the kustomization makes the ConfigMap of, mounted as a directory (the same
    // name across edits: an edit reaches the running pods, which reload it).
    let config_map = &kustomization["configMapGenerator"][0];
    assert_eq!(config_map["name"].as_str(), Some("imsbridge-config"));
    assert_eq!(strings(&config_map["files"]), ["imsbridge.toml"]);
    assert_eq!(
        config_map["options"]["disableNameSuffixHash"].as_bool(),
        Some(true)
    );
    let mounts = container["volumeMounts"].as_vec().unwrap();
    assert!(
        mounts.iter().all(|m| m["subPath"].is_badvalue()),
        "Kubernetes never updates a subPath mount"
    );
    let mount_of = |volume: &str| {
        named(&container["volumeMounts"], volume)
            .and_then(|m| m["mountPath"].as_str())
            .unwrap_or_else(|| panic!("no mount of {volume}"))
            .to_owned()
    };
    let volume = |name: &str| {
        named(&pod["volumes"], name)
            .unwrap_or_else(|| panic!("no volume {name}"))
            .clone()
    };
    assert_eq!(
        at(&volume("config"), "configMap.name").as_str(),
        Some("imsbridge-config")
    );
    let config_path = format!("{}/imsbridge.toml", mount_of("config"));
    let args = strings(&container["args"]);
    assert_eq!(
        args[..3],
        ["run".to_owned(), "--config".to_owned(), config_path]
    );
    // The Secret: made by the generator from files; the volume and the environment name it.
    let generator = &kustomization["secretGenerator"][0];
    let secret = generator["name"].as_str().unwrap();
    assert_eq!(
        at(&volume("credentials"), "secret.secretName").as_str(),
        Some(secret)
    );
    let keys: Vec<String> = strings(&generator["files"])
        .iter()
        .map(|f| {
            f.strip_prefix("secrets/")
                .unwrap_or_else(|| panic!("{f}"))
                .to_owned()
        })
        .collect();
    let mounted = format!("{}/", mount_of("credentials"));
    let toml = read("deploy/kubernetes/imsbridge.toml");
    let from_env: Vec<String> = container["env"]
        .as_vec()
        .unwrap()
        .iter()
        .filter_map(|e| {
            let reference = at(e, "valueFrom.secretKeyRef");
            (!reference.is_badvalue()).then(|| {
                assert_eq!(reference["name"].as_str(), Some(secret));
                reference["key"].as_str().unwrap().to_owned()
            })
        })
        .collect();
    let dir = std::env::temp_dir().join(format!("imsbridge-k8s-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for key in &keys {
        // A file of the mounted Secret the config reads, or a variable the Deployment makes.
        assert!(
            toml.contains(&format!("{mounted}{key}\"")) || from_env.contains(key),
            "{key} is not used by the config"
        );
        let value = match key.as_str() {
            "crm-events-password-hash" | "admin-password-hash" => cheap_hash("x"),
            _ => "a-secret-of-more-than-thirty-two-characters".to_owned(),
        };
        std::fs::write(dir.join(key), value).unwrap();
    }
    // ... and every secret file the config reads is a key of it.
    for used in toml.split(&mounted).skip(1) {
        let key = used.split('"').next().unwrap();
        assert!(
            keys.iter().any(|k| k == key),
            "the config reads {key}, not in the Secret"
        );
    }
    let toml = toml.replace(&mounted, &format!("{}/", dir.display()));
    // REDIS_URL as the Deployment makes it, for the Valkey of valkey.yaml.
    assert!(toml.contains("redis = { env = \"REDIS_URL\" }"));
    assert!(read("deploy/kubernetes/deployment.yaml").contains(
        "- name: REDIS_URL\n              value: \"redis://:$(VALKEY_PASSWORD)@imsbridge-valkey:6379/0\""
    ));
    let valkey_service = resources("Service")
        .into_iter()
        .find(|s| at(s, "metadata.name").as_str() == Some("imsbridge-valkey"))
        .expect("the Valkey Service");
    assert_eq!(
        at(&valkey_service, "spec.ports")[0]["port"].as_i64(),
        Some(6379)
    );
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
    // Probes reach the admin listener, callers the proxy listener; beyond loopback, the admin
    // listener has its password.
    assert_eq!(config.server.admin_listen.to_string(), "0.0.0.0:9090");
    assert_eq!(config.server.listen.to_string(), "0.0.0.0:8080");
    assert!(config.admin.password.is_some());
    let port =
        |name: &str| named(&container["ports"], name).and_then(|p| p["containerPort"].as_i64());
    assert_eq!(port("admin"), Some(9090));
    assert_eq!(port("soap"), Some(8080));
    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
        assert_eq!(at(&container[probe], "httpGet.path").as_str(), Some(path));
        assert_eq!(
            at(&container[probe], "httpGet.port").as_str(),
            Some("admin")
        );
    }
    // The grace period outlasts the drain.
    assert!(config.server.limits.shutdown_grace.as_secs() < 45);
    assert_eq!(pod["terminationGracePeriodSeconds"].as_i64(), Some(45));
    // The image is the kustomization's parameter.
    let image = container["image"].as_str().unwrap();
    assert!(
        kustomization["images"]
            .as_vec()
            .unwrap()
            .iter()
            .any(|i| i["name"].as_str() == Some(image)),
        "{image} is not under images:"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Whether a process of `uid`, `gid` and supplementary groups `groups` may read a file of
/// `owner`:`group` with `mode`.
fn may_read(uid: i64, gid: i64, groups: &[i64], owner: i64, group: i64, mode: i64) -> bool {
    uid == 0
        || (uid == owner && mode & 0o400 != 0)
        || ((gid == group || groups.contains(&group)) && mode & 0o040 != 0)
        || mode & 0o004 != 0
}

/// A pod's volumes of Secrets and ConfigMaps, read by its containers' user: Kubernetes makes
/// their files root's, with the pod's `fsGroup` as their group when it has one (and gives the
/// containers' processes that group), their mode the volume's `defaultMode` (0644 when unset).
fn unreadable_volumes(pod: &Yaml, image_user: i64) -> Vec<String> {
    let context = &pod["securityContext"];
    let uid = context["runAsUser"].as_i64().unwrap_or(image_user);
    let gid = context["runAsGroup"].as_i64().unwrap_or(uid);
    let fs_group = context["fsGroup"].as_i64();
    let mut groups = strings(&context["supplementalGroups"])
        .iter()
        .filter_map(|g| g.parse().ok())
        .collect::<Vec<i64>>();
    groups.extend(
        context["supplementalGroups"]
            .as_vec()
            .into_iter()
            .flatten()
            .filter_map(Yaml::as_i64),
    );
    groups.extend(fs_group);
    let mut unreadable = Vec::new();
    for volume in pod["volumes"].as_vec().into_iter().flatten() {
        let source = if !volume["secret"].is_badvalue() {
            &volume["secret"]
        } else if !volume["configMap"].is_badvalue() {
            &volume["configMap"]
        } else {
            continue;
        };
        let mode = source["defaultMode"].as_i64().unwrap_or(0o644);
        if !may_read(uid, gid, &groups, 0, fs_group.unwrap_or(0), mode) {
            unreadable.push(volume["name"].as_str().unwrap_or("?").to_owned());
        }
    }
    unreadable
}

#[test]
fn the_pods_users_read_their_secrets_and_configs() {
    // The image's user: distroless `nonroot`.
    let dockerfile = read("deploy/container/Dockerfile");
    assert!(dockerfile.contains("FROM gcr.io/distroless/cc-debian12:nonroot"));
    assert!(dockerfile.contains("USER nonroot:nonroot"));
    let nonroot = 65532;
    let deployment = &resources("Deployment")[0];
    let pod = at(deployment, "spec.template.spec");
    assert_eq!(pod["securityContext"]["runAsUser"].as_i64(), Some(nonroot));
    assert_eq!(pod["securityContext"]["runAsNonRoot"].as_bool(), Some(true));
    assert_eq!(unreadable_volumes(pod, nonroot), Vec::<String>::new());
    // The Secret is readable by the pod's group, no one else's.
    let credentials = pod["volumes"]
        .as_vec()
        .unwrap()
        .iter()
        .find(|v| !v["secret"].is_badvalue())
        .unwrap();
    assert_eq!(credentials["secret"]["defaultMode"].as_i64(), Some(0o440));
    // Written in decimal: YAML 1.1 (Kubernetes) reads 0440 as octal, YAML 1.2 as 440.
    assert!(read("deploy/kubernetes/deployment.yaml").contains("defaultMode: 288 "));
    // Valkey's pod too.
    for set in resources("StatefulSet") {
        let pod = at(&set, "spec.template.spec");
        assert_eq!(unreadable_volumes(pod, 999), Vec::<String>::new());
    }
    // The rule can fail: the shipped manifests as they were (0400, no fsGroup) could not be
    // read by uid 65532.
    let mut before = pod.clone();
    if let Yaml::Hash(context) = &mut before["securityContext"] {
        context.remove(&Yaml::String("fsGroup".to_owned()));
    }
    let broken = read("deploy/kubernetes/deployment.yaml")
        .replace("        fsGroup: 65532\n", "")
        .replace("defaultMode: 288 ", "defaultMode: 256 ");
    let broken = &YamlLoader::load_from_str(&broken).unwrap()[0];
    assert_eq!(
        unreadable_volumes(at(broken, "spec.template.spec"), nonroot),
        ["credentials"]
    );
    assert!(may_read(65532, 65532, &[65532], 0, 65532, 0o440));
    assert!(!may_read(65532, 65532, &[], 0, 0, 0o440));
}

#[test]
fn the_network_policy_lets_the_pods_reach_what_the_config_names() {
    let policy = resources("NetworkPolicy")
        .into_iter()
        .find(|p| at(p, "metadata.name").as_str() == Some("imsbridge"))
        .unwrap();
    let ports = rule_ports(at(&policy, "spec.egress"));
    // DNS, HTTPS to IMS and Campaign, the state store's port.
    for port in [53, 443, 6379] {
        assert!(
            ports.contains(&port),
            "egress to {port} is not admitted: {ports:?}"
        );
    }
    // In: the SOAP port and the admin port, nothing else.
    let ingress = rule_ports(at(&policy, "spec.ingress"));
    assert_eq!(ingress, [8080, 9090]);
    // Each example for callers outside the cluster brings the policy that admits them, to
    // the SOAP port only.
    for example in ["examples/loadbalancer.yaml", "examples/ingress.yaml"] {
        let docs = yaml(&format!("deploy/kubernetes/{example}"));
        let policy = docs
            .iter()
            .find(|d| d["kind"].as_str() == Some("NetworkPolicy"))
            .unwrap_or_else(|| panic!("{example}: no NetworkPolicy"));
        let ports = rule_ports(at(policy, "spec.ingress"));
        assert_eq!(ports, [8080], "{example}");
    }
    let balancer = &yaml("deploy/kubernetes/examples/loadbalancer.yaml")[0];
    assert_eq!(at(balancer, "spec.type").as_str(), Some("LoadBalancer"));
    assert_eq!(
        at(balancer, "spec.externalTrafficPolicy").as_str(),
        Some("Local")
    );
    assert_eq!(
        at(balancer, "spec.ports").as_vec().unwrap().len(),
        1,
        "the admin port stays inside"
    );
}

/// The secret references of a config: `(env or file, name)`, a file by its name alone.
fn secret_references(toml: &str) -> Vec<(&'static str, String)> {
    let mut found = Vec::new();
    for line in toml.lines().map(str::trim).filter(|l| !l.starts_with('#')) {
        for (kind, marker) in [("env", "{ env = \""), ("file", "{ file = \"")] {
            if let Some(rest) = line.split(marker).nth(1) {
                let value = rest.split('"').next().unwrap();
                let name = value.rsplit('/').next().unwrap().to_owned();
                found.push((kind, name));
            }
        }
    }
    found
}

/// A variable's name as a file's: `MC_CLIENT_SECRET`, `mc-client-secret`.
fn as_file_name(variable: &str) -> String {
    variable.to_lowercase().replace('_', "-")
}

#[test]
fn one_set_of_names_from_quick_start_to_kubernetes() {
    let readme = read("README.md");
    let quick = readme
        .split("## Quick start")
        .nth(1)
        .unwrap()
        .split("```toml")
        .nth(1)
        .unwrap()
        .split("```")
        .next()
        .unwrap()
        .to_owned();
    let configs = [
        ("README.md, Quick start", quick),
        ("fixtures/imsbridge.toml", read("fixtures/imsbridge.toml")),
        (
            "deploy/systemd/imsbridge.toml",
            read("deploy/systemd/imsbridge.toml"),
        ),
        (
            "deploy/kubernetes/imsbridge.toml",
            read("deploy/kubernetes/imsbridge.toml"),
        ),
    ];
    // The names, as Quick start spells them.
    let profile = "[profiles.messagecenter]";
    let client_secret = "MC_CLIENT_SECRET";
    for (name, text) in &configs {
        assert!(text.contains(profile), "{name}: not {profile}");
        assert!(
            text.contains("name = \"crm-events\"") && text.contains("login = \"mc\""),
            "{name}"
        );
        let after = text.split(profile).nth(1).unwrap();
        let secret = secret_references(
            after
                .lines()
                .find(|l| l.trim().starts_with("client_secret"))
                .unwrap(),
        );
        let [(kind, secret)] = secret.as_slice() else {
            panic!("{name}: {secret:?}")
        };
        let expected = if *kind == "env" {
            client_secret.to_owned()
        } else {
            as_file_name(client_secret)
        };
        assert_eq!(*secret, expected, "{name}: the profile's secret");
    }
    // Every secret any of them names: the same spelling as variable and as file, and a file
    // where the deployment provides one.
    let known = [
        "MC_CLIENT_SECRET",
        "SESSION_SECRET",
        "CRM_EVENTS_PASSWORD_HASH",
        "ADMIN_PASSWORD_HASH",
        "REDIS_URL",
    ];
    for (name, text) in &configs[..2] {
        for (kind, secret) in secret_references(text) {
            let ok = match kind {
                "env" => known.contains(&secret.as_str()),
                _ => known.iter().any(|k| as_file_name(k) == secret),
            };
            assert!(ok, "{name}: {kind} {secret} is not one of the shared names");
        }
    }
    // systemd: each credential the config reads is one LoadCredential= hands over, and one the
    // install steps (the unit's, docs/deploy.md's) install.
    let unit = read("deploy/systemd/imsbridge.service");
    let deploy = read("docs/deploy.md");
    let systemd_secrets = secret_references(&configs[2].1);
    assert_eq!(systemd_secrets.len(), 3, "{systemd_secrets:?}");
    for (kind, secret) in &systemd_secrets {
        assert_eq!(*kind, "file");
        assert!(
            configs[2]
                .1
                .contains(&format!("\"/run/credentials/imsbridge.service/{secret}\""))
        );
        assert!(known.iter().any(|k| as_file_name(k) == *secret), "{secret}");
        let load = format!("LoadCredential={secret}:/etc/imsbridge/credentials/{secret}\n");
        assert!(unit.contains(&load), "{load}");
        let install =
            format!("install -D -m 0600 secrets/{secret} /etc/imsbridge/credentials/{secret}\n");
        assert!(
            unit.contains(&format!("#   {install}")),
            "the unit's steps: {install}"
        );
        assert!(deploy.contains(&install), "docs/deploy.md: {install}");
    }
    assert_eq!(
        unit.lines()
            .filter(|l| l.starts_with("LoadCredential="))
            .count(),
        systemd_secrets.len()
    );
    // Kubernetes: each file the config reads is a key of the generated Secret.
    let kustomization = read("deploy/kubernetes/kustomization.yaml");
    for (kind, secret) in secret_references(&configs[3].1) {
        if kind == "env" {
            assert_eq!(secret, "REDIS_URL");
            continue;
        }
        assert!(known.iter().any(|k| as_file_name(k) == secret), "{secret}");
        assert!(
            kustomization.contains(&format!("      - secrets/{secret}\n")),
            "{secret}"
        );
    }
    // The container: the Quick start's variable, passed.
    assert!(
        deploy.contains(&format!("-e {client_secret} "))
            || deploy.contains(&format!("-e {client_secret}\n"))
    );
    // The drift check can fail.
    let drifted = configs[3]
        .1
        .replace("mc-client-secret", "messagecenter-client-secret");
    let [(_, secret)] = secret_references(
        drifted
            .split(profile)
            .nth(1)
            .unwrap()
            .lines()
            .find(|l| l.trim().starts_with("client_secret"))
            .unwrap(),
    )
    .try_into()
    .unwrap();
    assert_ne!(secret, as_file_name(client_secret));
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
    ] {
        assert!(unit.contains(setting), "{setting}");
    }
    assert!(
        read("deploy/systemd/imsbridge.toml").contains("path = \"/var/lib/imsbridge/state.db\"")
    );
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
    /// The `cargo build` command.
    run: Vec<String>,
    /// The folders other `RUN`s make (`mkdir -p`), for the runtime stage to take.
    folders: Vec<String>,
}

fn build_stage(dockerfile: &str) -> BuildStage {
    let mut stage = BuildStage {
        workdir: "/".to_owned(),
        copies: Vec::new(),
        args: Vec::new(),
        run: Vec::new(),
        folders: Vec::new(),
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
                let words: Vec<String> = rest.split_whitespace().map(str::to_owned).collect();
                match words.first().map(String::as_str) {
                    Some("cargo") => {
                        assert!(stage.run.is_empty(), "one cargo RUN: {line}");
                        stage.run = words;
                    }
                    Some("mkdir") => stage
                        .folders
                        .extend(words[1..].iter().filter(|w| !w.starts_with('-')).cloned()),
                    _ => panic!("a RUN this test does not know: {line}"),
                }
            }
            _ => {}
        }
    }
    stage
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
    // The runtime stage takes the binary where that command puts it, and the state's folder,
    // its user's.
    assert!(dockerfile.contains("COPY --from=build /src/target/release/imsbridge "));
    assert_eq!(stage.folders, ["/var/lib/imsbridge"]);
    assert!(dockerfile.contains(
        "COPY --from=build --chown=nonroot:nonroot /var/lib/imsbridge /var/lib/imsbridge\n"
    ));

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
