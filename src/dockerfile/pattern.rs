//! Shell patterns as BuildKit applies them in `${VAR#pat}`, `##`, `%` and
//! `%%` (`trimPrefix`/`trimSuffix` in `frontend/dockerfile/shell/lex.go`:
//! `*` any run, `?` one character, `\*` a literal star), and the globs that
//! match stage names chosen by unknown variables. Linear for every input:
//! literal pieces are found with Knuth–Morris–Pratt, and whatever compares
//! more is charged to the [`Budget`].

use super::expand::{Budget, Segment};

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
pub(super) fn remove_pattern(
    value: &str,
    pattern: &str,
    op: &str,
    budget: &mut Budget,
) -> Option<String> {
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
    fn budget_stops_a_costly_pattern() {
        let value = "x".repeat(10_000);
        let pattern = format!("{}y", "?".repeat(5_000));
        let mut budget = Budget::limited(1_000);
        assert_eq!(remove_pattern(&value, &pattern, "#", &mut budget), None);
        assert_eq!(budget.take_hit(), Some(super::super::expand::Limit::Work));
    }
}
