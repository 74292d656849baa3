//! Extraction cost: a 1 MiB Dockerfile built from the real-world corpus
//! (repeated), 1 MiB files of typical shapes, and every hostile shape of
//! `tests/common/hostile.rs` at 1 MiB, with the worst case last.
//! Run: `cargo bench --bench dockerfile`; `cargo bench --bench dockerfile --
//! FILE…` times those Dockerfiles too (a fuzzer's slow input, say).

#[path = "../tests/common/hostile.rs"]
mod hostile;

use std::time::{Duration, Instant};

use gitlab_docker_autodep::dockerfile::{extract, BuildArgs};

/// Prints the figures and returns the best time.
fn time(name: &str, text: &str) -> Duration {
    let args = BuildArgs::new().with("CI_REGISTRY", "registry.example.com");
    // Warm up, then take the best of several runs (least disturbed by noise).
    let images = extract(text, &args).images.len();
    let mut best = Duration::MAX;
    let mut total = Duration::ZERO;
    let runs = 20;
    for _ in 0..runs {
        let started = Instant::now();
        std::hint::black_box(extract(std::hint::black_box(text), &args));
        let took = started.elapsed();
        best = best.min(took);
        total += took;
    }
    println!(
        "{name}: {:.2} MiB, {images} images; best {:.2} ms, mean {:.2} ms over {runs} runs",
        text.len() as f64 / (1024.0 * 1024.0),
        best.as_secs_f64() * 1e3,
        total.as_secs_f64() * 1e3 / runs as f64
    );
    best
}

fn main() {
    let dir = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/dockerfiles/real"
    );
    let mut corpus = String::new();
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("corpus present")
        .flatten()
        .map(|e| e.path())
        .collect();
    entries.sort();
    for path in entries
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "Dockerfile"))
    {
        corpus.push_str(&String::from_utf8_lossy(
            &std::fs::read(path).expect("readable"),
        ));
        corpus.push('\n');
    }
    let mut real = String::new();
    while real.len() < 1 << 20 {
        real.push_str(&corpus);
    }
    let mut worst = (Duration::ZERO, String::new());
    let mut note = |name: &str, best: Duration| {
        if best > worst.0 {
            worst = (best, name.to_string());
        }
    };
    note(
        "real-world corpus repeated",
        time("real-world corpus repeated", &real),
    );

    let mut many_stages = String::new();
    let mut i = 0;
    while many_stages.len() < 1 << 20 {
        many_stages.push_str(&format!("FROM registry.example.com/group/base-{i}:1 AS stage-{i}\nCOPY --from=stage-{} / /\nRUN make\n", i / 2));
        i += 1;
    }
    note(
        "FROM … AS stage-N",
        time("1 MiB of FROM … AS stage-N", &many_stages),
    );

    let mut continued = String::from("FROM alpine\nRUN true");
    while continued.len() < 1 << 20 {
        continued.push_str(" \\\n  && echo ${V:-x} $HOME <<notheredoc");
    }
    continued.push('\n');
    note("continued RUN", time("one 1 MiB continued RUN", &continued));

    for file in std::env::args().skip(1).filter(|a| !a.starts_with('-')) {
        let bytes = std::fs::read(&file).unwrap_or_else(|e| panic!("{file}: {e}"));
        let text = String::from_utf8_lossy(&bytes);
        note(&file, time(&file, &text));
    }
    for shape in hostile::shapes(1 << 20) {
        let best = time(&format!("hostile: {}", shape.name), &shape.text);
        note(shape.name, best);
    }
    println!(
        "worst case: {} in {:.2} ms (limit 50 ms)",
        worst.1,
        worst.0.as_secs_f64() * 1e3
    );
}
