//! Test certificates: a CA made for the test run, server certificates it signs (each
//! with a serial of the test's choosing), and a client config that trusts only that
//! CA, so every TLS test checks the chain for real.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{BasicConstraints, Certificate, CertificateParams, DnType, IsCa, KeyPair, SerialNumber};

/// A CA that lives for one test.
pub struct TestCa {
    cert: Certificate,
    key: KeyPair,
}

/// A server certificate and key as PEM files, and the certificate's DER.
pub struct Issued {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub der: Vec<u8>,
}

impl TestCa {
    pub fn new() -> TestCa {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, "natter test CA");
        let cert = params.self_signed(&key).unwrap();
        TestCa { cert, key }
    }

    pub fn pem(&self) -> String {
        self.cert.pem()
    }

    /// Writes the CA certificate to `dir/ca.pem` and returns its path.
    pub fn write_pem(&self, dir: &Path) -> PathBuf {
        let path = dir.join("ca.pem");
        std::fs::write(&path, self.pem()).unwrap();
        path
    }

    /// Issues a certificate for localhost and 127.0.0.1 with `serial`, written to
    /// `dir/<name>.crt` and `dir/<name>.key` (the chain file holds leaf then CA).
    pub fn issue(&self, dir: &Path, name: &str, serial: u64) -> Issued {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, format!("natter test server {serial}"));
        params.serial_number = Some(SerialNumber::from(serial));
        let leaf = params.signed_by(&key, &self.cert, &self.key).unwrap();
        let (cert, keyfile) = (dir.join(format!("{name}.crt")), dir.join(format!("{name}.key")));
        std::fs::write(&cert, format!("{}{}", leaf.pem(), self.cert.pem())).unwrap();
        std::fs::write(&keyfile, key.serialize_pem()).unwrap();
        Issued { cert, key: keyfile, der: leaf.der().to_vec() }
    }

    /// A client config that trusts this CA and nothing else. Sessions are never
    /// resumed, so every connection sees the certificate served at that moment.
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.cert.der().clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.resumption = rustls::client::Resumption::disabled();
        Arc::new(config)
    }
}

/// A GET over HTTPS to `addr` (named `localhost`), verified with `tls`; returns
/// (status, body).
pub fn https_get(addr: std::net::SocketAddr, path: &str, tls: &Arc<rustls::ClientConfig>) -> (u16, String) {
    let stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    let session = rustls::ClientConnection::new(tls.clone(), "localhost".try_into().unwrap()).unwrap();
    let mut s = rustls::StreamOwned::new(session, stream);
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost:{}\r\nConnection: close\r\n\r\n", addr.port()).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out); // a close without close_notify is an error we do not mind here
    let out = String::from_utf8_lossy(&out).into_owned();
    let status = out.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

/// A TLS connection to `addr` (named `localhost`), verified with `tls`, for HTTP
/// requests written and read by hand.
pub fn tls_connect(
    addr: std::net::SocketAddr,
    tls: &std::sync::Arc<rustls::ClientConfig>,
) -> BufReader<rustls::StreamOwned<rustls::ClientConnection, TcpStream>> {
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    let session = rustls::ClientConnection::new(tls.clone(), "localhost".try_into().unwrap()).unwrap();
    BufReader::new(rustls::StreamOwned::new(session, stream))
}

/// The next SSE event's `data:` on `s`, skipping comments and other fields.
pub fn next_data(s: &mut impl BufRead) -> serde_json::Value {
    loop {
        let mut line = String::new();
        assert!(s.read_line(&mut line).unwrap() > 0, "the stream ended");
        if let Some(data) = line.trim_end().strip_prefix("data: ") {
            return serde_json::from_str(data).unwrap();
        }
    }
}

/// One `POST /send` on a kept-alive connection: (status, body).
pub fn post_send(s: &mut BufReader<impl Read + Write>, session: &str, body: &serde_json::Value) -> (u16, String) {
    let body = body.to_string();
    let head = format!(
        "POST /send?session={session} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.get_mut().write_all(format!("{head}{body}").as_bytes()).unwrap();
    let mut status_line = String::new();
    s.read_line(&mut status_line).unwrap();
    let mut length = 0;
    loop {
        let mut line = String::new();
        s.read_line(&mut line).unwrap();
        if line == "\r\n" {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().unwrap();
            }
        }
    }
    let mut answer = vec![0; length];
    s.read_exact(&mut answer).unwrap();
    (status_line.split(' ').nth(1).unwrap().parse().unwrap(), String::from_utf8(answer).unwrap())
}
