//! The Grafana dashboard (`deploy/grafana/refsync.json`) and the Prometheus rules
//! (`deploy/prometheus/rules.yaml`) only use metrics the controller exports: every metric name
//! in their PromQL is checked against `/metrics` of a real `refsync controller` after it has
//! synced (and failed to sync) ExternalSecrets against OpenBao, so the dashboard can never point
//! at a metric that does not exist. Every alert also carries the annotations and the severity
//! label an operator's routing relies on.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, PostParams};
use refsync_api::{ClusterSecretStore, ExternalSecret, SecretStore};
use refsync_e2e::ControllerProcess;
use refsync_testenv::{KubeEnv, OpenBao};
use serde_json::{Value, json};

fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(rel)
}

fn dashboard() -> Value {
    let path = repo_file("deploy/grafana/refsync.json");
    let text = std::fs::read_to_string(&path).unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn rules() -> Value {
    let path = repo_file("deploy/prometheus/rules.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

// ---------------------------------------------------------------------------------------------
// PromQL: metric names used by an expression.

/// Binary operators and modifiers spelled as words.
const KEYWORDS: &[&str] = &[
    "and", "or", "unless", "offset", "bool", "inf", "nan", "atan2",
];
/// Modifiers followed by a parenthesised list of label names.
const LABEL_LIST: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];
/// Aggregation operators: may be followed by `by (…)` / `without (…)` before their `(`.
const AGGREGATIONS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
];

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':'
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// The index just past the bracket matching `open` at `i` (quotes inside are skipped).
fn skip_group(s: &[char], mut i: usize, open: char, close: char) -> usize {
    let mut depth = 0usize;
    while i < s.len() {
        let c = s[i];
        if c == '"' || c == '\'' || c == '`' {
            i = skip_string(s, i);
            continue;
        }
        if c == open {
            depth += 1;
        } else if c == close {
            depth -= 1;
            if depth == 0 {
                return i + 1;
            }
        }
        i += 1;
    }
    i
}

/// The index just past the string literal starting at `i`.
fn skip_string(s: &[char], i: usize) -> usize {
    let quote = s[i];
    let mut j = i + 1;
    while j < s.len() {
        if s[j] == '\\' && quote != '`' {
            j += 2;
            continue;
        }
        if s[j] == quote {
            return j + 1;
        }
        j += 1;
    }
    j
}

fn skip_ws(s: &[char], mut i: usize) -> usize {
    while i < s.len() && s[i].is_whitespace() {
        i += 1;
    }
    i
}

/// Every metric name an expression selects, as written (`foo_bucket` stays `foo_bucket`):
/// identifiers not followed by `(`, not PromQL keywords or aggregation operators, and not label
/// names (inside `{…}`, or in the list after `by`/`without`/`on`/`ignoring`/`group_*`). Strings,
/// range/subquery brackets, numbers, durations, comments and Grafana variables (`$x`, `${x}`)
/// are skipped.
fn promql_metric_names(expr: &str) -> BTreeSet<String> {
    let s: Vec<char> = expr.chars().collect();
    let mut out = BTreeSet::new();
    let mut i = 0;
    while i < s.len() {
        let c = s[i];
        match c {
            '"' | '\'' | '`' => i = skip_string(&s, i),
            '{' => i = skip_group(&s, i, '{', '}'),
            '[' => i = skip_group(&s, i, '[', ']'),
            '#' => {
                while i < s.len() && s[i] != '\n' {
                    i += 1;
                }
            }
            '$' => {
                i += 1;
                if s.get(i) == Some(&'{') {
                    i = skip_group(&s, i, '{', '}');
                } else {
                    while i < s.len() && is_ident(s[i]) {
                        i += 1;
                    }
                }
            }
            c if c.is_ascii_digit()
                || (c == '.' && s.get(i + 1).is_some_and(char::is_ascii_digit)) =>
            {
                // Numbers (1e-9, 0x1f, 0.5) and durations (5m, 1h30m).
                while i < s.len() && (is_ident(s[i]) || s[i] == '.') {
                    // A sign belongs to the number only right after an exponent.
                    i += 1;
                    if i + 1 < s.len()
                        && (s[i] == '-' || s[i] == '+')
                        && (s[i - 1] == 'e' || s[i - 1] == 'E')
                        && s[i + 1].is_ascii_digit()
                    {
                        i += 1;
                    }
                }
            }
            c if is_ident_start(c) => {
                let start = i;
                while i < s.len() && is_ident(s[i]) {
                    i += 1;
                }
                let word: String = s[start..i].iter().collect();
                let lower = word.to_ascii_lowercase();
                let next = skip_ws(&s, i);
                if LABEL_LIST.contains(&lower.as_str()) {
                    if s.get(next) == Some(&'(') {
                        i = skip_group(&s, next, '(', ')');
                    }
                } else if KEYWORDS.contains(&lower.as_str())
                    || AGGREGATIONS.contains(&lower.as_str())
                    || s.get(next) == Some(&'(')
                {
                    // An operator, or a function call.
                } else {
                    out.insert(word);
                }
            }
            _ => i += 1,
        }
    }
    out
}

/// The PromQL inside a Grafana query variable: `label_values(selector, label)` → `selector`
/// (`label_values(label)` has none), `query_result(expr)` → `expr`, anything else as is.
fn variable_promql(query: &str) -> Option<String> {
    let q = query.trim();
    let inner = |prefix: &str| {
        q.strip_prefix(prefix)
            .map(str::trim_start)
            .and_then(|r| r.strip_prefix('('))
            .and_then(|r| r.strip_suffix(')'))
    };
    if let Some(args) = inner("label_values") {
        let chars: Vec<char> = args.chars().collect();
        let mut i = 0;
        let mut last_comma = None;
        while i < chars.len() {
            match chars[i] {
                '"' | '\'' | '`' => i = skip_string(&chars, i),
                '{' => i = skip_group(&chars, i, '{', '}'),
                '(' => i = skip_group(&chars, i, '(', ')'),
                '[' => i = skip_group(&chars, i, '[', ']'),
                ',' => {
                    last_comma = Some(i);
                    i += 1;
                }
                _ => i += 1,
            }
        }
        return last_comma.map(|k| chars[..k].iter().collect());
    }
    if let Some(expr) = inner("query_result") {
        return Some(expr.to_string());
    }
    if q.starts_with("label_names") || q.starts_with("metrics") {
        return None;
    }
    Some(q.to_string())
}

/// `(where, expr)` for every PromQL expression of the dashboard: panel targets (rows' nested
/// panels too) and query variables.
fn dashboard_exprs(d: &Value) -> Vec<(String, String)> {
    fn walk(panels: &[Value], out: &mut Vec<(String, String)>) {
        for p in panels {
            let title = p["title"].as_str().unwrap_or("?");
            for t in p["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = t["expr"].as_str() {
                    out.push((format!("panel {title:?}"), expr.to_string()));
                }
            }
            walk(p["panels"].as_array().map_or(&[], Vec::as_slice), out);
        }
    }
    let mut out = Vec::new();
    walk(d["panels"].as_array().map_or(&[], Vec::as_slice), &mut out);
    for v in d["templating"]["list"].as_array().into_iter().flatten() {
        if v["type"] != "query" {
            continue;
        }
        let q = v["query"]["query"].as_str().or(v["query"].as_str());
        if let Some(promql) = q.and_then(variable_promql) {
            out.push((format!("variable {}", v["name"]), promql));
        }
    }
    out
}

