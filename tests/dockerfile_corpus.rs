//! The third-party Dockerfile corpus in `tests/fixtures/dockerfiles` must
//! match its hand-checked answer key exactly.

use std::path::PathBuf;

use gitlab_docker_autodep::dockerfile::{extract, BuildArgs};
use serde_json::{json, Value};

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dockerfiles")
}

#[test]
fn corpus_matches_answer_key() {
    let dir = corpus_dir();
    let key: serde_json::Map<String, Value> = serde_json::from_str(
        &std::fs::read_to_string(dir.join("expected.json")).expect("answer key readable"),
    )
    .expect("answer key is JSON");
    assert!(key.len() >= 28, "answer key lists {} files", key.len());
    let mut mismatches = Vec::new();
    for (file, expected) in &key {
        let bytes = std::fs::read(dir.join("real").join(file)).expect("corpus file readable");
        let text = String::from_utf8_lossy(&bytes);
        let got: Vec<Value> = extract(&text, &BuildArgs::new())
            .images
            .iter()
            .map(|i| {
                json!({"ref": i.reference, "via": i.via.as_str(), "line": i.line, "unresolved": i.unresolved})
            })
            .collect();
        let expected = expected.as_array().expect("entry is a list");
        if &got != expected {
            let missing: Vec<_> = expected.iter().filter(|e| !got.contains(e)).collect();
            let extra: Vec<_> = got.iter().filter(|g| !expected.contains(g)).collect();
            mismatches.push(format!("{file}:\n  missing {missing:?}\n  extra {extra:?}"));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}
