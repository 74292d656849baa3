//! Structure-aware fuzzing: the input is a recipe of building blocks (deep
//! `${…}` nesting, long values, pattern removals, many stages, forward
//! `COPY --from`, long continuations, heredocs, raw bytes), each repeated
//! up to thousands of times, so a short input becomes a Dockerfile of up to
//! 1 MiB in the shapes that once were quadratic or recursive. Run with
//! `-timeout=2` so that a slow input counts as a crash.
#![no_main]

use gitlab_docker_autodep::dockerfile::{extract, BuildArgs};
use libfuzzer_sys::fuzz_target;

const MAX: usize = 1 << 20;

fn block(op: u8, n: usize, k: usize, raw: &[u8], out: &mut String) {
    match op % 10 {
        0 => {
            out.push_str("FROM ");
            out.push_str(&"${A:-".repeat(n));
            out.push_str("alpine");
            out.push_str(&"}".repeat(n));
            out.push('\n');
        }
        1 => out.push_str(&format!("ARG V{k}={}\n", "x".repeat(n * 16))),
        2 => out.push_str(&format!(
            "FROM alpine${{V{k}{}{}y}}\n",
            ["#", "##", "%", "%%"][n % 4],
            "*?x".repeat(n % 512)
        )),
        3 => {
            for i in 0..n {
                out.push_str(&format!("FROM s{} AS s{}\n", k + i, k + i + 1));
            }
        }
        4 => {
            out.push_str("FROM \\\n");
            out.push_str(&" \\\n".repeat(n));
            out.push_str("alpine\n");
        }
        5 => out.push_str(&format!("COPY --from=s{} / /\nRUN --mount=from=s{},target=/x true\n", k + n, k + 2 * n)),
        6 => {
            for i in 0..n {
                out.push_str(&format!("FROM q${{TARGETARCH}}z AS t{}\n", k + i));
            }
        }
        7 => out.push_str(&format!("RUN {}\n", "<<A ".repeat(n))),
        8 => out.push_str(&String::from_utf8_lossy(raw)),
        _ => out.push_str(&format!("ARG A{}=${{A{k}}}${{A{k}}}\nFROM a${{A{}}}\n", k + 1, k + 1)),
    }
}

fn recipe(data: &[u8]) -> String {
    let mut out = String::new();
    for (k, chunk) in data.chunks(4).enumerate() {
        let [op, hi, lo, ..] = *chunk else {
            break;
        };
        let n = u16::from_be_bytes([hi, lo]) as usize;
        let raw = &data[(k * 4).min(data.len())..((k * 4) + n % 64).min(data.len())];
        block(op, n, k, raw, &mut out);
        if out.len() > MAX {
            out.truncate(out.floor_char_boundary(MAX));
            break;
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let text = recipe(data);
    let out = extract(&text, &BuildArgs::new());
    let lines = text.split('\n').count();
    for image in out.images {
        assert!(image.line >= 1 && image.line <= lines);
    }
    assert!(out.diagnostics.len() <= 101);
});
