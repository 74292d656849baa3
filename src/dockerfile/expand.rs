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

/// One item of a shell pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    /// `*`: any run of characters.
    Any,
    /// `?`: one character.
    One,
    Char(char),
}

/// `\*`, `\?` and `\\` are literal; BuildKit drops the `\` before `}`.
fn pattern_tokens(pattern: &str) -> Vec<Token> {
    let mut tokens = Vec::new();
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        tokens.push(match c {
            '*' => Token::Any,
            '?' => Token::One,
            '\\' => match chars.next() {
                Some(escaped) => Token::Char(escaped),
                None => Token::Char('\\'),
            },
            other => Token::Char(other),
        });
    }
    tokens
}

/// `${v#p}` (shortest prefix), `##` (longest prefix), `%` / `%%` (suffix,
/// by reversing both sides as BuildKit does). `None` when the budget ran
/// out.
fn remove_pattern(value: &str, pattern: &str, op: &str, budget: &mut Budget) -> Option<String> {
    let mut text: Vec<char> = value.chars().collect();
    let mut tokens = pattern_tokens(pattern);
    if !budget.charge(text.len() + tokens.len()) {
        return None;
    }
    let suffix = op.starts_with('%');
    if suffix {
        text.reverse();
        tokens.reverse();
    }
    let longest = op.len() == 2;
    let Some(cut) = matched_prefix(&text, &tokens, longest, budget)? else {
        return Some(value.to_string());
    };
    let kept = if suffix {
        text[cut..].iter().rev().collect()
    } else {
        text[cut..].iter().collect()
    };
    Some(kept)
}

/// The length of the shortest (or longest) prefix of `text` that the
/// pattern matches. The pattern is `S0 * S1 * … * Sk`: `S0` must start the
/// text, the middle pieces are placed leftmost one after another (placing
/// them any later never helps), and the prefix ends at the first (or last)
/// place `Sk` fits after them. Outer `None`: out of budget.
fn matched_prefix(
    text: &[char],
    tokens: &[Token],
    longest: bool,
    budget: &mut Budget,
) -> Option<Option<usize>> {
    let pieces: Vec<&[Token]> = tokens.split(|t| *t == Token::Any).collect();
    let first = pieces[0];
    if !fits_at(text, 0, first) {
        return Some(None);
    }
    if pieces.len() == 1 {
        return Some(Some(first.len()));
    }
    let mut pos = first.len();
    for piece in &pieces[1..pieces.len() - 1] {
        match find(text, pos, piece, false, budget)? {
            Some(at) => pos = at + piece.len(),
            None => return Some(None),
        }
    }
    let last = pieces[pieces.len() - 1];
    Some(find(text, pos, last, longest, budget)?.map(|at| at + last.len()))
}

fn fits_at(text: &[char], at: usize, piece: &[Token]) -> bool {
    at + piece.len() <= text.len()
        && piece.iter().zip(&text[at..]).all(|(t, c)| match t {
            Token::Char(p) => p == c,
            _ => true,
        })
}

/// The first (or last) place at or after `from` where `piece` fits. Pieces
/// without `?` use Knuth–Morris–Pratt (linear); pieces with `?` compare
/// naively, every comparison charged to the budget. Outer `None`: out of
/// budget.
fn find(
    text: &[char],
    from: usize,
    piece: &[Token],
    last: bool,
    budget: &mut Budget,
) -> Option<Option<usize>> {
    if piece.is_empty() {
        return Some(Some(if last { text.len() } else { from }));
    }
    if from + piece.len() > text.len() {
        return Some(None);
    }
    let literal: Option<Vec<char>> = piece
        .iter()
        .map(|t| match t {
            Token::Char(c) => Some(*c),
            _ => None,
        })
        .collect();
    if let Some(needle) = literal {
        if !budget.charge(2 * (text.len() - from) + 2 * needle.len()) {
            return None;
        }
        return Some(kmp(&text[from..], &needle, last).map(|at| at + from));
    }
    let mut found = None;
    for at in from..=text.len() - piece.len() {
        if !budget.charge(piece.len()) {
            return None;
        }
        if fits_at(text, at, piece) {
            found = Some(at);
            if !last {
                break;
            }
        }
    }
    Some(found)
}

/// Knuth–Morris–Pratt: the first or last occurrence of `needle` in `hay`.
fn kmp(hay: &[char], needle: &[char], last: bool) -> Option<usize> {
    let mut fail = vec![0usize; needle.len()];
    let mut k = 0;
    for i in 1..needle.len() {
        while k > 0 && needle[i] != needle[k] {
            k = fail[k - 1];
        }
        if needle[i] == needle[k] {
            k += 1;
        }
        fail[i] = k;
    }
    let mut found = None;
    k = 0;
    for (i, c) in hay.iter().enumerate() {
        while k > 0 && *c != needle[k] {
            k = fail[k - 1];
        }
        if *c == needle[k] {
            k += 1;
        }
        if k == needle.len() {
            found = Some(i + 1 - needle.len());
            if !last {
                return found;
            }
            k = fail[k - 1];
        }
    }
    found
}

