//! Shell-style variable substitution as BuildKit applies it to `FROM` and
//! `ARG` values: `$VAR`, `${VAR}`, `${VAR:-word}`, `${VAR-word}`,
//! `${VAR:+word}`, `${VAR+word}`, `${VAR#pat}`, `${VAR##pat}`, `${VAR%pat}`,
//! `${VAR%%pat}`. A variable without a value stays in the text as written.

use std::collections::HashMap;

/// What a variable holds when a `FROM` line is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// A value known from the file or from the caller's build arguments.
    Known(String),
    /// Declared (or referenced) without a value: `${X:-d}` gives `d`.
    Unset,
    /// Has a value at build time that the file alone cannot tell
    /// (BuildKit's platform variables, or anything computed from them).
    Unknown,
}

impl Value {
    pub fn from_segments(segments: &[Segment]) -> Value {
        if segments.iter().all(|s| matches!(s, Segment::Literal(_))) {
            Value::Known(render(segments))
        } else {
            Value::Unknown
        }
    }
}

/// A piece of expanded text: known characters, or a variable expression
/// that could not be resolved, kept as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Literal(String),
    Unknown(String),
}

/// The expanded text, unresolved expressions as written.
pub fn render(segments: &[Segment]) -> String {
    segments
        .iter()
        .map(|s| match s {
            Segment::Literal(t) | Segment::Unknown(t) => t.as_str(),
        })
        .collect()
}

/// Expands variables in `text`. Quotes are removed; `\$` is a literal `$`.
pub fn expand(text: &str, vars: &HashMap<String, Value>) -> Vec<Segment> {
    // Most references have nothing to expand.
    if !text.contains(['$', '"', '\'', '\\']) {
        return vec![Segment::Literal(text.to_string())];
    }
    let chars: Vec<char> = text.chars().collect();
    let mut out = SegmentBuilder::default();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '\\' if i + 1 < chars.len() => {
                out.literal(chars[i + 1]);
                i += 2;
            }
            '"' | '\'' => i += 1,
            '$' => {
                let (consumed, segment) = expand_dollar(&chars[i..], vars);
                if consumed == 0 {
                    out.literal('$');
                    i += 1;
                } else {
                    out.segment(segment);
                    i += consumed;
                }
            }
            _ => {
                out.literal(c);
                i += 1;
            }
        }
    }
    out.finish()
}

#[derive(Default)]
struct SegmentBuilder {
    segments: Vec<Segment>,
    literal: String,
}

impl SegmentBuilder {
    fn literal(&mut self, c: char) {
        self.literal.push(c);
    }

