//! Helpers shared by the simulator's tests.
#![allow(dead_code)]

use std::path::PathBuf;

use serde_json::Value;

pub const TOKEN: &str = "glpat-test";

pub fn fixture(path: &str) -> Value {
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/gitlab")
        .join(path);
    let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Every key of `expected` is in `got` with the same JSON type, recursively
/// (first array element). A null on either side matches any type: GitLab
/// sends null for absent optional values. Keys in `skip` are not required.
pub fn assert_same_shape(expected: &Value, got: &Value, skip: &[&str]) {
    let mut problems = Vec::new();
    compare(expected, got, "", skip, &mut problems);
    assert!(
        problems.is_empty(),
        "shape differs from the real payload:\n{}\ngot: {got:#}",
        problems.join("\n")
    );
}

fn compare(expected: &Value, got: &Value, at: &str, skip: &[&str], problems: &mut Vec<String>) {
    if expected.is_null() || got.is_null() {
        return;
    }
    if kind(expected) != kind(got) {
        problems.push(format!(
            "{at}: expected {}, got {}",
            kind(expected),
            kind(got)
        ));
        return;
    }
    match (expected, got) {
        (Value::Object(e), Value::Object(g)) => {
            for (k, ev) in e {
                let path = if at.is_empty() {
                    k.clone()
                } else {
                    format!("{at}.{k}")
                };
                if skip.contains(&path.as_str()) {
                    continue;
                }
                match g.get(k) {
                    Some(gv) => compare(ev, gv, &path, skip, problems),
                    None => problems.push(format!("{path}: missing")),
                }
            }
        }
        (Value::Array(e), Value::Array(g)) => {
            if let (Some(e0), Some(g0)) = (e.first(), g.first()) {
                compare(e0, g0, &format!("{at}[]"), skip, problems);
            }
        }
        _ => {}
    }
}
