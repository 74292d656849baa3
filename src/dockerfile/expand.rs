//! Shell-style variable substitution as BuildKit applies it to `FROM` and
//! `ARG` values: `$VAR`, `${VAR}`, `${VAR:-word}`, `${VAR-word}`,
//! `${VAR:+word}`, `${VAR+word}`, `${VAR:?word}`, `${VAR#pat}`,
//! `${VAR##pat}`, `${VAR%pat}`, `${VAR%%pat}`.
//!
//! As in BuildKit's shell lexer (`frontend/dockerfile/shell/lex.go`), a
//! variable without a value expands to the empty string; the expansion keeps
//! a marker where that happened ([`Segment::Unset`]) so that callers can tell
//! an image name that depends on it from one whose tag alone does.
//!
//! Cost is bounded for every input: `${…}` pairs are matched once for the
//! whole text, nesting deeper than [`MAX_DEPTH`] is not followed, pattern
//! removal is a linear substring search, and every copy or comparison is
//! charged to a [`Budget`] proportional to the size of the Dockerfile. What
//! a limit stops becomes [`Segment::Unknown`], and the budget says which
//! limit it was, so the caller reports it.

use std::collections::HashMap;

use super::pattern::remove_pattern;

/// How deeply `${A:-${B:-…}}` words are followed. Real Dockerfiles nest two
/// or three levels; past this the expression is unknown.
pub const MAX_DEPTH: usize = 16;

/// What a variable holds when a `FROM` line is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// A value known from the file or from the caller's build arguments.
    Known(String),
    /// Declared (or referenced) without a value: expands to the empty
    /// string, and `${X:-d}` gives `d`.
    Unset,
    /// Has a value at build time that the file alone cannot tell
    /// (BuildKit's platform variables, or anything computed from them).
    Unknown,
}

impl Value {
    /// The value a global `ARG` gets from its expanded default.
    pub fn from_segments(segments: &[Segment]) -> Value {
        if segments.iter().any(|s| matches!(s, Segment::Unknown(_))) {
            Value::Unknown
        } else {
            Value::Known(render(segments))
        }
    }
}

/// A piece of expanded text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// Known characters.
    Literal(String),
    /// A variable without a value, as written: it expanded to nothing.
    Unset(String),
    /// An expression whose value cannot be told, as written.
    Unknown(String),
}

/// The expanded text: unset variables empty, unknown ones as written.
pub fn render(segments: &[Segment]) -> String {
    segments
        .iter()
        .map(|s| match s {
            Segment::Literal(t) | Segment::Unknown(t) => t.as_str(),
            Segment::Unset(_) => "",
        })
        .collect()
}

/// The text with every variable that has no value as written.
pub fn render_written(segments: &[Segment]) -> String {
    segments
        .iter()
        .map(|s| match s {
            Segment::Literal(t) | Segment::Unknown(t) | Segment::Unset(t) => t.as_str(),
        })
        .collect()
}

/// Which limit stopped an expansion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// `${…}` nested deeper than [`MAX_DEPTH`].
    Depth,
    /// The work allowed for this Dockerfile was used up.
    Work,
}

/// Work allowed for one Dockerfile, in characters copied or compared.
#[derive(Debug)]
pub struct Budget {
    left: u64,
    /// The limits that were hit since the caller last took them.
    hit: Option<Limit>,
}

impl Budget {
    /// Sixteen times the input, plus a floor for small files: linear in the
    /// size of the Dockerfile whatever its shape.
    pub fn for_input(len: usize) -> Budget {
        Budget {
            left: 16 * len as u64 + (1 << 20),
            hit: None,
        }
    }

    /// Takes `n` units; false (and remembered) when they are not there.
    pub fn charge(&mut self, n: usize) -> bool {
        match self.left.checked_sub(n as u64) {
            Some(left) => {
                self.left = left;
                true
            }
            None => {
                self.left = 0;
                self.hit = Some(Limit::Work);
                false
            }
        }
    }

    /// A budget of exactly `units`, for tests of what happens when it ends.
    #[cfg(test)]
    pub(super) fn limited(units: u64) -> Budget {
        Budget {
            left: units,
            hit: None,
        }
    }

    fn note(&mut self, limit: Limit) {
        self.hit.get_or_insert(limit);
    }

