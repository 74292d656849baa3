//! Every hostile Dockerfile shape, at 1 MiB and at small sizes: the right
//! answer or a diagnostic, never a panic, a stack overflow or a stall.

mod common;

use common::hostile::shapes;
use gitlab_docker_autodep::dockerfile::{extract, BuildArgs};

fn check_all(size: usize) {
    let mut failures = Vec::new();
    for shape in shapes(size) {
        // A thread with a small stack: deep recursion would overflow it.
        let text = shape.text.clone();
        let started = std::time::Instant::now();
        let out = std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || extract(&text, &BuildArgs::new()))
            .expect("thread starts")
            .join()
            .unwrap_or_else(|_| panic!("{} panicked", shape.name));
        eprintln!(
            "{}: {} bytes in {:?}",
            shape.name,
            shape.text.len(),
            started.elapsed()
        );
        if let Err(e) = (shape.check)(&out) {
            failures.push(format!("{} ({} bytes): {e}", shape.name, shape.text.len()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_shape_at_one_mebibyte() {
    check_all(1 << 20);
}

#[test]
fn every_shape_at_small_sizes() {
    for size in [0, 4096, 65536] {
        check_all(size);
    }
}

/// The sizes the issue names, whatever the file-size limit: 200,000 `FROM`
/// lines and 100,000 stages.
#[test]
fn two_hundred_thousand_from_lines_and_a_hundred_thousand_stages() {
    let text = "FROM alpine\n".repeat(200_000);
    let out = extract(&text, &BuildArgs::new());
    assert_eq!(out.images.len(), 200_000);
    assert_eq!(out.images[199_999].line, 200_000);
    let mut text = String::from("FROM alpine AS s0\n");
    for i in 1..100_000 {
        text.push_str(&format!(
            "FROM s{} AS s{i}\nCOPY --from=s{} / /\n",
            i - 1,
            i / 2
        ));
    }
    let out = extract(&text, &BuildArgs::new());
    let refs: Vec<&str> = out.images.iter().map(|i| i.reference.as_str()).collect();
    assert_eq!(refs, ["alpine"]);
}
