//! Embeds www/ into the binary: writes a table of (URL path, bytes) that `http.rs`
//! includes, so `natter` is one deployable file.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(&p, out);
        } else {
            out.push(p);
        }
    }
}

fn main() {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets it")).join("www");
    println!("cargo:rerun-if-changed=www");
    let mut files = Vec::new();
    walk(&root, &mut files);
    files.sort();
    let mut table = String::from("pub static FILES: &[(&str, &[u8])] = &[\n");
    for f in files {
        let rel = f.strip_prefix(&root).expect("walked under root").to_string_lossy().replace('\\', "/");
        println!("cargo:rerun-if-changed={}", f.display());
        table.push_str(&format!("    ({:?}, include_bytes!({:?})),\n", format!("/{rel}"), f.display().to_string()));
    }
    table.push_str("];\n");
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets it")).join("www_files.rs");
    fs::write(out, table).expect("writing the embedded file table");
}
