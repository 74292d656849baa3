//! Reading a Dockerfile: which external images does a build depend on?
//!
//! A tolerant extractor, not a full parser. It understands exactly what decides
//! the base images — parser directives, line continuations, BuildKit heredocs,
//! global `ARG`s, `FROM`, `COPY --from` and `RUN --mount=…,from=` — and skips
//! everything else with a diagnostic. It never fails a whole file and never
//! panics, whatever the bytes. Pure: no I/O, no async.

mod expand;
mod lines;
mod pattern;

use std::collections::{HashMap, HashSet};

use expand::{expand, Budget, Limit, Segment, Value};
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
    /// At most [`MAX_DIAGNOSTICS`], then one line that counts the rest.
    pub diagnostics: Vec<Diagnostic>,
    #[serde(skip)]
    dropped_diagnostics: usize,
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

/// At most this many diagnostics are kept per file; the rest are counted.
pub const MAX_DIAGNOSTICS: usize = 100;

/// Extracts the external images a Dockerfile's build depends on, in order.
///
/// Linear in the size of `text` for every shape of input: see
/// [`expand::Budget`].
pub fn extract(text: &str, build_args: &BuildArgs) -> Extraction {
    let mut out = Extraction::default();
    let mut budget = Budget::for_input(text.len());
    let parsed = logical_instructions(text);
    for d in parsed.diagnostics {
        out.diagnose(d.line, || d.message);
    }
    let mut globals: HashMap<String, Value> = AUTOMATIC_PLATFORM_ARGS
        .iter()
        .map(|name| (name.to_string(), Value::Unknown))
        .collect();
    // BuildKit registers every stage before it converts any instruction:
    // `COPY --from` and `RUN --mount from=` see all of them, `FROM` only the
    // earlier ones (dockerfile2llb's dispatchStates).
    let aliases: Vec<Option<String>> = parsed
        .instructions
        .iter()
        .map(|i| (i.keyword == "FROM").then(|| from_alias(i)).flatten())
        .collect();
    let all_stages = Stages::of(&parsed.instructions, &aliases);
    let mut earlier = Stages::default();

    for (instr, alias) in parsed.instructions.iter().zip(&aliases) {
        match instr.keyword {
            "ARG" if earlier.count == 0 => {
                declare_global_args(instr, &mut globals, build_args, &mut budget)
            }
            "FROM" => {
                let mut ctx = Context {
                    globals: &globals,
                    stages: &earlier,
                    by_index: false,
                    budget: &mut budget,
                    out: &mut out,
                };
                ctx.base_image(instr);
                earlier.add(alias.clone());
            }
            "COPY" | "RUN" => {
                let mut ctx = Context {
                    globals: &globals,
                    stages: &all_stages,
                    by_index: true,
                    budget: &mut budget,
                    out: &mut out,
                };
                ctx.source_flags(instr);
            }
            "" => out.diagnose(instr.line, || {
                format!("unknown instruction {:?} skipped", shorten(instr.word))
            }),
            _ => {}
        }
        if let Some(limit) = budget.take_hit() {
            out.diagnose(instr.line, || limit_message(limit));
        }
    }
    out.finish();
    out
}

fn limit_message(limit: Limit) -> String {
    match limit {
        Limit::Depth => format!(
            "variables nested deeper than {} levels are not followed; the reference is unresolved",
            expand::MAX_DEPTH
        ),
        Limit::Work => "the file needs more work to expand than its size allows; \
                        what is left is unresolved"
            .to_string(),
    }
}

/// At most 60 characters of a word, for messages.
fn shorten(word: &str) -> String {
    match word.char_indices().nth(60) {
        Some((at, _)) => format!("{}…", &word[..at]),
        None => word.to_string(),
    }
}

impl Extraction {
    /// Keeps a diagnostic (the message is only made when it is kept).
    fn diagnose(&mut self, line: usize, message: impl FnOnce() -> String) {
        if self.diagnostics.len() < MAX_DIAGNOSTICS {
            self.diagnostics.push(Diagnostic {
                line,
                message: message(),
            });
        } else {
            self.dropped_diagnostics += 1;
        }
    }

    fn finish(&mut self) {
        if self.dropped_diagnostics > 0 {
            let line = self.diagnostics.last().map_or(1, |d| d.line);
            self.diagnostics.push(Diagnostic {
                line,
                message: format!("{} more diagnostics not shown", self.dropped_diagnostics),
            });
        }
    }
}

/// `ARG a=1 b c="x y"` before the first `FROM`.
fn declare_global_args(
    instr: &Instruction,
    globals: &mut HashMap<String, Value>,
    build_args: &BuildArgs,
    budget: &mut Budget,
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
            Some(raw) => Value::from_segments(&expand(&raw, globals, budget)),
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

/// The words of a `FROM`: flags, the image, and `AS name` when present.
fn from_words(instr: &Instruction) -> Vec<String> {
    ShellWords::new(&instr.args)
        .take(8)
        .skip_while(|w| w.starts_with("--"))
        .collect()
}

/// The stage name a `FROM` defines, lower-cased.
fn from_alias(instr: &Instruction) -> Option<String> {
    match from_words(instr).as_slice() {
        [_, kw, name, ..] if kw.eq_ignore_ascii_case("as") => Some(name.to_lowercase()),
        _ => None,
    }
}

/// Stage aliases, lower-cased: in order (for wildcard matching) and as a
/// set (for exact lookups, which are most of them); `count` numbers every
/// stage, named or not.
#[derive(Default)]
struct Stages {
    names: Vec<String>,
    set: HashSet<String>,
    count: usize,
}

impl Stages {
    fn of(instructions: &[Instruction], aliases: &[Option<String>]) -> Stages {
        let mut all = Stages::default();
        for (_, alias) in instructions
            .iter()
            .zip(aliases)
            .filter(|(i, _)| i.keyword == "FROM")
        {
            all.add(alias.clone());
        }
        all
    }

    fn add(&mut self, alias: Option<String>) {
        self.count += 1;
        if let Some(alias) = alias {
            if self.set.insert(alias.clone()) {
                self.names.push(alias);
            }
        }
    }
}

/// What deciding one reference needs.
struct Context<'a> {
    globals: &'a HashMap<String, Value>,
    /// The stages this instruction can name.
    stages: &'a Stages,
    /// `--from=1` names a stage by index; `FROM 1` does not.
    by_index: bool,
    budget: &'a mut Budget,
    out: &'a mut Extraction,
}

