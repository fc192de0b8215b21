//! natter-test-ca: a throwaway CA and one server certificate it signs, for a
//! load-test run against natter's TLS (`make loadtest`'s `natter-tls`) and
//! for the tester's own TLS tests.
//!
//! Writes `DIR/ca.pem` (what `natter-loadtest --ca` trusts), `DIR/server.crt`
//! (the leaf, then the CA: natter's `--tls-cert`) and `DIR/server.key`
//! (`--tls-key`). Keys are ECDSA P-256, as a public CA's would likely be.
//! The CA's key is never written: nothing else can be signed with it.

use clap::Parser;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

/// Make a throwaway CA and a server certificate for NAMES.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// Directory to write ca.pem, server.crt and server.key into (made if missing).
    dir: PathBuf,
    /// The server certificate's names: DNS names and IP addresses.
    #[arg(default_values_t = ["localhost".to_string(), "127.0.0.1".to_string()])]
    names: Vec<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match write(&args.dir, &args.names) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("natter-test-ca: {e}");
            ExitCode::from(2)
        }
    }
}

fn write(dir: &Path, names: &[String]) -> Result<(), String> {
    let ca_key = KeyPair::generate().map_err(|e| format!("CA key: {e}"))?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(|e| format!("CA: {e}"))?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    // A name of its own, so that another run's CA is an unknown issuer, not a namesake.
    let nonce =
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos()) ^ u128::from(std::process::id());
    ca.distinguished_name.push(DnType::CommonName, format!("natter load-test CA {nonce:x}"));
    let ca = ca.self_signed(&ca_key).map_err(|e| format!("CA: {e}"))?;

    let key = KeyPair::generate().map_err(|e| format!("server key: {e}"))?;
    let mut leaf = CertificateParams::new(names.to_vec()).map_err(|e| format!("names {names:?}: {e}"))?;
    leaf.distinguished_name.push(DnType::CommonName, "natter load-test server");
    let leaf = leaf.signed_by(&key, &ca, &ca_key).map_err(|e| format!("server certificate: {e}"))?;

    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let files = [
        ("ca.pem", ca.pem()),
        ("server.crt", format!("{}{}", leaf.pem(), ca.pem())),
        ("server.key", key.serialize_pem()),
    ];
    for (name, pem) in files {
        let path = dir.join(name);
        std::fs::write(&path, pem).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}
