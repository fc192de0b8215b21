//! The shipped Caddyfile (deploy/Caddyfile) is one Caddy accepts: `caddy validate`
//! parses it and provisions every module, as `caddy run` would, without serving.
//! (Running it needs a public name for automatic HTTPS; the nginx test covers the
//! proxy path end to end.) Caddy comes from scripts/ensure-nginx.sh.

use std::process::Command;

#[test]
fn the_shipped_caddyfile_validates() {
    let out = caddy("validate");
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && said.contains("Valid configuration"), "caddy validate: {said}");
}

#[test]
fn the_shipped_caddyfile_logs_no_query_string_and_no_credential_header() {
    let out = caddy("adapt");
    assert!(out.status.success(), "caddy adapt: {}", String::from_utf8_lossy(&out.stderr));
    let config: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let logs = config["logging"]["logs"].as_object().expect("a log is configured");
    let access: Vec<_> = logs.values().filter(|l| l["include"].to_string().contains("http.log.access")).collect();
    assert_eq!(access.len(), 1, "{logs:?}");
    let fields = &access[0]["encoder"]["fields"];
    assert_eq!(access[0]["encoder"]["format"], "filter");
    assert_eq!(fields["request>uri"]["filter"], "regexp", "the query is cut from the URI: {fields}");
    assert_eq!(fields["request>uri"]["regexp"], "\\?.*$");
    for header in ["Authorization", "X-Natter-Session"] {
        assert_eq!(fields[format!("request>headers>{header}")]["filter"], "delete", "{header}: {fields}");
    }
}

/// `caddy SUBCOMMAND` on the shipped Caddyfile, with its state in a throwaway $HOME.
fn caddy(subcommand: &str) -> std::process::Output {
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/Caddyfile");
    let home = tempfile::tempdir().unwrap();
    Command::new("caddy")
        .args([subcommand, "--adapter", "caddyfile", "--config", file])
        .env("HOME", home.path())
        .env("XDG_DATA_HOME", home.path())
        .env("XDG_CONFIG_HOME", home.path())
        .output()
        .expect("caddy (scripts/ensure-nginx.sh installs it)")
}