impl Context<'_> {
    fn base_image(&mut self, instr: &Instruction) {
        let words = from_words(instr);
        let Some(image) = words.first() else {
            self.out
                .diagnose(instr.line, || "FROM without an image skipped".into());
            return;
        };
        let well_formed = match &words[1..] {
            [] => true,
            [kw, _] => kw.eq_ignore_ascii_case("as"),
            _ => false,
        };
        if !well_formed {
            self.out.diagnose(instr.line, || {
                "FROM has words after the image that are not `AS name`; they are ignored".into()
            });
        }
        let segments = expand(image, self.globals, self.budget);
        let resolved = expand::render(&segments);
        let certain = !segments.iter().any(|s| !matches!(s, Segment::Literal(_)));
        if self.refers_to_stage(&segments) || (certain && resolved.eq_ignore_ascii_case("scratch"))
        {
            return;
        }
        self.push_image(&segments, Via::From, instr.line);
    }

    /// `COPY --from=…` and `RUN --mount=…,from=…`.
    fn source_flags(&mut self, instr: &Instruction) {
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
                self.stage_or_image(&source, instr.line, via);
            }
        }
    }

    /// `--from=` values name a stage (by alias or index) or an image.
    fn stage_or_image(&mut self, value: &str, line: usize, via: Via) {
        let segments = expand(value, self.globals, self.budget);
        if self.refers_to_stage(&segments) {
            return;
        }
        self.push_image(&segments, via, line);
    }

    fn push_image(&mut self, segments: &[Segment], via: Via, line: usize) {
        let written = expand::render_written(segments);
        if written.is_empty() {
            self.out.diagnose(line, || {
                format!("{} with an empty value skipped", via.as_str())
            });
            return;
        }
        let (reference, unresolved) = match certain_reference(segments) {
            Some(reference) if !reference.is_empty() => (reference, false),
            Some(_) => {
                self.out.diagnose(line, || {
                    format!("{} with an empty value skipped", via.as_str())
                });
                return;
            }
            None => (written, true),
        };
        if unresolved {
            self.out.diagnose(line, || {
                format!(
                    "{:?}: the image name depends on a variable without a value",
                    shorten(&reference)
                )
            });
        }
        self.out.images.push(BaseImage {
            reference,
            via,
            line,
            unresolved,
        });
    }

    /// True when the expanded value names a stage: by alias
    /// (case-insensitive), by index (for `--from`), or — when unknown
    /// variables remain — when some value of those variables would give a
    /// stage's alias. Unset variables are empty, as in BuildKit.
    fn refers_to_stage(&mut self, segments: &[Segment]) -> bool {
        let has_unknown = segments.iter().any(|s| matches!(s, Segment::Unknown(_)));
        let text = expand::render(segments).to_lowercase();
        if !has_unknown {
            if self.by_index {
                if let Ok(index) = text.parse::<usize>() {
                    return index < self.stages.count;
                }
            }
            return self.stages.set.contains(&text);
        }
        // A value that is nothing but variables says nothing about which
        // stage it could be: it is an unresolved image, not a stage reference.
        let has_literal = segments
            .iter()
            .any(|s| matches!(s, Segment::Literal(t) if !t.is_empty()));
        if !has_literal {
            return false;
        }
        let pattern = pattern::Wildcard::new(segments);
        for stage in &self.stages.names {
            match pattern.matches(stage, self.budget) {
                Some(true) => return true,
                Some(false) => {}
                None => return false,
            }
        }
        false
    }
}

/// The reference an image certainly has, or `None` when its name (registry
/// and repository) depends on a variable without a known value. A tag or
/// digest that depends on one is dropped: tags are not used for matching,
/// and BuildKit builds the name whatever the tag.
fn certain_reference(segments: &[Segment]) -> Option<String> {
    // The resolved text, with the places where a variable had no value.
    let mut text = String::new();
    let mut marks = Vec::new();
    for segment in segments {
        match segment {
            Segment::Literal(t) => text.push_str(t),
            Segment::Unset(_) => marks.push(text.len()),
            Segment::Unknown(_) => {
                marks.push(text.len());
                text.push('\u{1}');
            }
        }
    }
    let at = text.find('@').unwrap_or(text.len());
    let last_slash = text[..at].rfind('/').map_or(0, |i| i + 1);
    let name_end = text[last_slash..at]
        .find(':')
        .map_or(at, |i| last_slash + i);
    // A mark at the end of the name could still extend it.
    if marks.iter().any(|m| *m <= name_end) {
        return None;
    }
    let mut reference = text[..name_end].to_string();
    let tag = &text[name_end..at];
    if tag.len() > 1 && !marks.iter().any(|m| *m > name_end && *m <= at) {
        reference.push_str(tag);
    }
    let digest = &text[at..];
    if digest.len() > 1 && !marks.iter().any(|m| *m > at) {
        reference.push_str(digest);
    }
    Some(reference)
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