    /// The limit hit since the last call, if any.
    pub fn take_hit(&mut self) -> Option<Limit> {
        self.hit.take()
    }
}

/// Expands variables in `text`. Quotes are removed; `\x` is a literal `x`.
pub fn expand(text: &str, vars: &HashMap<String, Value>, budget: &mut Budget) -> Vec<Segment> {
    // Most references have nothing to expand.
    if !text.contains(['$', '"', '\'', '\\']) {
        budget.charge(text.len());
        return vec![Segment::Literal(text.to_string())];
    }
    let mut expander = Expander {
        text,
        closes: matching_braces(text.as_bytes()),
        vars,
        budget,
    };
    expander.range(0, text.len(), 0, false)
}

/// For each `${` (at the index of its `{`), the index of its closing `}`:
/// one pass with a stack, `\` escaping the next byte, so nested words never
/// rescan the text. `NONE` where there is none.
fn matching_braces(bytes: &[u8]) -> Vec<usize> {
    let mut closes = vec![NONE; bytes.len()];
    let mut open: Vec<usize> = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 1,
            b'$' if bytes.get(i + 1) == Some(&b'{') => {
                open.push(i + 1);
                i += 1;
            }
            b'}' => {
                if let Some(at) = open.pop() {
                    closes[at] = i;
                }
            }
            _ => {}
        }
        i += 1;
    }
    closes
}

const NONE: usize = usize::MAX;

struct Expander<'a, 'b> {
    text: &'a str,
    closes: Vec<usize>,
    vars: &'a HashMap<String, Value>,
    budget: &'b mut Budget,
}

const OPERATORS: [&str; 10] = [":-", ":+", ":?", "##", "%%", "-", "+", "?", "#", "%"];

impl Expander<'_, '_> {
    /// Expands `text[start..end]`. With `raw_escapes` a `\x` is kept as
    /// written (pattern words, where it escapes `*` and `?`).
    fn range(&mut self, start: usize, end: usize, depth: usize, raw_escapes: bool) -> Vec<Segment> {
        let bytes = self.text.as_bytes();
        let mut out = SegmentBuilder::default();
        let mut i = start;
        while i < end {
            match bytes[i] {
                b'\\' if i + 1 < end => {
                    let next = self.text[i + 1..].chars().next().map_or(1, char::len_utf8);
                    let from = if raw_escapes { i } else { i + 1 };
                    out.literal(&self.text[from..i + 1 + next]);
                    i += 1 + next;
                }
                b'\\' => {
                    out.literal("\\");
                    i += 1;
                }
                b'"' | b'\'' => i += 1,
                b'$' => {
                    let (used, segments) = self.dollar(i, end, depth);
                    if used == 0 {
                        out.literal("$");
                        i += 1;
                    } else {
                        out.extend(segments);
                        i += used;
                    }
                }
                _ => {
                    let run = bytes[i..end]
                        .iter()
                        .position(|b| matches!(b, b'\\' | b'"' | b'\'' | b'$'))
                        .unwrap_or(end - i);
                    out.literal(&self.text[i..i + run]);
                    i += run;
                }
            }
        }
        self.budget.charge(end - start);
        out.finish()
    }

