//! Reading a Dockerfile: which external images does a build depend on?
//!
//! A tolerant extractor, not a full parser. It understands exactly what decides
//! the base images — parser directives, line continuations, BuildKit heredocs,
//! global `ARG`s, `FROM`, `COPY --from` and `RUN --mount=…,from=` — and skips
//! everything else with a diagnostic. It never fails a whole file and never
//! panics, whatever the bytes. Pure: no I/O, no async.

mod expand;
mod lines;

use std::collections::{HashMap, HashSet};

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
    let mut stages = Stages::default();
    let mut stage_count = 0usize;

    for instr in &parsed.instructions {
        match instr.keyword {
            "ARG" if stage_count == 0 => declare_global_args(instr, &mut globals, build_args),
            "FROM" => {
                from_instruction(instr, &globals, &mut stages, &mut out);
                stage_count += 1;
            }
            "COPY" | "RUN" => {
                let (wanted, via) = if instr.keyword == "COPY" {
                    ("from", Via::CopyFrom)
                } else {
                    ("mount", Via::RunMount)
                };
                for (flag, value) in leading_flags(&instr.args) {
                    if flag != wanted {
                        continue;
                    }
                    let source = if via == Via::RunMount {
                        mount_from(&value)
                    } else {
                        Some(value)
                    };
                    if let Some(source) = source {
                        stage_or_image(
                            &source,
                            instr.line,
                            via,
                            &globals,
                            &stages,
                            stage_count,
                            &mut out,
                        );
                    }
                }
            }
            "" => out.diagnostics.push(Diagnostic {
                line: instr.line,
                message: format!("unknown instruction {:?} skipped", instr.word),
            }),
            _ => {}
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
    for word in ShellWords::new(&instr.args) {
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
    stages: &mut Stages,
    out: &mut Extraction,
) {
    let words: Vec<String> = ShellWords::new(&instr.args).take(8).collect();
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
        stages.add(alias);
    }
}

/// Stage aliases defined so far, lower-cased: in order (for wildcard
/// matching) and as a set (for exact lookups, which are most of them).
#[derive(Default)]
struct Stages {
    names: Vec<String>,
    set: HashSet<String>,
}

impl Stages {
    fn add(&mut self, alias: String) {
        if self.set.insert(alias.clone()) {
            self.names.push(alias);
        }
    }
}

/// `--from=` values name a stage (by alias or index) or an image.
fn stage_or_image(
    value: &str,
    line: usize,
    via: Via,
    globals: &HashMap<String, Value>,
    stages: &Stages,
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
fn refers_to_stage(segments: &[Segment], stages: &Stages, stage_count: Option<usize>) -> bool {
    let text = expand::render(segments).to_lowercase();
    if let Some(count) = stage_count {
        if let Ok(index) = text.parse::<usize>() {
            return index < count;
        }
    }
    if segments.iter().all(|s| matches!(s, Segment::Literal(_))) {
        return stages.set.contains(&text);
    }
    // A value that is nothing but variables says nothing about which stage
    // it could be: it is an unresolved image, not a stage reference.
    let has_literal = segments
        .iter()
        .any(|s| matches!(s, Segment::Literal(t) if !t.is_empty()));
    if !has_literal {
        return false;
    }
    let pattern = expand::Wildcard::new(segments);
    stages.names.iter().any(|stage| pattern.matches(stage))
}

/// Leading `--name=value` flags of an instruction, up to the first other word.
fn leading_flags(args: &str) -> Vec<(String, String)> {
    if !args.starts_with("--") {
        return Vec::new();
    }
    ShellWords::new(args)
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

/// Words of an instruction, split on unquoted whitespace with quotes
/// removed, keeping `${…}` expressions whole for later expansion. Lazy, so
/// reading the leading flags of a long `RUN` does not split its script.
/// Unbalanced quotes run to the end of the text.
struct ShellWords<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> ShellWords<'a> {
    fn new(text: &'a str) -> Self {
        ShellWords { text, pos: 0 }
    }
}

impl Iterator for ShellWords<'_> {
    type Item = String;

    fn next(&mut self) -> Option<String> {
        let rest = &self.text[self.pos..];
        let skipped = rest.len() - rest.trim_start().len();
        self.pos += skipped;
        let rest = &self.text[self.pos..];
        if rest.is_empty() {
            return None;
        }
        // Fast path: a plain word, no quotes and no `${…}`, is a slice.
        let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        let word = &rest[..end];
        if !word.contains(['"', '\'', '{']) {
            self.pos += end;
            return Some(word.to_string());
        }
        let mut current = String::new();
        let mut quote: Option<char> = None;
        let mut braces = 0usize;
        let mut used = rest.len();
        for (i, c) in rest.char_indices() {
            match quote {
                Some(q) if c == q => quote = None,
                Some(_) => current.push(c),
                None if (c == '"' || c == '\'') && braces == 0 => quote = Some(c),
                None if c.is_whitespace() && braces == 0 => {
                    used = i;
                    break;
                }
                None => {
                    if c == '{' && current.ends_with('$') {
                        braces += 1;
                    } else if c == '}' && braces > 0 {
                        braces -= 1;
                    }
                    current.push(c);
                }
            }
        }
        self.pos += used;
        Some(current)
    }
}

#[cfg(test)]
mod tests;