/// `(where, expr)` for every rule of the rule file.
fn rule_exprs(r: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for g in r["groups"].as_array().expect("groups: a list") {
        for rule in g["rules"].as_array().expect("rules: a list") {
            let name = rule["alert"]
                .as_str()
                .or(rule["record"].as_str())
                .unwrap_or("?");
            let expr = rule["expr"]
                .as_str()
                .unwrap_or_else(|| panic!("{name}: no expr"));
            out.push((format!("rule {name}"), expr.to_string()));
        }
    }
    out
}

/// Metric families in a `/metrics` text: name → type (from the `# TYPE` lines).
fn exported_families(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| {
            let mut w = l.strip_prefix("# TYPE ")?.split_whitespace();
            Some((w.next()?.to_string(), w.next()?.to_string()))
        })
        .collect()
}

/// The family a used name belongs to: `_bucket`/`_sum`/`_count` are stripped only where the
/// rest is an exported histogram (or summary), so a counter that happens to end in `_count`
/// (`externalsecret_provider_api_calls_count`) keeps its name.
fn family_of(name: &str, families: &BTreeMap<String, String>) -> String {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            let t = families.get(base).map(String::as_str);
            if t == Some("histogram") || (t == Some("summary") && suffix != "_bucket") {
                return base.to_string();
            }
        }
    }
    name.to_string()
}

