//! Packaging invariants: the Dockerfile, the chart's metadata and CRD copy, the values file.

use std::collections::BTreeSet;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn read(path: &str) -> String {
    std::fs::read_to_string(format!("{ROOT}/{path}")).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Dockerfile instructions as (keyword, rest), line continuations joined.
fn instructions(text: &str) -> Vec<(String, String)> {
    let mut joined = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        joined.push_str(line.trim_end_matches('\\'));
        joined.push(if line.ends_with('\\') { ' ' } else { '\n' });
    }
    joined
        .lines()
        .filter_map(|l| {
            l.split_once(' ')
                .map(|(k, r)| (k.to_uppercase(), r.trim().to_owned()))
        })
        .collect()
}

#[test]
fn dockerfile_is_multi_stage_static_and_non_root() {
    let steps = instructions(&read("Dockerfile"));
    let froms: Vec<&String> = steps
        .iter()
        .filter(|(k, _)| k == "FROM")
        .map(|(_, r)| r)
        .collect();
    assert!(froms.len() >= 2, "multi-stage build");
    assert!(
        froms[0].contains("library/rust:") && froms[0].ends_with("AS build"),
        "{}",
        froms[0]
    );
    // The build image is pinned by digest (the tag stays for readers).
    let pinned = froms[0]
        .split_once("@sha256:")
        .map(|(_, rest)| rest.split_whitespace().next().unwrap_or_default());
    assert!(
        pinned.is_some_and(|d| d.len() == 64 && d.bytes().all(|b| b.is_ascii_hexdigit())),
        "the build image is pinned by digest: {}",
        froms[0]
    );
    let last = froms.last().unwrap();
    assert!(
        last.starts_with("gcr.io/distroless/static") || last.starts_with("scratch"),
        "final base must be distroless/static or scratch: {last}"
    );
    let final_stage: Vec<&(String, String)> = steps
        .iter()
        .skip_while(|(k, r)| !(k == "FROM" && r == *last))
        .collect();
    let get = |key: &str| {
        final_stage
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, r)| r.as_str())
    };
    assert_eq!(get("USER"), Some("65532:65532"));
    assert_eq!(get("ENTRYPOINT"), Some(r#"["/oauth-token-operator"]"#));
    assert_eq!(get("CMD"), Some(r#"["run"]"#));
    let labels = final_stage
        .iter()
        .filter(|(k, _)| k == "LABEL")
        .map(|(_, r)| r.as_str())
        .collect::<String>();
    for label in [
        "org.opencontainers.image.title",
        "org.opencontainers.image.source",
        "org.opencontainers.image.version",
        "org.opencontainers.image.licenses",
    ] {
        assert!(labels.contains(label), "missing OCI label {label}");
    }
    assert!(
        steps
            .iter()
            .any(|(k, r)| k == "RUN" && r.contains("--locked") && r.contains("musl"))
    );
    let ignore = read(".dockerignore");
    assert!(ignore.lines().any(|l| l.trim() == "target/"));
}

#[test]
fn chart_crd_and_versions_match_the_crate() {
    assert_eq!(
        read("charts/oauth-token-operator/crds/oauthclient.yaml"),
        read("crds/oauthclient.yaml"),
        "the chart's CRD must be identical to crds/oauthclient.yaml"
    );
    let chart: serde_yaml::Value =
        serde_yaml::from_str(&read("charts/oauth-token-operator/Chart.yaml")).unwrap();
    assert_eq!(
        chart["appVersion"].as_str(),
        Some(env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(chart["name"].as_str(), Some("oauth-token-operator"));
    let manifest = read("deploy/oauth-token-operator.yaml");
    assert!(manifest.contains(&format!(
        "oauth-token-operator:{}",
        env!("CARGO_PKG_VERSION")
    )));
}

/// Every value in values.yaml has a comment line right above it.
#[test]
fn every_value_is_commented_and_in_the_schema() {
    let text = read("charts/oauth-token-operator/values.yaml");
    let lines: Vec<&str> = text.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with('-') {
            continue;
        }
        let Some((key, value)) = trimmed.split_once(':') else {
            continue;
        };
        // Parent keys (maps) need no comment of their own when each child has one; leaves do.
        let is_leaf = !value.trim().is_empty();
        let nested_in_documented_block = lines[..i]
            .iter()
            .rev()
            .take_while(|l| l.starts_with("  ") || l.trim().is_empty())
            .any(|l| {
                l.trim_start().starts_with("requests:") || l.trim_start().starts_with("limits:")
            });
        if is_leaf && !nested_in_documented_block {
            let above = lines[..i]
                .iter()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or(&"");
            assert!(
                above.trim_start().starts_with('#'),
                "value {key} has no comment"
            );
        }
    }
    // Top-level keys all appear in the schema, which refuses unknown ones.
    let values: serde_yaml::Mapping = serde_yaml::from_str(&text).unwrap();
    let schema: serde_json::Value =
        serde_json::from_str(&read("charts/oauth-token-operator/values.schema.json")).unwrap();
    assert_eq!(schema["additionalProperties"], false);
    let in_schema: BTreeSet<&str> = schema["properties"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let in_values: BTreeSet<&str> = values.keys().map(|k| k.as_str().unwrap()).collect();
    assert_eq!(in_values, in_schema);
}

#[test]
fn the_deployment_meets_the_restricted_pod_security_standard() {
    for path in [
        "charts/oauth-token-operator/templates/deployment.yaml",
        "deploy/oauth-token-operator.yaml",
    ] {
        let text = read(path);
        for needle in [
            "runAsNonRoot: true",
            "readOnlyRootFilesystem: true",
            "allowPrivilegeEscalation: false",
            "drop: [\"ALL\"]",
            "type: RuntimeDefault",
            "path: /healthz",
            "path: /readyz",
        ] {
            assert!(text.contains(needle), "{path} lacks {needle}");
        }
    }
}

#[test]
fn the_chart_default_deny_list_is_the_operators() {
    let values: serde_yaml::Value =
        serde_yaml::from_str(&read("charts/oauth-token-operator/values.yaml")).unwrap();
    let chart: Vec<&str> = values["tokenUrlDenyCidrs"]
        .as_sequence()
        .expect("tokenUrlDenyCidrs is a list")
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        chart.join(","),
        oauth_token_operator::spec::url_policy::DEFAULT_DENY_CIDRS
    );
}

/// `extraCaBundle` mounts a ConfigMap read-only and passes its key as `--ca-file`; `proxy.*`
/// set the proxy variables, and the default `noProxy` keeps the API connection direct.
#[test]
fn the_chart_mounts_the_extra_ca_bundle_and_sets_the_proxy_environment() {
    let values: serde_yaml::Value =
        serde_yaml::from_str(&read("charts/oauth-token-operator/values.yaml")).unwrap();
    assert_eq!(values["extraCaBundle"]["name"].as_str(), Some(""));
    assert_eq!(values["extraCaBundle"]["key"].as_str(), Some("ca.crt"));
    assert_eq!(values["proxy"]["httpsProxy"].as_str(), Some(""));
    assert_eq!(values["proxy"]["httpProxy"].as_str(), Some(""));
    let no_proxy: Vec<&str> = values["proxy"]["noProxy"]
        .as_sequence()
        .expect("proxy.noProxy is a list by default")
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for entry in [
        "$(KUBERNETES_SERVICE_HOST)",
        "kubernetes.default.svc",
        ".svc",
        ".cluster.local",
    ] {
        assert!(
            no_proxy.contains(&entry),
            "{entry} missing from {no_proxy:?}"
        );
    }
    // The operator reads these entries as the chart writes them (the kubelet fills in the
    // service host first; an entry it could not expand is ignored, not fatal).
    let rules = oauth_token_operator::oauth::transport::proxy::NoProxy::parse(&no_proxy.join(","));
    assert!(rules.matches(&"https://kubernetes.default.svc/".parse().unwrap()));
    assert!(rules.matches(&"https://keycloak.auth.svc.cluster.local/".parse().unwrap()));
    assert!(!rules.matches(&"https://idp.example.com/".parse().unwrap()));

    let deployment = read("charts/oauth-token-operator/templates/deployment.yaml");
    for needle in [
        "- --ca-file=/etc/oauth-token-operator/extra-ca/{{ .Values.extraCaBundle.key }}",
        "mountPath: /etc/oauth-token-operator/extra-ca",
        "readOnly: true",
        "name: {{ .Values.extraCaBundle.name }}",
        "- key: {{ .Values.extraCaBundle.key }}",
        "- name: HTTPS_PROXY",
        "value: {{ .httpsProxy | quote }}",
        "- name: HTTP_PROXY",
        "value: {{ .httpProxy | quote }}",
        "- name: NO_PROXY",
        "- name: https_proxy",
        "- name: http_proxy",
        "- name: no_proxy",
        "include \"oauth-token-operator.noProxy\"",
    ] {
        assert!(
            deployment.contains(needle),
            "deployment.yaml lacks {needle}"
        );
    }
    let policy = read("charts/oauth-token-operator/templates/networkpolicy.yaml");
    assert!(policy.contains("oauth-token-operator.proxyPorts"));
    let schema: serde_json::Value =
        serde_json::from_str(&read("charts/oauth-token-operator/values.schema.json")).unwrap();
    let proxy = &schema["properties"]["proxy"];
    assert_eq!(proxy["additionalProperties"], false);
    assert!(proxy["properties"]["noProxy"]["anyOf"].is_array());
    assert_eq!(
        schema["properties"]["extraCaBundle"]["additionalProperties"],
        false
    );
    // CI lints the chart (and the real-cluster suite installs it) with these values set.
    let values = read("charts/oauth-token-operator/ci/private-ca-behind-a-proxy-values.yaml");
    assert!(values.contains("extraCaBundle:") && values.contains("httpsProxy:"));
}

/// The private-CA example is consistent: the trust-manager Bundle's target is the ConfigMap and
/// key the OAuthClient's caBundleRef names, and the OAuthClient resolves. The behind-a-proxy
/// values are linted by CI (`.ci/helm_lint.sh`).
#[test]
fn the_private_ca_example_names_the_bundle_trust_manager_writes() {
    let text = read("examples/private-ca.yaml");
    let docs: Vec<serde_yaml::Value> = serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
    let of_kind = |kind: &str| docs.iter().find(|d| d["kind"] == kind).unwrap().clone();
    let bundle = of_kind("Bundle");
    assert_eq!(bundle["apiVersion"], "trust.cert-manager.io/v1alpha1");
    let client: oauth_token_operator::api::crd::OAuthClient =
        serde_yaml::from_value(of_kind("OAuthClient")).unwrap();
    let settings =
        oauth_token_operator::spec::ClientSettings::resolve(&client.spec, &Default::default())
            .unwrap();
    let reference = settings.ca_bundle.expect("a caBundleRef");
    assert_eq!(
        reference.kind,
        oauth_token_operator::api::crd::CaBundleKind::ConfigMap
    );
    assert_eq!(
        bundle["metadata"]["name"].as_str(),
        Some(reference.name.as_str())
    );
    assert_eq!(
        bundle["spec"]["target"]["configMap"]["key"].as_str(),
        Some(reference.key.as_str())
    );
    assert!(read(".ci/helm_lint.sh").contains("examples/behind-a-proxy.yaml"));
}

/// The paths a `.dockerignore` excludes: its entries, as prefixes (`target/`) or suffixes (`*.md`).
fn ignored(ignore: &str, path: &str) -> bool {
    ignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .any(|pattern| match pattern.strip_prefix('*') {
            Some(suffix) => path.ends_with(suffix),
            None => {
                let pattern = pattern.trim_end_matches('/');
                path == pattern || path.starts_with(&format!("{pattern}/"))
            }
        })
}

/// Copies `from` (relative to the repository) into `to`, leaving out what `.dockerignore`
/// excludes.
fn copy_context(from: &str, to: &std::path::Path, ignore: &str) {
    let source = std::path::Path::new(ROOT).join(from);
    if source.is_file() {
        if !ignored(ignore, from) {
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::copy(&source, to).unwrap();
        }
        return;
    }
    for entry in std::fs::read_dir(&source).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        copy_context(&format!("{from}/{name}"), &to.join(&name), ignore);
    }
}

/// The image's build stage, on exactly its build context: the files its `COPY` lines name, less
/// what `.dockerignore` excludes, in an empty directory; then its cargo command, offline (for the
/// host, as the musl target needs the image's toolchain). The manifest names benchmark targets,
/// so a context without them fails here as it did in `docker build`.
#[test]
fn the_image_builds_from_its_own_context() {
    let steps = instructions(&read("Dockerfile"));
    let build_stage: Vec<&(String, String)> = steps
        .iter()
        .skip(1)
        .take_while(|(k, _)| k != "FROM")
        .collect();
    let ignore = read(".dockerignore");
    let context = tempfile::tempdir().unwrap();
    for (_, rest) in build_stage.iter().filter(|(k, _)| k == "COPY") {
        let parts: Vec<&str> = rest.split_whitespace().collect();
        let (sources, dest) = parts.split_at(parts.len() - 1);
        for source in sources {
            let target = match dest[0].trim_end_matches('/') {
                "." => context.path().join(source),
                dir => context.path().join(dir.trim_start_matches("./")),
            };
            copy_context(source, &target, &ignore);
        }
    }
    let run = build_stage
        .iter()
        .find(|(k, r)| k == "RUN" && r.contains("cargo build"))
        .map(|(_, r)| r.as_str())
        .expect("a cargo build in the build stage");
    let cargo = run
        .split("&&")
        .map(str::trim)
        .find(|c| c.starts_with("cargo build"))
        .unwrap();
    let mut args: Vec<&str> = cargo.split_whitespace().skip(1).collect();
    if let Some(at) = args.iter().position(|a| *a == "--target") {
        args.drain(at..at + 2);
    }
    assert!(
        args.contains(&"--locked") && args.contains(&"--release"),
        "{cargo}"
    );
    args.push("--offline");
    // A target directory of its own (cargo holds the test run's), kept between runs.
    let home = std::env::var("HOME").unwrap_or_else(|_| "/tmp".into());
    let target = format!("{home}/.cache/oauth-token-operator/image-build-target");
    let output = std::process::Command::new(env!("CARGO"))
        .args(&args)
        .current_dir(context.path())
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "cargo {} on the image's build context failed:\n{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        std::path::Path::new(&target)
            .join("release/oauth-token-operator")
            .is_file()
    );
}

/// The chart values table of `docs/reference.md` names every value of `values.yaml`: each
/// top-level key, and each key under it (as `key.child` or `.child` in the key's row), except
/// the free-form maps (`resources`, labels and annotations) whose keys are Kubernetes' own.
#[test]
fn the_values_table_names_every_value() {
    let reference = read("docs/reference.md");
    let start = reference
        .find("## Chart values")
        .expect("a Chart values section");
    let table: Vec<&str> = reference[start..]
        .lines()
        .skip(1)
        .take_while(|l| !l.starts_with("## "))
        .filter(|l| l.starts_with("| `"))
        .collect();
    let values: serde_yaml::Value =
        serde_yaml::from_str(&read("charts/oauth-token-operator/values.yaml")).unwrap();
    let free_form = [
        "resources",
        "podAnnotations",
        "podLabels",
        "nodeSelector",
        "affinity",
    ];
    let mut missing = Vec::new();
    for (key, value) in values.as_mapping().unwrap() {
        let key = key.as_str().unwrap();
        let rows: Vec<&&str> = table
            .iter()
            .filter(|row| row.contains(&format!("`{key}`")) || row.contains(&format!("`{key}.")))
            .collect();
        if rows.is_empty() {
            missing.push(key.to_owned());
            continue;
        }
        let Some(children) = value.as_mapping().filter(|_| !free_form.contains(&key)) else {
            continue;
        };
        for child in children.keys().filter_map(|c| c.as_str()) {
            let named = rows.iter().any(|row| {
                row.contains(&format!("`{key}.{child}"))
                    || row.contains(&format!("`.{child}`"))
                    || row.contains(&format!("`.{child}."))
            });
            if !named {
                missing.push(format!("{key}.{child}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "values.yaml holds values the table of docs/reference.md does not name: {missing:?}"
    );
}

/// The binary's allocator is jemalloc with the options of `.cargo/config.toml` built in (the
/// build reads them from the environment: a build that missed them would run on jemalloc's
/// defaults, which hold freed pages ten times as long). jemalloc prints its configuration at
/// exit when `stats_print` is set at run time.
#[test]
fn the_binary_runs_on_jemalloc_with_the_configured_options() {
    let config = read(".cargo/config.toml");
    let wanted = config
        .lines()
        .find_map(|l| l.strip_prefix("JEMALLOC_SYS_WITH_MALLOC_CONF = "))
        .expect("JEMALLOC_SYS_WITH_MALLOC_CONF in .cargo/config.toml")
        .trim_matches('"');
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_oauth-token-operator"))
        .arg("--version")
        .env("_RJEM_MALLOC_CONF", "stats_print:true")
        .output()
        .unwrap();
    assert!(output.status.success());
    let stats = String::from_utf8_lossy(&output.stderr);
    let built_in = stats
        .lines()
        .find_map(|l| l.trim().strip_prefix("config.malloc_conf: "))
        .unwrap_or_else(|| panic!("no jemalloc statistics at exit:\n{stats}"));
    assert_eq!(
        built_in,
        format!("\"background_thread:true,{wanted}\""),
        "the options jemalloc was built with"
    );
    for option in wanted.split(',') {
        let (name, value) = option.split_once(':').unwrap();
        assert!(
            stats
                .lines()
                .any(|l| l.trim().starts_with(&format!("opt.{name}: {value}"))),
            "jemalloc does not run with {option}:\n{stats}"
        );
    }
}
