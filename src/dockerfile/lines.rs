//! From physical lines to instructions: parser directives, the escape
//! character, line continuations (with comments and blank lines inside them)
//! and BuildKit heredoc bodies, which are skipped.

use std::borrow::Cow;

use super::Diagnostic;

/// One instruction, its continuation lines joined (only for the
/// instructions whose arguments matter; the others are skipped cheaply).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction<'a> {
    /// Upper case; empty for an instruction Docker does not know.
    pub keyword: &'static str,
    /// The instruction word as written.
    pub word: &'a str,
    pub args: Cow<'a, str>,
    /// 1-based line where the instruction starts.
    pub line: usize,
}

#[derive(Debug, Default)]
pub struct Parsed<'a> {
    pub instructions: Vec<Instruction<'a>>,
    pub diagnostics: Vec<Diagnostic>,
}

const KEYWORDS: &[&str] = &[
    "ADD",
    "ARG",
    "CMD",
    "COPY",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "FROM",
    "HEALTHCHECK",
    "LABEL",
    "MAINTAINER",
    "ONBUILD",
    "RUN",
    "SHELL",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
];

/// Instructions whose arguments decide base images or hide heredocs.
fn needs_args(keyword: &str) -> bool {
    matches!(keyword, "FROM" | "ARG" | "COPY" | "RUN" | "ADD")
}

pub fn logical_instructions(text: &str) -> Parsed<'_> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut lines: Vec<&str> = Vec::with_capacity(text.len() / 24 + 1);
    lines.extend(text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l)));
    let escape = escape_directive(&lines);
    let mut parsed = Parsed::default();
    let mut i = 0;
    while i < lines.len() {
        let first = lines[i].trim_start();
        if first.is_empty() || first.starts_with('#') {
            i += 1;
            continue;
        }
        let start = i + 1;
        let word_end = first.find(char::is_whitespace).unwrap_or(first.len());
        let word = first[..word_end].trim_end_matches(escape);
        let keyword = KEYWORDS
            .iter()
            .find(|k| k.eq_ignore_ascii_case(word))
            .copied()
            .unwrap_or("");
        let keep = needs_args(keyword);
        // The instruction text after the keyword, continuation lines joined.
        let mut args: Cow<'_, str> = Cow::Borrowed("");
        let mut first_line = true;
        while i < lines.len() {
            let line = if first_line {
                &first[word.len()..]
            } else {
                lines[i]
            };
            i += 1;
            if !first_line {
                let trimmed = line.trim_start();
                if trimmed.is_empty() || trimmed.starts_with('#') {
                    continue;
                }
            }
            first_line = false;
            let body = line.trim_end_matches([' ', '\t']);
            let (piece, more) = match body.strip_suffix(escape) {
                Some(head) => (head, true),
                None => (line, false),
            };
            if keep {
                if args.is_empty() && !more {
                    args = Cow::Borrowed(piece);
                } else {
                    if args.is_empty() {
                        args = Cow::Owned(String::with_capacity(piece.len() * 8));
                    }
                    let owned = args.to_mut();
                    owned.push_str(piece);
                    owned.push(' ');
                }
            }
            if !more {
                break;
            }
        }
        let args = match args {
            Cow::Borrowed(a) => Cow::Borrowed(a.trim()),
            Cow::Owned(a) => Cow::Owned(a.trim().to_string()),
        };
        if matches!(keyword, "RUN" | "COPY" | "ADD") && has_heredoc_operator(&args) {
            for marker in heredoc_markers(&args) {
                match skip_heredoc(&lines, i, &marker) {
                    Some(next) => i = next,
                    None => {
                        parsed.diagnostics.push(Diagnostic {
                            line: start,
                            message: format!(
                                "heredoc <<{} is never closed; the rest of the file is part of it",
                                marker.delimiter
                            ),
                        });
                        i = lines.len();
                        break;
                    }
                }
            }
        }
        parsed.instructions.push(Instruction {
            keyword,
            word,
            args,
            line: start,
        });
    }
    parsed
}

/// `# escape=`` ` `` among the parser directives at the top of the file.
fn escape_directive(lines: &[&str]) -> char {
    let mut escape = '\\';
    for line in lines {
        let Some(comment) = line.trim_start().strip_prefix('#') else {
            break;
        };
        let Some((key, value)) = comment.split_once('=') else {
            break;
        };
        let key = key.trim();
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric()) {
            break;
        }
        if key.eq_ignore_ascii_case("escape") {
            match value.trim() {
                "`" => escape = '`',
                "\\" => escape = '\\',
                _ => {}
            }
        }
    }
    escape
}

struct HeredocMarker {
    delimiter: String,
    strip_tabs: bool,
}

/// A quick check before splitting words: is there a `<<` at all?
fn has_heredoc_operator(args: &str) -> bool {
    args.match_indices('<')
        .any(|(i, _)| args.as_bytes().get(i + 1) == Some(&b'<'))
}

/// `<<EOF`, `<<-EOF`, `<<'EOF'`, `<<"EOF"`, possibly several on one line,
/// preceded by an optional file descriptor number (`3<<EOF`).
fn heredoc_markers(args: &str) -> Vec<HeredocMarker> {
    if args.trim_start().starts_with('[') {
        return Vec::new();
    }
    let mut markers = Vec::new();
    for word in args.split_whitespace() {
        let Some(at) = word.find("<<") else { continue };
        if !word[..at].chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        let mut rest = &word[at + 2..];
        let strip_tabs = rest.starts_with('-');
        if strip_tabs {
            rest = &rest[1..];
        }
        let (quoted, body) = match rest.chars().next() {
            Some(q @ ('"' | '\'')) => (true, rest[1..].split(q).next().unwrap_or("")),
            _ => (false, rest),
        };
        let delimiter: String = body
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
            .collect();
        let starts_well = delimiter
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
        if starts_well || (quoted && !delimiter.is_empty()) {
            markers.push(HeredocMarker {
                delimiter,
                strip_tabs,
            });
        }
    }
    markers
}

/// Skips a heredoc body starting at line index `i`; returns the index after
/// its closing delimiter, or `None` when the file ends first.
fn skip_heredoc(lines: &[&str], mut i: usize, marker: &HeredocMarker) -> Option<usize> {
    while i < lines.len() {
        let line = lines[i];
        i += 1;
        let candidate = if marker.strip_tabs {
            line.trim_start_matches('\t')
        } else {
            line
        };
        if candidate == marker.delimiter {
            return Some(i);
        }
    }
    None
}
