//! deploy/grafana-natter.json and deploy/prometheus-alerts.yml against the real
//! server: every metric their PromQL names is one natter exports on `/metrics`, in
//! local mode or with `--redis` (some series exist in one mode only), so a renamed
//! metric cannot leave a dashboard panel empty or an alert silent.

mod common;
mod common_redis;

use std::collections::BTreeSet;
use std::path::Path;

use common::{http_get, TestServer};
use common_redis::RedisServer;
use serde_json::Value;

/// PromQL words that are not metric names: functions, aggregations, keywords.
const PROMQL_WORDS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "count",
    "stddev",
    "stdvar",
    "topk",
    "bottomk",
    "quantile",
    "count_values",
    "group",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "offset",
    "bool",
    "rate",
    "irate",
    "increase",
    "delta",
    "idelta",
    "deriv",
    "histogram_quantile",
    "vector",
    "scalar",
    "abs",
    "absent",
    "absent_over_time",
    "ceil",
    "floor",
    "round",
    "clamp_min",
    "clamp_max",
    "label_replace",
    "time",
    "avg_over_time",
    "max_over_time",
    "min_over_time",
    "sum_over_time",
    "changes",
    "resets",
    "sort",
    "sort_desc",
    "predict_linear",
    "timestamp",
    "inf",
    "nan",
];

/// Metrics natter does not export but Prometheus makes itself for every target.
const PROMETHEUS_OWN: &[&str] = &["up", "scrape_duration_seconds", "scrape_samples_scraped"];

/// The metric names a PromQL expression uses: identifiers outside `{...}` label
/// matchers, quotes, `[...]` ranges and `by (...)` lists, that are not PromQL words
/// and not followed by `(` (a function call).
fn metric_names(expr: &str) -> BTreeSet<String> {
    let b = expr.as_bytes();
    let (mut names, mut i) = (BTreeSet::new(), 0);
    let mut after_grouping = false;
    while i < b.len() {
        let c = b[i] as char;
        match c {
            '{' | '[' | '"' => {
                let close = match c {
                    '{' => '}',
                    '[' => ']',
                    _ => '"',
                };
                i += 1;
                while i < b.len() && b[i] as char != close {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            '(' if after_grouping => {
                // `by (instance, le)`: label names.
                while i < b.len() && b[i] != b')' {
                    i += 1;
                }
                after_grouping = false;
            }
            c if c.is_ascii_digit() => {
                // A number or a duration (`0.99`, `5m`, `1e3`).
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.') {
                    i += 1;
                }
            }
            c if c.is_ascii_alphabetic() || c == '_' || c == ':' || c == '$' => {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b':' || b[i] == b'$') {
                    i += 1;
                }
                let word = &expr[start..i];
                let next = expr[i..].trim_start().chars().next();
                if ["by", "without", "on", "ignoring", "group_left", "group_right"].contains(&word) {
                    after_grouping = true;
                } else if !word.starts_with('$') && next != Some('(') && !PROMQL_WORDS.contains(&word) {
                    names.insert(word.to_owned());
                }
            }
            _ => i += 1,
        }
    }
    names
}

/// Every `expr` of the Grafana dashboard's panels.
fn dashboard_exprs(root: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(root.join("deploy/grafana-natter.json")).unwrap();
    let dash: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let vars = dash["templating"]["list"].as_array().expect("templating variables");
    assert!(
        vars.iter().any(|v| v["type"] == "datasource" && v["query"] == "prometheus" && v["name"] == "datasource"),
        "a Prometheus datasource variable"
    );
    let panels = dash["panels"].as_array().expect("panels");
    assert!(!panels.is_empty());
    let mut exprs = Vec::new();
    for p in panels {
        assert_eq!(p["datasource"]["uid"], "${datasource}", "panel {} uses the variable", p["title"]);
        for t in p["targets"].as_array().expect("targets") {
            exprs.push(t["expr"].as_str().expect("expr").to_owned());
        }
    }
    exprs
}

