//! The deployment artefacts: the systemd unit verifies, the Kubernetes manifests parse and agree
//! with each other and with the config schema, and the Dockerfile copies what exists.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use serde_yaml::Value;
use vncbot::config::Config;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn read(rel: &str) -> String {
    std::fs::read_to_string(Path::new(ROOT).join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

#[test]
fn the_systemd_unit_verifies_cleanly_and_is_hardened() {
    let unit = read("deploy/systemd/vncbot.service");
    for directive in [
        "DynamicUser=yes",
        "StateDirectory=vncbot",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "EnvironmentFile=/etc/vncbot/vncbot.env",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "CapabilityBoundingSet=\n",
    ] {
        assert!(unit.contains(directive), "missing {directive:?}");
    }
    // The soft default of 1024 descriptors is too tight for a long-running network service.
    let nofile: u64 = unit
        .lines()
        .find_map(|l| l.strip_prefix("LimitNOFILE="))
        .expect("LimitNOFILE= is set")
        .parse()
        .expect("LimitNOFILE= is a number");
    assert!(nofile >= 4096, "LimitNOFILE={nofile}");
    // systemd-analyze checks that ExecStart exists: point it at the binary under test.
    let dir = std::env::temp_dir().join(format!("vncbot-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("vncbot.service");
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/vncbot", env!("CARGO_BIN_EXE_vncbot")),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze is installed (.ci/run installs systemd)");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
    assert!(out.status.success(), "{said}");
    // Warnings (an unknown directive, a bad value) leave the exit code at 0: require silence.
    assert!(
        said.trim().is_empty(),
        "systemd-analyze verify said:\n{said}"
    );
}

fn manifests() -> BTreeMap<String, Value> {
    let mut by_kind = BTreeMap::new();
    for entry in std::fs::read_dir(Path::new(ROOT).join("deploy/kubernetes")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let v: Value =
            serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let kind = v["kind"]
            .as_str()
            .unwrap_or_else(|| panic!("{}: no kind", path.display()));
        assert!(
            v["apiVersion"].as_str().is_some(),
            "{}: no apiVersion",
            path.display()
        );
        by_kind.insert(kind.to_owned(), v);
    }
    by_kind
}

#[test]
fn the_kubernetes_manifests_agree() {
    let m = manifests();
    let (deploy, cm, secret, pvc) = (
        &m["Deployment"],
        &m["ConfigMap"],
        &m["Secret"],
        &m["PersistentVolumeClaim"],
    );
    let spec = &deploy["spec"];
    assert_eq!(spec["replicas"], 1, "one gateway session per shard");
    assert_eq!(
        spec["strategy"]["type"], "Recreate",
        "never two bots at once"
    );
    let pod = &spec["template"]["spec"];
    let c = &pod["containers"][0];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    for probe in ["readinessProbe", "livenessProbe"] {
        assert_eq!(c[probe]["httpGet"]["port"], "admin", "{probe}");
    }
    // Readiness may fail during a Discord outage; liveness must not, or the outage becomes a
    // restart loop (see src/admin.rs).
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/livez");

    // The image is pinned to the crate's version (a digest may follow), never `latest`.
    let image = c["image"].as_str().unwrap();
    let name_and_tag = image.split('@').next().unwrap();
    let tag = name_and_tag
        .rsplit_once(':')
        .filter(|(_, tag)| !tag.contains('/'))
        .map(|(_, tag)| tag)
        .unwrap_or_else(|| panic!("image {image:?} has no tag"));
    assert_eq!(
        tag,
        env!("CARGO_PKG_VERSION"),
        "image {image:?}: tag it with Cargo.toml's version"
    );

    // One writer per journal: ReadWriteOnce would let a second pod on the same node mount it.
    assert_eq!(
        pvc["spec"]["accessModes"],
        Value::Sequence(vec!["ReadWriteOncePod".into()])
    );
    assert_eq!(c["ports"][0]["name"], "admin");
    assert!(c["resources"]["requests"]["memory"].as_str().is_some());
    assert!(c["resources"]["limits"]["memory"].as_str().is_some());
    assert_eq!(
        c["envFrom"][0]["secretRef"]["name"],
        secret["metadata"]["name"]
    );

    let volumes = pod["volumes"].as_sequence().unwrap();
    let volume = |name: &str| volumes.iter().find(|v| v["name"] == name).unwrap().clone();
    assert_eq!(
        volume("config")["configMap"]["name"],
        cm["metadata"]["name"]
    );
    assert_eq!(
        volume("audit")["persistentVolumeClaim"]["claimName"],
        pvc["metadata"]["name"]
    );
    let mount = |name: &str| {
        c["volumeMounts"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|m| m["name"] == name)
            .unwrap()["mountPath"]
            .as_str()
            .unwrap()
            .to_owned()
    };

    // The shipped config is valid, journals onto the volume and serves the probes' port.
    let toml = cm["data"]["vncbot.toml"].as_str().unwrap();
    let config = Config::parse(toml).unwrap_or_else(|e| panic!("the ConfigMap's vncbot.toml: {e}"));
    assert!(
        config.audit.path.starts_with(mount("audit")),
        "{:?}",
        config.audit.path
    );
    let args: Vec<&str> = c["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let config_arg = args[args.iter().position(|a| *a == "--config").unwrap() + 1];
    assert_eq!(
        Path::new(config_arg).parent().unwrap(),
        Path::new(&mount("config"))
    );
    let admin = config.admin.expect("probes need [admin] listen");
    assert_eq!(
        i64::from(admin.listen.port()),
        c["ports"][0]["containerPort"].as_i64().unwrap()
    );
    assert!(
        admin.listen.ip().is_unspecified(),
        "the kubelet probes the pod IP"
    );

    let keys: Vec<&str> = secret["stringData"]
        .as_mapping()
        .unwrap()
        .keys()
        .map(|k| k.as_str().unwrap())
        .collect();
    for k in [
        "DISCORD_TOKEN",
        "TENCENTCLOUD_SECRET_ID",
        "TENCENTCLOUD_SECRET_KEY",
    ] {
        assert!(keys.contains(&k), "Secret lacks {k}");
    }
}

/// The admin endpoint is for the scraper and the probes only (issue: 400 idle connections from
/// anyone in the cluster made the liveness probe fail).
#[test]
fn the_network_policy_admits_only_the_scraper_and_the_probes_to_the_admin_port() {
    let m = manifests();
    let (policy, deploy) = (&m["NetworkPolicy"], &m["Deployment"]);
    let spec = &policy["spec"];
    // It selects the bot's pods.
    let template = &deploy["spec"]["template"]["metadata"]["labels"];
    let selector = spec["podSelector"]["matchLabels"].as_mapping().unwrap();
    assert!(
        !selector.is_empty(),
        "an empty podSelector selects every pod"
    );
    for (k, v) in selector {
        assert_eq!(
            &template[k], v,
            "the policy selects pods labelled {k:?}: {v:?}"
        );
    }
    // Ingress only: the bot's egress to Discord and Tencent Cloud is not this policy's business.
    assert_eq!(spec["policyTypes"], Value::Sequence(vec!["Ingress".into()]));

    let container = &deploy["spec"]["template"]["spec"]["containers"][0];
    let admin = container["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "admin")
        .expect("the admin port is named");
    let rules = spec["ingress"].as_sequence().unwrap();
    assert!(!rules.is_empty());
    for rule in rules {
        // Only the admin port, by name or number. A rule without ports admits every port.
        let ports = rule["ports"]
            .as_sequence()
            .expect("every rule names its ports");
        assert_eq!(ports.len(), 1, "{rule:?}");
        assert!(
            ports[0]["port"] == admin["name"] || ports[0]["port"] == admin["containerPort"],
            "{rule:?}"
        );
        assert_eq!(ports[0]["protocol"], "TCP");
        // Only named peers. A rule without `from`, or a peer with an empty selector, admits all.
        let peers = rule["from"]
            .as_sequence()
            .expect("every rule names its peers");
        assert!(!peers.is_empty());
        let mut scraper = false;
        for peer in peers {
            let m = peer.as_mapping().unwrap();
            if let Some(block) = m.get("ipBlock") {
                // The kubelet's nodes: a range, never everything.
                let cidr = block["cidr"].as_str().unwrap();
                assert!(!cidr.ends_with("/0"), "{cidr}");
                assert_eq!(m.len(), 1, "{peer:?}");
                continue;
            }
            let namespaces = peer["namespaceSelector"]["matchLabels"].as_mapping();
            let pods = peer["podSelector"]["matchLabels"].as_mapping();
            assert!(
                namespaces.is_some_and(|l| !l.is_empty()) && pods.is_some_and(|l| !l.is_empty()),
                "a peer must name both the scraper's namespace and its pods: {peer:?}"
            );
            scraper = true;
        }
        assert!(scraper, "the scraper is admitted");
    }
    // The README tells operators to fill in the placeholders.
    assert!(read("README.md").contains("networkpolicy.yaml"));
}

#[test]
fn the_dockerfile_copies_what_exists_and_runs_unprivileged() {
    let docker = read("deploy/Dockerfile");
    for line in docker
        .lines()
        .filter(|l| l.starts_with("COPY ") && !l.contains("--from="))
    {
        let parts: Vec<&str> = line.split_whitespace().collect();
        for src in &parts[1..parts.len() - 1] {
            assert!(
                Path::new(ROOT).join(src).exists(),
                "COPY source {src} does not exist"
            );
        }
    }
    let user = docker
        .lines()
        .rev()
        .find(|l| l.starts_with("USER "))
        .expect("a USER line");
    assert!(!user.contains("root") && !user.contains(" 0"), "{user}");
    assert!(docker.contains("ENTRYPOINT [\"/usr/local/bin/vncbot\"]"));
    assert!(docker.contains("VOLUME [\"/var/lib/vncbot\"]"));
    assert!(docker.contains("--locked"));
}

/// The deploy build line: `cargo build` with the flags every deploy build uses.
const DEPLOY_BUILD: &str = "cargo build --release --locked --no-default-features -p vncbot";

#[test]
fn deploy_builds_leave_the_demo_and_the_stand_ins_out() {
    // The flag turns off exactly what brings the stand-ins in: the default `demo` feature, the
    // only way the sandbox crate is a normal dependency.
    let manifest: toml::Value = toml::from_str(&read("Cargo.toml")).unwrap();
    let features = &manifest["features"];
    assert_eq!(
        features["default"].as_array().unwrap(),
        &[toml::Value::from("demo")]
    );
    assert!(features["demo"]
        .as_array()
        .unwrap()
        .contains(&toml::Value::from("dep:vncbot-sandbox")));
    assert_eq!(
        manifest["dependencies"]["vncbot-sandbox"]["optional"].as_bool(),
        Some(true),
        "the stand-ins are a normal dependency only behind `demo`"
    );

    let docker = read("deploy/Dockerfile");
    let build = docker
        .lines()
        .find(|l| l.starts_with("RUN cargo build"))
        .expect("the Dockerfile builds with cargo");
    assert!(build.contains(DEPLOY_BUILD), "{build}");
    let unit = read("deploy/systemd/vncbot.service");
    assert!(unit.contains(DEPLOY_BUILD), "the unit says how to build");
    let readme = read("README.md");
    let systemd = readme
        .lines()
        .skip_while(|l| !l.starts_with("- **systemd**"))
        .take_while(|l| !l.starts_with("- **Kubernetes**"))
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        systemd.contains(DEPLOY_BUILD),
        "the README's systemd steps build with {DEPLOY_BUILD}"
    );
}

/// The journal's volume is writable by the image's user with any builder: the directory is made
/// and given to that user in a RUN (the runtime image has no shell, so in the build stage) and
/// copied in with COPY --from, not made by VOLUME or WORKDIR (root's under the classic builder)
/// nor with BuildKit-only flags.
#[test]
fn the_dockerfile_gives_the_journal_volume_to_the_images_user_without_buildkit() {
    let docker = read("deploy/Dockerfile");
    let instructions: Vec<&str> = docker
        .lines()
        .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
        .collect();
    for l in &instructions {
        assert!(
            !l.contains("--chmod") && !l.contains("--chown") && !l.contains("--link"),
            "a BuildKit-only flag: {l}"
        );
    }
    let user = instructions
        .iter()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("the image runs as a user")
        .trim();
    let volume = instructions
        .iter()
        .find_map(|l| l.strip_prefix("VOLUME "))
        .expect("the journal has a volume");
    let volume = volume.trim().trim_matches(['[', ']', '"']);
    let made = instructions
        .iter()
        .find(|l| l.starts_with("RUN ") && l.contains(&format!("mkdir -p /rootfs{volume}")))
        .expect("the volume directory is made in a RUN");
    assert!(
        made.contains(&format!("chown {user} /rootfs{volume}")),
        "owned by {user}: {made}"
    );
    let stages: Vec<usize> = instructions
        .iter()
        .enumerate()
        .filter(|(_, l)| l.starts_with("FROM "))
        .map(|(i, _)| i)
        .collect();
    let runtime = *stages.last().unwrap();
    assert!(
        instructions[runtime..].contains(&"COPY --from=build /rootfs/ /"),
        "the runtime stage copies the directory with its owner"
    );
}
