//! From physical lines to instructions: parser directives, the escape
//! character, line continuations (with comments and blank lines inside them)
//! and BuildKit heredoc bodies, which are skipped.

use super::Diagnostic;

/// One instruction, its continuation lines joined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    /// Upper-cased: instructions are case-insensitive.
    pub keyword: String,
    pub args: String,
    /// 1-based line where the instruction starts.
    pub line: usize,
}

#[derive(Debug, Default)]
pub struct Parsed {
    pub instructions: Vec<Instruction>,
    pub diagnostics: Vec<Diagnostic>,
}

pub fn logical_instructions(text: &str) -> Parsed {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let lines: Vec<&str> = text
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .collect();
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
        let mut joined = String::new();
        while i < lines.len() {
            let line = lines[i];
            i += 1;
            let trimmed = line.trim_start();
            if !joined.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
                continue;
            }
            let body = line.trim_end_matches([' ', '\t']);
            match body.strip_suffix(escape) {
                Some(head) => {
                    joined.push_str(head);
                    joined.push(' ');
                }
                None => {
                    joined.push_str(line);
                    break;
                }
            }
        }
        let trimmed = joined.trim();
        let (keyword, args) = match trimmed.find(char::is_whitespace) {
            Some(at) => (&trimmed[..at], trimmed[at..].trim_start()),
            None => (trimmed, ""),
        };
        let keyword = keyword.to_ascii_uppercase();
        if matches!(keyword.as_str(), "RUN" | "COPY" | "ADD") {
            for marker in heredoc_markers(args) {
                i = skip_heredoc(&lines, i, &marker, start, &mut parsed.diagnostics);
            }
        }
        parsed.instructions.push(Instruction {
            keyword,
            args: args.to_string(),
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
/// its closing delimiter (or the end of the file, with a diagnostic).
fn skip_heredoc(
    lines: &[&str],
    mut i: usize,
    marker: &HeredocMarker,
    instruction_line: usize,
    diagnostics: &mut Vec<Diagnostic>,
) -> usize {
    while i < lines.len() {
        let line = lines[i];
        i += 1;
        let candidate = if marker.strip_tabs {
            line.trim_start_matches('\t')
        } else {
            line
        };
        if candidate == marker.delimiter {
            return i;
        }
    }
    diagnostics.push(Diagnostic {
        line: instruction_line,
        message: format!(
            "heredoc <<{} is never closed; the rest of the file is part of it",
            marker.delimiter
        ),
    });
    i
}