    fn segment(&mut self, segment: Segment) {
        match segment {
            Segment::Literal(text) => self.literal.push_str(&text),
            unknown => {
                self.flush();
                self.segments.push(unknown);
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

fn is_name_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Expands the `$…` expression at the start of `chars`; returns how many
/// characters it used (0 when `$` is not followed by a variable).
fn expand_dollar(chars: &[char], vars: &HashMap<String, Value>) -> (usize, Segment) {
    let literal = |s: String| Segment::Literal(s);
    if chars.len() > 1 && is_name_start(chars[1]) {
        let end = 1 + chars[1..].iter().take_while(|c| is_name_char(**c)).count();
        let name: String = chars[1..end].iter().collect();
        let written: String = chars[..end].iter().collect();
        return match vars.get(&name) {
            Some(Value::Known(v)) => (end, literal(v.clone())),
            _ => (end, Segment::Unknown(written)),
        };
    }
    if chars.len() < 2 || chars[1] != '{' {
        return (0, literal(String::new()));
    }
    // Find the matching close brace, allowing nested `${…}` in the word.
    let mut depth = 0usize;
    let mut close = None;
    for (k, c) in chars.iter().enumerate().skip(1) {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    close = Some(k);
                    break;
                }
            }
            _ => {}
        }
    }
    let Some(close) = close else {
        return (0, literal(String::new()));
    };
    let written: String = chars[..=close].iter().collect();
    let inner = &chars[2..close];
    let name_len = inner.iter().take_while(|c| is_name_char(**c)).count();
    if name_len == 0 || !is_name_start(inner[0]) {
        return (close + 1, Segment::Unknown(written));
    }
    let name: String = inner[..name_len].iter().collect();
    let value = vars.get(&name).cloned().unwrap_or(Value::Unset);
    let rest: String = inner[name_len..].iter().collect();
    let unknown = || Segment::Unknown(written.clone());
    if rest.is_empty() {
        return match value {
            Value::Known(v) => (close + 1, literal(v)),
            _ => (close + 1, unknown()),
        };
    }
    let (op, word) = split_operator(&rest);
    let word_value = || Value::from_segments(&expand(word, vars));
    let resolved = match (op, value) {
        (_, Value::Unknown) => None,
        (":-", Value::Known(v)) if !v.is_empty() => Some(v),
        (":-", _) => known(word_value()),
        ("-", Value::Known(v)) => Some(v),
        ("-", Value::Unset) => known(word_value()),
        (":+", Value::Known(v)) if !v.is_empty() => known(word_value()),
        (":+", _) => Some(String::new()),
        ("+", Value::Known(_)) => known(word_value()),
        ("+", Value::Unset) => Some(String::new()),
        ("#" | "##" | "%" | "%%", Value::Known(v)) => {
            known(word_value()).map(|pattern| remove_pattern(&v, &pattern, op))
        }
        ("#" | "##" | "%" | "%%", Value::Unset) => Some(String::new()),
        _ => None,
    };
    match resolved {
        Some(v) => (close + 1, literal(v)),
        None => (close + 1, unknown()),
    }
}

fn known(value: Value) -> Option<String> {
    match value {
        Value::Known(v) => Some(v),
        _ => None,
    }
}

fn split_operator(rest: &str) -> (&str, &str) {
    for op in [":-", ":+", ":?", "##", "%%", "-", "+", "#", "%", "?"] {
        if let Some(word) = rest.strip_prefix(op) {
            return (op, word);
        }
    }
    ("", rest)
}

/// `${v#p}` (shortest prefix), `##` (longest prefix), `%` / `%%` (suffix).
fn remove_pattern(value: &str, pattern: &str, op: &str) -> String {
    let chars: Vec<char> = value.chars().collect();
    let pat: Vec<char> = pattern.chars().collect();
    let n = chars.len();
    let cut = match op {
        "#" => (0..=n).find(|&i| glob(&pat, &chars[..i])).map(|i| (i, n)),
        "##" => (0..=n)
            .rev()
            .find(|&i| glob(&pat, &chars[..i]))
            .map(|i| (i, n)),
        "%" => (0..=n)
            .rev()
            .find(|&i| glob(&pat, &chars[i..]))
            .map(|i| (0, i)),
        _ => (0..=n).find(|&i| glob(&pat, &chars[i..])).map(|i| (0, i)),
    };
    match cut {
        Some((from, to)) => chars[from..to].iter().collect(),
        None => value.to_string(),
    }
}

/// Glob match with `*` and `?` over characters.
fn glob(pattern: &[char], text: &[char]) -> bool {
    glob_generic(pattern, text, '*', Some('?'))
}

/// Glob match, iterative (linear backtracking): `any` matches any run,
/// `one` (if given) any single item.
fn glob_generic<T: PartialEq + Copy>(pattern: &[T], text: &[T], any: T, one: Option<T>) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len()
            && pattern[p] != any
            && (Some(pattern[p]) == one || pattern[p] == text[t])
        {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == any {
            star = Some((p, t));
            p += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|c| *c == any)
}

/// A glob built from expanded text: the unknown parts act as `*`, so it
/// matches the names some values of the variables would give (lower-case).
/// Works on bytes: only whole runs are wildcards, so UTF-8 stays intact.
pub struct Wildcard(Vec<u8>);

impl Wildcard {
    pub fn new(segments: &[Segment]) -> Wildcard {
        let mut pattern = Vec::new();
        for segment in segments {
            match segment {
                // A literal `*` cannot occur in a stage name; map it to a
                // byte that never matches.
                Segment::Literal(t) => {
                    pattern.extend(
                        t.to_lowercase()
                            .bytes()
                            .map(|b| if b == b'*' { 0 } else { b }),
                    )
                }
                Segment::Unknown(_) => pattern.push(b'*'),
            }
        }
        Wildcard(pattern)
    }

    pub fn matches(&self, name: &str) -> bool {
        glob_generic(&self.0, name.as_bytes(), b'*', None)
    }
}