/// Every `expr:` of the alert rules. Each is a one-line scalar (checked), so a line
/// reader finds them all; the file is checked as YAML when python3 has PyYAML.
fn alert_exprs(root: &Path) -> Vec<String> {
    let path = root.join("deploy/prometheus-alerts.yml");
    let text = std::fs::read_to_string(&path).unwrap();
    let parsed = std::process::Command::new("python3")
        .args([
            "-c",
            "import sys, yaml; d = yaml.safe_load(open(sys.argv[1])); print(sum(len(g['rules']) for g in d['groups']))",
        ])
        .arg(&path)
        .output();
    let alerts = text.lines().filter(|l| l.trim_start().starts_with("- alert:")).count();
    match parsed {
        Ok(out) if out.status.success() => {
            assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), alerts.to_string(), "every rule parsed as YAML")
        }
        Ok(out) if String::from_utf8_lossy(&out.stderr).contains("No module named 'yaml'") => {
            eprintln!("python3 has no PyYAML: the YAML parse check is skipped")
        }
        Ok(out) => panic!("deploy/prometheus-alerts.yml is not valid YAML: {}", String::from_utf8_lossy(&out.stderr)),
        Err(e) => eprintln!("no python3 ({e}): the YAML parse check is skipped"),
    }
    let exprs: Vec<String> = text
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("expr:"))
        .map(|e| {
            let e = e.trim();
            assert!(!e.is_empty() && !e.starts_with('|') && !e.starts_with('>'), "one-line expr: {e}");
            e.to_owned()
        })
        .collect();
    assert_eq!(exprs.len(), alerts, "an expr per alert");
    exprs
}

/// The metric names a `/metrics` body exports (histogram series by their full name).
fn exported(body: &str) -> BTreeSet<String> {
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn promql_names_are_parsed_without_functions_labels_or_keywords() {
    let got = metric_names(
        r#"histogram_quantile(0.99, sum by (instance, le) (rate(natter_ack_seconds_bucket{code=~"a|b"}[5m]))) > 0.25 and on(instance) natter_connections offset 5m"#,
    );
    assert_eq!(got, ["natter_ack_seconds_bucket", "natter_connections"].map(String::from).into());
    assert_eq!(metric_names("count(natter_redis_up == 0) or vector(0)"), ["natter_redis_up".to_owned()].into());
}

#[test]
fn every_metric_the_dashboard_and_alerts_use_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let exprs: Vec<String> = dashboard_exprs(root).into_iter().chain(alert_exprs(root)).collect();
    let used: BTreeSet<String> = exprs.iter().flat_map(|e| metric_names(e)).collect();
    assert!(used.len() >= 15, "the expressions were read: {used:?}");

    // Local mode exports the store's series; --redis exports natter_redis_up instead.
    let local = TestServer::start();
    // An acked post is counted in the ack-time histogram.
    let mut ann = local.connect("ann");
    ann.join("lobby", None);
    ann.post("lobby", "timed", "t-1");
    local.wait_metric("natter_ack_seconds_count", 1);
    let mut have = exported(&http_get(local.admin, "/metrics").1);
    let redis = RedisServer::start();
    let url = redis.url();
    let clustered = TestServer::start_with(move |c| c.redis = Some(url));
    common::wait_until(|| http_get(clustered.admin, "/metrics").1.contains("natter_redis_up 1"), "redis up");
    have.extend(exported(&http_get(clustered.admin, "/metrics").1));

    let missing: Vec<&String> =
        used.iter().filter(|m| !have.contains(*m) && !PROMETHEUS_OWN.contains(&m.as_str())).collect();
    assert!(missing.is_empty(), "used in deploy/ but not in /metrics: {missing:?}\nexported: {have:?}");
    for must in ["natter_ack_seconds_bucket", "natter_store_failing", "natter_redis_up"] {
        assert!(used.contains(must), "{must} is watched");
    }
}
