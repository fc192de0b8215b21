//! The shipped Caddyfile (deploy/Caddyfile) is one Caddy accepts: `caddy validate`
//! parses it and provisions every module, as `caddy run` would, without serving.
//! (Running it needs a public name for automatic HTTPS; the nginx test covers the
//! proxy path end to end.) Caddy comes from scripts/ensure-nginx.sh.

use std::process::Command;

#[test]
fn the_shipped_caddyfile_validates() {
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/Caddyfile");
    let home = tempfile::tempdir().unwrap(); // caddy keeps state under $HOME
    let out = Command::new("caddy")
        .args(["validate", "--adapter", "caddyfile", "--config", file])
        .env("HOME", home.path())
        .env("XDG_DATA_HOME", home.path())
        .env("XDG_CONFIG_HOME", home.path())
        .output()
        .expect("caddy (scripts/ensure-nginx.sh installs it)");
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && said.contains("Valid configuration"), "caddy validate: {said}");
}
