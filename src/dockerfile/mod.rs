//! Reading a Dockerfile: which external images does a build depend on?
//!
//! A tolerant extractor, not a full parser. It understands exactly what decides
//! the base images — parser directives, line continuations, BuildKit heredocs,
//! global `ARG`s, `FROM`, `COPY --from` and `RUN --mount=…,from=` — and skips
//! everything else with a diagnostic. It never fails a whole file and never
//! panics, whatever the bytes. Pure: no I/O, no async.

mod expand;
mod lines;

use std::collections::HashMap;

use expand::{expand, Segment, Value};
use lines::{logical_instructions, Instruction};

/// How an image is pulled into the build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum Via {
    /// `FROM image`
    #[serde(rename = "FROM")]
    From,
    /// `COPY --from=image`
    #[serde(rename = "COPY --from")]
    CopyFrom,
    /// `RUN --mount=…,from=image`
    #[serde(rename = "RUN --mount")]
    RunMount,
}

impl Via {
    pub fn as_str(self) -> &'static str {
        match self {
            Via::From => "FROM",
            Via::CopyFrom => "COPY --from",
            Via::RunMount => "RUN --mount",
        }
    }
}

/// One external image the build depends on.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BaseImage {
    /// The reference as written, after substituting global `ARG` defaults.
    /// Unresolved variables are kept as written (`docker:${VERSION}-dind`).
    pub reference: String,
    pub via: Via,
    /// 1-based line where the instruction starts.
    pub line: usize,
    /// The reference still holds a variable nobody gave a value.
    pub unresolved: bool,
}

/// Something the extractor skipped or could not decide, with its line.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Diagnostic {
    pub line: usize,
    pub message: String,
}

/// Everything learned from one Dockerfile.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Extraction {
    pub images: Vec<BaseImage>,
    pub diagnostics: Vec<Diagnostic>,
}

/// Values for build arguments that the build system passes in, applied to
/// global `ARG`s declared without a default (for example GitLab CI's
/// `CI_REGISTRY`, which jobs commonly pass with `--build-arg`).
#[derive(Debug, Clone, Default)]
pub struct BuildArgs(HashMap<String, String>);

impl BuildArgs {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with(mut self, name: &str, value: &str) -> Self {
        self.0.insert(name.to_string(), value.to_string());
        self
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }
}

/// BuildKit defines these in global scope; their value depends on the
/// platform the build targets, which a Dockerfile alone cannot tell.
const AUTOMATIC_PLATFORM_ARGS: &[&str] = &[
    "TARGETPLATFORM",
    "TARGETOS",
    "TARGETARCH",
    "TARGETVARIANT",
    "BUILDPLATFORM",
    "BUILDOS",
    "BUILDARCH",
    "BUILDVARIANT",
];

/// Extracts the external images a Dockerfile's build depends on, in order.
pub fn extract(text: &str, build_args: &BuildArgs) -> Extraction {
    let mut out = Extraction::default();
    let parsed = logical_instructions(text);
    out.diagnostics.extend(parsed.diagnostics);

    let mut globals: HashMap<String, Value> = AUTOMATIC_PLATFORM_ARGS
        .iter()
        .map(|name| (name.to_string(), Value::Unknown))
        .collect();
    // Stage aliases seen so far, lower-cased; `stage_count` numbers them.
    let mut stages: Vec<String> = Vec::new();
    let mut stage_count = 0usize;

    for instr in &parsed.instructions {
        match instr.keyword.as_str() {
            "ARG" if stage_count == 0 => declare_global_args(instr, &mut globals, build_args),
            "FROM" => {
                from_instruction(instr, &globals, &mut stages, &mut out);
                stage_count += 1;
            }
            "COPY" => {
                for (flag, value) in leading_flags(&instr.args) {
                    if flag == "from" {
                        stage_or_image(
                            &value,
                            instr.line,
                            Via::CopyFrom,
                            &globals,
                            &stages,
                            stage_count,
                            &mut out,
                        );
                    }
                }
            }
            "RUN" => {
                for (flag, value) in leading_flags(&instr.args) {
                    if flag != "mount" {
                        continue;
                    }
                    if let Some(from) = mount_from(&value) {
                        stage_or_image(
                            &from,
                            instr.line,
                            Via::RunMount,
                            &globals,
                            &stages,
                            stage_count,
                            &mut out,
                        );
                    }
                }
            }
            "ARG" | "ADD" | "CMD" | "ENTRYPOINT" | "ENV" | "EXPOSE" | "HEALTHCHECK" | "LABEL"
            | "MAINTAINER" | "ONBUILD" | "SHELL" | "STOPSIGNAL" | "USER" | "VOLUME" | "WORKDIR" => {
            }
            other => out.diagnostics.push(Diagnostic {
                line: instr.line,
                message: format!("unknown instruction {other:?} skipped"),
            }),
        }
    }
    out
}