/// Used metric names (with where they are used) that `/metrics` does not export.
fn missing(used: &BTreeMap<String, BTreeSet<String>>, metrics: &str) -> Vec<String> {
    let families = exported_families(metrics);
    used.iter()
        .filter(|(name, _)| !families.contains_key(&family_of(name, &families)))
        .map(|(name, at)| format!("{name} (used by {})", Vec::from_iter(at.clone()).join(", ")))
        .collect()
}

fn used_metrics() -> BTreeMap<String, BTreeSet<String>> {
    let mut used: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut exprs = dashboard_exprs(&dashboard());
    let n_dash = exprs.len();
    exprs.extend(rule_exprs(&rules()));
    assert!(n_dash >= 15, "only {n_dash} dashboard expressions found");
    assert!(exprs.len() - n_dash >= 5, "too few rules found");
    for (at, expr) in exprs {
        let names = promql_metric_names(&expr);
        assert!(!names.is_empty(), "{at}: no metric in {expr:?}");
        for n in names {
            used.entry(n).or_default().insert(at.clone());
        }
    }
    used
}

#[test]
fn promql_tokenizer_finds_metric_names_only() {
    let names = |e: &str| Vec::from_iter(promql_metric_names(e));
    assert_eq!(
        names(
            "histogram_quantile(0.99, sum by (le, controller) (rate(refsync_reconcile_seconds_bucket{controller=~\"$c\"}[$__rate_interval])))"
        ),
        ["refsync_reconcile_seconds_bucket"]
    );
    assert_eq!(
        names("sum without (instance) (rate(a_total[5m] offset 1h)) / on (job) group_left (pod) b"),
        ["a_total", "b"]
    );
    assert_eq!(
        names("max(refsync_leader) == 0 or absent(refsync_leader) and bool 1e-9 > inf"),
        ["refsync_leader"]
    );
    assert_eq!(
        names("sum(x{a=\"by (y)\", b='{z}'}) by (namespace) > 0.5 # comment metric_in_comment"),
        ["x"]
    );
    assert_eq!(names("count_values(\"v\", c) unless d[1h:5m]"), ["c", "d"]);
    assert_eq!(
        variable_promql("label_values(externalsecret_status_condition{a=\"b,c\"}, namespace)")
            .as_deref(),
        Some("externalsecret_status_condition{a=\"b,c\"}")
    );
    assert_eq!(variable_promql("label_values(namespace)"), None);
    let fam: BTreeMap<String, String> = [
        ("h".to_string(), "histogram".to_string()),
        ("c_count".to_string(), "counter".to_string()),
    ]
    .into();
    assert_eq!(family_of("h_bucket", &fam), "h");
    assert_eq!(family_of("h_count", &fam), "h");
    assert_eq!(family_of("c_count", &fam), "c_count");
    assert_eq!(family_of("other_sum", &fam), "other_sum");
}