/// Glob match, iterative: `any` matches any run, `one` (if given) any single
/// item. Each step is charged; `None` when the budget runs out.
fn glob_generic<T: PartialEq + Copy>(
    pattern: &[T],
    text: &[T],
    any: T,
    one: Option<T>,
    budget: &mut Budget,
) -> Option<bool> {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    let mut steps = 0usize;
    while t < text.len() {
        steps += 1;
        if steps.is_multiple_of(1024) && !budget.charge(1024) {
            return None;
        }
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
            break;
        }
    }
    // A call costs more than its steps (a few dozen character copies).
    if !budget.charge(steps % 1024 + 32) {
        return None;
    }
    Some(t == text.len() && pattern[p..].iter().all(|c| *c == any))
}

/// A glob built from expanded text: the unknown parts act as `*`, so it
/// matches the names some values of the variables would give (lower-case).
/// Unset variables are empty. Works on bytes: only whole runs are
/// wildcards, so UTF-8 stays intact.
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
                Segment::Unset(_) => {}
                Segment::Unknown(_) => pattern.push(b'*'),
            }
        }
        Wildcard(pattern)
    }

    /// `None` when the budget ran out before an answer.
    pub fn matches(&self, name: &str, budget: &mut Budget) -> Option<bool> {
        glob_generic(&self.0, name.as_bytes(), b'*', None, budget)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remove(value: &str, pattern: &str, op: &str) -> String {
        remove_pattern(value, pattern, op, &mut Budget::for_input(0)).expect("within budget")
    }

    /// The rules of BuildKit's `trimPrefix`/`trimSuffix` (shell/lex.go):
    /// `#`/`%` the shortest match, `##`/`%%` the longest, `?` one character,
    /// `\*` a literal star.
    #[test]
    fn pattern_removal_follows_buildkit() {
        let cases = [
            ("1.2.3", ".*", "%", "1.2"),
            ("1.2.3", ".*", "%%", "1"),
            ("1.2.3", "*.", "#", "2.3"),
            ("1.2.3", "*.", "##", "3"),
            ("linux/amd64", "linux/", "#", "amd64"),
            ("linux/amd64", "darwin/", "#", "linux/amd64"),
            ("abcabc", "a?c", "#", "abc"),
            ("abcabc", "*a?c", "##", ""),
            ("a*b", "a\\*", "#", "b"),
            ("axb", "a\\*", "#", "axb"),
            ("abc", "", "#", "abc"),
            ("abc", "*", "#", "abc"),
            ("abc", "*", "##", ""),
            ("abc", "*", "%", "abc"),
            ("abc", "*", "%%", ""),
            ("x-y-z", "-*", "%", "x-y"),
            ("x-y-z", "-*", "%%", "x"),
            ("aXbXc", "*X*X", "#", "c"),
            ("aXbXcXd", "X*", "%", "aXbXc"),
            ("héllo", "h?l", "#", "lo"),
        ];
        for (value, pattern, op, want) in cases {
            assert_eq!(
                remove(value, pattern, op),
                want,
                "${{V{op}{pattern}}} of {value:?}"
            );
        }
    }

    #[test]
    fn kmp_finds_first_and_last() {
        let hay: Vec<char> = "abababa".chars().collect();
        let needle: Vec<char> = "aba".chars().collect();
        assert_eq!(kmp(&hay, &needle, false), Some(0));
        assert_eq!(kmp(&hay, &needle, true), Some(4));
        assert_eq!(kmp(&hay, &['c'], true), None);
    }

    #[test]
    fn braces_match_once_for_the_whole_text() {
        let closes = matching_braces(b"${A:-${B}}x${C\\}}");
        assert_eq!(closes[1], 9);
        assert_eq!(closes[6], 8);
        assert_eq!(closes[12], 16);
        assert_eq!(closes[0], NONE);
    }

    #[test]
    fn budget_stops_a_costly_pattern() {
        let value = "x".repeat(10_000);
        let pattern = format!("{}y", "?".repeat(5_000));
        let mut budget = Budget::for_input(0);
        budget.left = 1_000;
        assert_eq!(remove_pattern(&value, &pattern, "#", &mut budget), None);
        assert_eq!(budget.take_hit(), Some(Limit::Work));
    }
}
