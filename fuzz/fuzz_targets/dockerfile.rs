//! Arbitrary bytes through the Dockerfile extractor: it must never panic,
//! and every reported line must exist.
#![no_main]

use gitlab_docker_autodep::dockerfile::{extract, BuildArgs};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let args = BuildArgs::new().with("CI_REGISTRY", "registry.example.com");
    let out = extract(&text, &args);
    let lines = text.split('\n').count();
    for image in out.images {
        assert!(image.line >= 1 && image.line <= lines);
    }
});