#[test]
fn dashboard_uses_a_datasource_variable_and_every_alert_is_annotated() {
    let d = dashboard();
    assert!(d["schemaVersion"].as_u64().unwrap_or(0) >= 36);
    let vars = d["templating"]["list"].as_array().unwrap();
    assert!(
        vars.iter().any(|v| v["name"] == "datasource"
            && v["type"] == "datasource"
            && v["query"] == "prometheus"),
        "no `datasource` Prometheus variable"
    );
    fn panels_of(panels: &[Value], out: &mut Vec<Value>) {
        for p in panels {
            out.push(p.clone());
            panels_of(p["panels"].as_array().map_or(&[], Vec::as_slice), out);
        }
    }
    let mut panels = Vec::new();
    panels_of(d["panels"].as_array().unwrap(), &mut panels);
    let mut ids = BTreeSet::new();
    for p in &panels {
        assert!(
            ids.insert(p["id"].as_u64().unwrap()),
            "duplicate panel id in {p}"
        );
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(
            p["datasource"]["uid"], "${datasource}",
            "panel {} does not use the datasource variable",
            p["title"]
        );
        for t in p["targets"].as_array().unwrap() {
            assert_eq!(t["datasource"]["uid"], "${datasource}", "{}", p["title"]);
        }
    }

    let r = rules();
    let mut alerts = BTreeSet::new();
    for g in r["groups"].as_array().unwrap() {
        for rule in g["rules"].as_array().unwrap() {
            let Some(name) = rule["alert"].as_str() else {
                continue;
            };
            alerts.insert(name.to_string());
            for key in ["summary", "description"] {
                let v = rule["annotations"][key].as_str().unwrap_or_default();
                assert!(!v.trim().is_empty(), "alert {name}: no {key} annotation");
            }
            let sev = rule["labels"]["severity"].as_str().unwrap_or_default();
            assert!(
                ["critical", "warning", "info"].contains(&sev),
                "alert {name}: severity label {sev:?}"
            );
        }
    }
    for want in [
        "RefsyncExternalSecretNotReady",
        "RefsyncSyncErrorRateHigh",
        "RefsyncNoLeader",
        "RefsyncProviderAPIErrors",
        "RefsyncStaleRefresh",
        "RefsyncSecretStoreNotReady",
    ] {
        assert!(alerts.contains(want), "no alert {want}; have {alerts:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// The running controller's /metrics.

/// Polls `f` every 200 ms until it returns `Some`; `None` after `timeout`.
async fn poll<T, F, Fut>(timeout: Duration, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let t0 = Instant::now();
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if t0.elapsed() > timeout {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// OpenBao KV v2 write, retried while a fresh mount is still upgrading.
async fn bao_write(bao: &OpenBao, path: &str, body: Value) {
    for _ in 0..50 {
        let resp = bao
            .request(reqwest::Method::POST, path)
            .json(&body)
            .send()
            .await
            .expect("OpenBao request");
        if resp.status().is_success() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("OpenBao write {path} kept failing");
}

fn object<T: serde::de::DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).unwrap()
}

#[tokio::test]
async fn every_metric_of_the_dashboard_and_the_alerts_is_exported_by_the_controller() {
    let used = used_metrics();

    let env = KubeEnv::shared().await;
    let client = env.client().await;
    refsync_e2e::install_crds(&client).await.unwrap();
    let ns = env.create_namespace("obs").await.unwrap();
    let class = format!("class-{ns}");
    let bao = OpenBao::shared().await;
    let mount = bao.create_kv_mount("obs", 2).await.unwrap();
    bao_write(
        bao,
        &format!("{mount}/data/app"),
        json!({"data": {"password": "not-a-secret"}}),
    )
    .await;

    let ctl = ControllerProcess::builder("observability")
        .kubeconfig_of(&env.kubeconfig())
        .log_level(Some("info,kube=warn"))
        .args([
            "--leader-elect=false",
            "--namespace",
            &ns,
            "--controller-class",
            &class,
        ])
        .start();
    let ready = poll(Duration::from_secs(60), || async {
        (ctl.get("/readyz").await?.0 == 200).then_some(())
    })
    .await;
    assert!(ready.is_some(), "controller not ready; log:\n{}", ctl.log());

    let pp = PostParams::default();
    let creds: Secret = object(json!({
        "metadata": {"name": "vault-creds"}, "stringData": {"token": bao.root_token()}
    }));
    Api::<Secret>::namespaced(client.clone(), &ns)
        .create(&pp, &creds)
        .await
        .unwrap();
    let stores: Api<SecretStore> = Api::namespaced(client.clone(), &ns);
    stores
        .create(
            &pp,
            &object(json!({
                "apiVersion": "external-secrets.io/v1", "kind": "SecretStore",
                "metadata": {"name": "vault"},
                "spec": {"provider": {"vault": {
                    "server": bao.addr(), "path": mount, "version": "v2",
                    "auth": {"tokenSecretRef": {"name": "vault-creds", "key": "token"}}
                }}}
            })),
        )
        .await
        .unwrap();
    // A store that fails validation: the not-ready side of the store conditions.
    stores
        .create(
            &pp,
            &object(json!({
                "apiVersion": "external-secrets.io/v1", "kind": "SecretStore",
                "metadata": {"name": "broken"},
                "spec": {"provider": {"fake": {"data": [], "validationResult": 2}}}
            })),
        )
        .await
        .unwrap();
    let css_api: Api<ClusterSecretStore> = Api::all(client.clone());
    let css_name = format!("{ns}-css");
    css_api
        .create(
            &pp,
            &object(json!({
                "apiVersion": "external-secrets.io/v1", "kind": "ClusterSecretStore",
                "metadata": {"name": css_name},
                "spec": {"controller": class, "provider": {"fake": {"data": []}}}
            })),
        )
        .await
        .unwrap();
    let es_api: Api<ExternalSecret> = Api::namespaced(client.clone(), &ns);
    // One ExternalSecret that syncs, one whose remote key does not exist (sync errors,
    // reconcile errors by kind, provider calls with status="error").
    for (name, key) in [("app", "app"), ("missing", "does-not-exist")] {
        es_api
            .create(
                &pp,
                &object(json!({
                    "apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret",
                    "metadata": {"name": name},
                    "spec": {"secretStoreRef": {"name": "vault"}, "refreshInterval": "1h",
                             "data": [{"secretKey": "password",
                                       "remoteRef": {"key": key, "property": "password"}}]}
                })),
            )
            .await
            .unwrap();
    }
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let synced = poll(Duration::from_secs(30), || async {
        secrets
            .get_opt("app")
            .await
            .ok()??
            .data?
            .get("password")
            .cloned()
    })
    .await;
    assert!(
        synced.is_some(),
        "Secret app not synced; log:\n{}",
        ctl.log()
    );

    // Labelled families appear once their first series is touched: wait (bounded) until every
    // used name is exported; a name the controller never exports fails here.
    let t0 = Instant::now();
    let last = loop {
        let m = ctl
            .get("/metrics")
            .await
            .map(|(_, body)| body)
            .unwrap_or_default();
        if missing(&used, &m).is_empty() || t0.elapsed() > Duration::from_secs(30) {
            break m;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let gone = missing(&used, &last);
    assert!(
        gone.is_empty(),
        "the dashboard or the rules use metrics the controller does not export:\n  {}\n\n/metrics:\n{last}\n\nlog:\n{}",
        gone.join("\n  "),
        ctl.log()
    );
    eprintln!(
        "{} metric names used by the dashboard and the rules, all exported: {:?}",
        used.len(),
        used.keys().collect::<Vec<_>>()
    );

    css_api
        .delete(&css_name, &DeleteParams::default())
        .await
        .unwrap();
}
