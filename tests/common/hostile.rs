//! Hostile Dockerfiles: every shape that has taken, or could take, the
//! extractor down, at any size, with what a correct extractor answers.
//! Shared by the tests, the extraction benchmark and the fuzz seeds.
#![allow(dead_code)]

use gitlab_docker_autodep::dockerfile::Extraction;

/// One hostile input and what the answer must be.
pub struct Shape {
    pub name: &'static str,
    pub text: String,
    /// Checks the extraction; `Err` says what is wrong.
    pub check: fn(&Extraction) -> Result<(), String>,
}

fn repeat_to(unit: &str, size: usize) -> usize {
    (size / unit.len()).max(1)
}

fn images(out: &Extraction) -> Vec<(&str, bool)> {
    out.images
        .iter()
        .map(|i| (i.reference.as_str(), i.unresolved))
        .collect()
}

fn has_diagnostic(out: &Extraction, part: &str) -> Result<(), String> {
    if out.diagnostics.iter().any(|d| d.message.contains(part)) {
        Ok(())
    } else {
        Err(format!(
            "no diagnostic containing {part:?}: {:?}",
            out.diagnostics.iter().take(3).collect::<Vec<_>>()
        ))
    }
}

fn expect(out: &Extraction, want: &[(&str, bool)]) -> Result<(), String> {
    let got = images(out);
    if got == want {
        Ok(())
    } else {
        Err(format!(
            "got {:?}…, want {want:?}",
            got.iter()
                .take(3)
                .map(|(r, u)| (r.chars().take(40).collect::<String>(), *u))
                .collect::<Vec<_>>()
        ))
    }
}