    /// Expands the `$…` expression at `at`; returns the bytes it used (0 when
    /// `$` is not followed by a variable) and its segments.
    fn dollar(&mut self, at: usize, end: usize, depth: usize) -> (usize, Vec<Segment>) {
        let bytes = self.text.as_bytes();
        if at + 1 < end && is_name_start(bytes[at + 1]) {
            let name_end = at
                + 1
                + bytes[at + 1..end]
                    .iter()
                    .take_while(|b| is_name_char(**b))
                    .count();
            let name = &self.text[at + 1..name_end];
            let written = &self.text[at..name_end];
            return (name_end - at, self.plain(name, written));
        }
        if at + 1 >= end || bytes[at + 1] != b'{' {
            return (0, Vec::new());
        }
        let close = match self.closes[at + 1] {
            c if c < end => c,
            // `${` never closed: BuildKit refuses the line.
            _ => {
                return (
                    end - at,
                    vec![Segment::Unknown(self.text[at..end].to_string())],
                )
            }
        };
        let used = close + 1 - at;
        let written = &self.text[at..=close];
        let unknown = || vec![Segment::Unknown(written.to_string())];
        if depth >= MAX_DEPTH {
            self.budget.note(Limit::Depth);
            return (used, unknown());
        }
        let inner = at + 2;
        let name_len = bytes[inner..close]
            .iter()
            .take_while(|b| is_name_char(**b))
            .count();
        if name_len == 0 || !is_name_start(bytes[inner]) {
            return (used, unknown());
        }
        let name = &self.text[inner..inner + name_len];
        let rest = &self.text[inner + name_len..close];
        if rest.is_empty() {
            return (used, self.plain(name, written));
        }
        let Some(op) = OPERATORS.iter().copied().find(|op| rest.starts_with(op)) else {
            // `${V/pattern/replacement}` and other forms: not followed.
            return (used, unknown());
        };
        let word = (inner + name_len + op.len(), close);
        let value = self.vars.get(name).cloned().unwrap_or(Value::Unset);
        let unset = || vec![Segment::Unset(written.to_string())];
        let segments = match (op, value) {
            (_, Value::Unknown) => unknown(),
            (":-", Value::Known(v)) if !v.is_empty() => self.literal(v),
            ("-", Value::Known(v)) => self.literal(v),
            (":-" | "-", _) => self.range(word.0, word.1, depth + 1, false),
            (":+", Value::Known(v)) if !v.is_empty() => {
                self.range(word.0, word.1, depth + 1, false)
            }
            ("+", Value::Known(_)) => self.range(word.0, word.1, depth + 1, false),
            // The explicit "nothing when unset" form: certain.
            (":+" | "+", _) => Vec::new(),
            (":?", Value::Known(v)) if !v.is_empty() => self.literal(v),
            ("?", Value::Known(v)) => self.literal(v),
            // BuildKit stops the build with the word as its message.
            (":?" | "?", _) => unknown(),
            ("#" | "##" | "%" | "%%", Value::Known(v)) => {
                let pattern = self.range(word.0, word.1, depth + 1, true);
                if pattern.iter().any(|s| matches!(s, Segment::Unknown(_))) {
                    unknown()
                } else {
                    match remove_pattern(&v, &render(&pattern), op, self.budget) {
                        Some(kept) => vec![Segment::Literal(kept)],
                        None => unknown(),
                    }
                }
            }
            (_, Value::Unset) => unset(),
            _ => unknown(),
        };
        (used, segments)
    }

    /// `$NAME` or `${NAME}`.
    fn plain(&mut self, name: &str, written: &str) -> Vec<Segment> {
        match self.vars.get(name) {
            Some(Value::Known(v)) => self.literal(v.clone()),
            Some(Value::Unknown) => vec![Segment::Unknown(written.to_string())],
            Some(Value::Unset) | None => vec![Segment::Unset(written.to_string())],
        }
    }

    /// A variable's value, charged for the copy.
    fn literal(&mut self, value: String) -> Vec<Segment> {
        if self.budget.charge(value.len()) {
            vec![Segment::Literal(value)]
        } else {
            vec![Segment::Unknown("${…}".to_string())]
        }
    }
}

#[derive(Default)]
struct SegmentBuilder {
    segments: Vec<Segment>,
    literal: String,
}

impl SegmentBuilder {
    fn literal(&mut self, text: &str) {
        self.literal.push_str(text);
    }

    fn extend(&mut self, segments: Vec<Segment>) {
        for segment in segments {
            match segment {
                Segment::Literal(text) => self.literal.push_str(&text),
                other => {
                    self.flush();
                    self.segments.push(other);
                }
            }
        }
    }

    fn flush(&mut self) {
        if !self.literal.is_empty() {
            self.segments
                .push(Segment::Literal(std::mem::take(&mut self.literal)));
        }
    }

    fn finish(mut self) -> Vec<Segment> {
        self.flush();
        self.segments
    }
}

fn is_name_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_'
}

fn is_name_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn braces_match_once_for_the_whole_text() {
        let closes = matching_braces(b"${A:-${B}}x${C\\}}");
        assert_eq!(closes[1], 9);
        assert_eq!(closes[6], 8);
        assert_eq!(closes[12], 16);
        assert_eq!(closes[0], NONE);
    }
}