/// `ARG a=1 b c="x y"` before the first `FROM`.
fn declare_global_args(
    instr: &Instruction,
    globals: &mut HashMap<String, Value>,
    build_args: &BuildArgs,
) {
    for word in shell_words(&instr.args) {
        let (name, default) = match word.split_once('=') {
            Some((name, value)) => (name.to_string(), Some(value.to_string())),
            None => (word.clone(), None),
        };
        if name.is_empty() {
            continue;
        }
        let value = match default {
            Some(raw) => {
                let segments = expand(&raw, globals);
                Value::from_segments(&segments)
            }
            None => match build_args.get(&name) {
                Some(given) => Value::Known(given.to_string()),
                // Re-declaring a known global without a value keeps its value.
                None => match globals.get(&name) {
                    Some(existing) => existing.clone(),
                    None => Value::Unset,
                },
            },
        };
        globals.insert(name, value);
    }
}

fn from_instruction(
    instr: &Instruction,
    globals: &HashMap<String, Value>,
    stages: &mut Vec<String>,
    out: &mut Extraction,
) {
    let words = shell_words(&instr.args);
    let mut rest = words.iter().skip_while(|w| w.starts_with("--"));
    let Some(image) = rest.next() else {
        out.diagnostics.push(Diagnostic {
            line: instr.line,
            message: "FROM without an image skipped".into(),
        });
        return;
    };
    let alias = match (rest.next(), rest.next()) {
        (Some(kw), Some(name)) if kw.eq_ignore_ascii_case("as") => Some(name.to_lowercase()),
        (None, _) => None,
        _ => {
            out.diagnostics.push(Diagnostic {
                line: instr.line,
                message: "FROM has words after the image that are not `AS name`; they are ignored"
                    .into(),
            });
            None
        }
    };
    let segments = expand(image, globals);
    if !refers_to_stage(&segments, stages, None) {
        let text = expand::render(&segments);
        if !text.eq_ignore_ascii_case("scratch") && !text.is_empty() {
            push_image(out, &segments, Via::From, instr.line);
        }
    }
    if let Some(alias) = alias {
        stages.push(alias);
    }
}

/// `--from=` values name a stage (by alias or index) or an image.
fn stage_or_image(
    value: &str,
    line: usize,
    via: Via,
    globals: &HashMap<String, Value>,
    stages: &[String],
    stage_count: usize,
    out: &mut Extraction,
) {
    let segments = expand(value, globals);
    if refers_to_stage(&segments, stages, Some(stage_count)) {
        return;
    }
    if expand::render(&segments).is_empty() {
        out.diagnostics.push(Diagnostic {
            line,
            message: format!("{} with an empty value skipped", via.as_str()),
        });
        return;
    }
    push_image(out, &segments, via, line);
}

fn push_image(out: &mut Extraction, segments: &[Segment], via: Via, line: usize) {
    let unresolved = segments.iter().any(|s| matches!(s, Segment::Unknown(_)));
    let reference = expand::render(segments);
    if unresolved {
        out.diagnostics.push(Diagnostic {
            line,
            message: format!("{reference:?} holds a variable without a value"),
        });
    }
    out.images.push(BaseImage {
        reference,
        via,
        line,
        unresolved,
    });
}

/// True when the expanded value names an earlier stage: by alias
/// (case-insensitive), by index (for `--from`), or — when variables remain —
/// when some value of those variables would give an earlier stage's alias.
fn refers_to_stage(segments: &[Segment], stages: &[String], stage_count: Option<usize>) -> bool {
    let text = expand::render(segments).to_lowercase();
    if let Some(count) = stage_count {
        if let Ok(index) = text.parse::<usize>() {
            return index < count;
        }
    }
    if segments.iter().all(|s| matches!(s, Segment::Literal(_))) {
        return stages.contains(&text);
    }
    // A value that is nothing but variables says nothing about which stage
    // it could be: it is an unresolved image, not a stage reference.
    let has_literal = segments
        .iter()
        .any(|s| matches!(s, Segment::Literal(t) if !t.is_empty()));
    has_literal
        && stages
            .iter()
            .any(|stage| expand::matches_with_wildcards(segments, stage))
}

/// Leading `--name=value` flags of an instruction, up to the first other word.
fn leading_flags(args: &str) -> Vec<(String, String)> {
    shell_words(args)
        .into_iter()
        .take_while(|w| w.starts_with("--"))
        .map(|w| match w[2..].split_once('=') {
            Some((name, value)) => (name.to_ascii_lowercase(), value.to_string()),
            None => (w[2..].to_ascii_lowercase(), String::new()),
        })
        .collect()
}

/// The `from=` field of a `--mount=` value (comma-separated `key=value`).
fn mount_from(value: &str) -> Option<String> {
    value.split(',').find_map(|field| {
        let (key, val) = field.split_once('=')?;
        key.trim()
            .eq_ignore_ascii_case("from")
            .then(|| val.trim().trim_matches('"').to_string())
    })
}

/// Splits on unquoted whitespace and removes quotes, keeping `$` expressions
/// intact for later expansion. Unbalanced quotes run to the end of the text.
fn shell_words(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut braces = 0usize;
    for c in text.chars() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => current.push(c),
            None if (c == '"' || c == '\'') && braces == 0 => {
                quote = Some(c);
                in_word = true;
            }
            None if c.is_whitespace() && braces == 0 => {
                if in_word {
                    words.push(std::mem::take(&mut current));
                    in_word = false;
                }
            }
            None => {
                if c == '{' && current.ends_with('$') {
                    braces += 1;
                } else if c == '}' && braces > 0 {
                    braces -= 1;
                }
                current.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(current);
    }
    words
}

#[cfg(test)]
mod tests;