/// Every shape, each about `size` bytes (at least 4 KiB, so that every
/// limit is reached).
pub fn shapes(size: usize) -> Vec<Shape> {
    let size = size.max(4096);
    let depth = repeat_to("${A:-}", size);
    let long = size.saturating_sub(64).max(1);
    vec![
        Shape {
            name: "defaults nested past the cap",
            text: format!(
                "ARG A\nFROM {}alpine{}\n",
                "${A:-".repeat(depth),
                "}".repeat(depth)
            ),
            check: |out| {
                let [image] = out.images.as_slice() else {
                    return Err(format!("{} images", out.images.len()));
                };
                if !image.unresolved {
                    return Err("not unresolved".into());
                }
                has_diagnostic(out, "nested deeper than")
            },
        },
        Shape {
            name: "defaults nested within the cap",
            text: format!(
                "ARG A\nFROM {}alpine{}:3\n{}",
                "${A:-".repeat(12),
                "}".repeat(12),
                "# padding\n".repeat(repeat_to("# padding\n", size))
            ),
            check: |out| expect(out, &[("alpine:3", false)]),
        },
        Shape {
            name: "longest prefix removal on a long value",
            text: format!("ARG V={}\nFROM alpine${{V##*y}}\n", "x".repeat(long)),
            check: |out| match images(out).as_slice() {
                [(r, false)] if r.starts_with("alpinex") && r.ends_with('x') => Ok(()),
                other => Err(format!("{} images", other.len())),
            },
        },
        Shape {
            name: "shortest suffix removal with many stars",
            text: format!(
                "ARG V={}\nFROM alpine${{V%{}y}}\n",
                "x".repeat(long / 2),
                "*x".repeat(long / 4)
            ),
            check: |out| match images(out).as_slice() {
                [(r, false)] if r.starts_with("alpinex") => Ok(()),
                other => Err(format!("{other:?}")),
            },
        },
        Shape {
            name: "single-character wildcards against a long value",
            text: format!(
                "ARG V={}\nFROM alpine:${{V#*{}y}}\n",
                "x".repeat(long / 2),
                "?".repeat(long / 4)
            ),
            check: |out| match images(out).as_slice() {
                [(r, false)] if r.starts_with("alpine") => Ok(()),
                other => Err(format!("{} images", other.len())),
            },
        },
        Shape {
            name: "unclosed braces",
            text: format!("FROM {}\n", "${".repeat(repeat_to("${", size))),
            check: |out| match images(out).as_slice() {
                [(_, true)] => Ok(()),
                other => Err(format!("{} images", other.len())),
            },
        },
        Shape {
            name: "one line of a whole file",
            text: format!("FROM a{}\n", "b".repeat(long)),
            check: |out| match images(out).as_slice() {
                [(r, false)] if r.starts_with("ab") && r.ends_with('b') => Ok(()),
                other => Err(format!("{} images", other.len())),
            },
        },
        Shape {
            name: "one RUN line of a whole file",
            text: format!("FROM alpine\nRUN {}\n", "x ".repeat(long / 2)),
            check: |out| expect(out, &[("alpine", false)]),
        },
        Shape {
            name: "FROM on every line",
            text: "FROM alpine\n".repeat(repeat_to("FROM alpine\n", size)),
            check: |out| {
                let want = out.images.len();
                if want >= 1
                    && out
                        .images
                        .iter()
                        .all(|i| i.reference == "alpine" && !i.unresolved)
                {
                    Ok(())
                } else {
                    Err(format!("{want} images"))
                }
            },
        },
        Shape {
            name: "a chain of stages",
            text: chain_of_stages(size),
            check: |out| expect(out, &[("alpine", false)]),
        },
        Shape {
            name: "stages chosen by platform variables that match none",
            text: {
                let n = repeat_to("FROM q${TARGETARCH}z AS s000000\n", size);
                (0..n)
                    .map(|i| format!("FROM q${{TARGETARCH}}z AS s{i:06}\n"))
                    .collect()
            },
            check: |out| {
                if !out.images.is_empty() && out.images.iter().all(|i| i.unresolved) {
                    Ok(())
                } else {
                    Err(format!("{} images", out.images.len()))
                }
            },
        },
        Shape {
            name: "COPY --from every stage, forward",
            text: {
                let n = repeat_to("FROM a AS s000000\nCOPY --from=s000000 / /\n", size);
                (0..n)
                    .map(|i| format!("FROM alpine AS s{i:06}\nCOPY --from=s{:06} / /\n", i + 1))
                    .collect()
            },
            check: |out| {
                // Only the last COPY names a stage that does not exist.
                let copies = out
                    .images
                    .iter()
                    .filter(|i| i.reference != "alpine")
                    .count();
                if copies == 1 {
                    Ok(())
                } else {
                    Err(format!("{copies} copies taken as images"))
                }
            },
        },
        Shape {
            name: "a continuation of a whole file",
            text: format!(
                "FROM \\\n{}alpine\n",
                " \\\n".repeat(repeat_to(" \\\n", size))
            ),
            check: |out| match images(out).as_slice() {
                [("alpine", false)] if out.images[0].line == 1 => Ok(()),
                other => Err(format!("{other:?}")),
            },
        },
        Shape {
            name: "ARGs that double at every step",
            text: {
                let mut text = String::from("ARG A0=xxxxxxxxxxxxxxxx\n");
                for i in 1..48 {
                    text.push_str(&format!("ARG A{i}=${{A{p}}}${{A{p}}}\n", p = i - 1));
                }
                text.push_str("FROM alpine${A47}\n");
                text.push_str(&"# padding\n".repeat(repeat_to("# padding\n", size)));
                text
            },
            check: |out| match images(out).as_slice() {
                [(_, true)] => has_diagnostic(out, "more work"),
                other => Err(format!("{} images", other.len())),
            },
        },
        Shape {
            name: "unknown instructions on every line",
            text: "FROBNICATE x\n".repeat(repeat_to("FROBNICATE x\n", size)),
            check: |out| {
                if out.diagnostics.len() <= 101 {
                    has_diagnostic(out, "more diagnostics not shown")
                } else {
                    Err(format!("{} diagnostics", out.diagnostics.len()))
                }
            },
        },
        Shape {
            name: "heredoc markers that never close",
            text: format!(
                "FROM alpine\nRUN {}\n",
                "<<A ".repeat(repeat_to("<<A ", size))
            ),
            check: |out| expect(out, &[("alpine", false)]),
        },
        Shape {
            name: "BOM, CRLF and NUL bytes",
            text: format!(
                "\u{feff}FROM alpine\r\nFROM b\0c\r\n{}",
                "\0\r\n".repeat(repeat_to("\0\r\n", size))
            ),
            check: |out| expect(out, &[("alpine", false), ("b\0c", false)]),
        },
        Shape {
            name: "invalid UTF-8 read as replacement characters",
            text: String::from_utf8_lossy(
                &[
                    b"FROM alpine\n".as_slice(),
                    &vec![0xff; size],
                    b"\nFROM b\n",
                ]
                .concat(),
            )
            .into_owned(),
            check: |out| match images(out).first() {
                Some(("alpine", false)) => Ok(()),
                other => Err(format!("{other:?}")),
            },
        },
    ]
}

fn chain_of_stages(size: usize) -> String {
    let n = repeat_to("FROM s000000 AS s000000\n", size);
    let mut text = String::from("FROM alpine AS s000000\n");
    for i in 1..n {
        text.push_str(&format!("FROM s{:06} AS s{i:06}\n", i - 1));
    }
    text
}
