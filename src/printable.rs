//! Untrusted text (webhook bodies, GitLab's answers, Dockerfiles) made safe
//! for a terminal or a log line: control characters — CR and LF that would
//! forge a line, escape sequences, and the bidirectional overrides that
//! reorder what is shown — are written as visible escapes.

use std::borrow::Cow;

fn needs_escape(c: char, keep_newlines: bool) -> bool {
    match c {
        '\t' => false,
        '\n' => !keep_newlines,
        // Bidirectional embeddings, overrides and isolates.
        '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' => true,
        c => c.is_control(),
    }
}

fn escape_into(out: &mut String, c: char) {
    use std::fmt::Write;
    if (c as u32) < 0x80 {
        let _ = write!(out, "\\x{:02x}", c as u32);
    } else {
        let _ = write!(out, "\\u{{{:x}}}", c as u32);
    }
}

/// `text` with control characters escaped; newlines too unless
/// `keep_newlines` (for multi-line output whose lines we made).
pub fn escape_controls(text: &str, keep_newlines: bool) -> Cow<'_, str> {
    if !text.chars().any(|c| needs_escape(c, keep_newlines)) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if needs_escape(c, keep_newlines) {
            escape_into(&mut out, c);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// One field of untrusted text, for a single line.
pub fn one_line(text: &str) -> Cow<'_, str> {
    escape_controls(text, false)
}

/// A writer for text log lines: everything a line holds that is not the
/// formatter's own (its colours, its final newline) is escaped, so a CR or
/// LF inside a logged value cannot start a forged line. (The formatter
/// already escapes ESC inside values, so an ESC here is its own colour.)
pub struct LogLineWriter<W>(pub W);

impl<W: std::io::Write> std::io::Write for LogLineWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        let (body, end) = match text.strip_suffix('\n') {
            Some(body) => (body, "\n"),
            None => (text.as_ref(), ""),
        };
        let mut out = String::with_capacity(body.len() + 1);
        for c in body.chars() {
            if c != '\x1b' && needs_escape(c, false) {
                escape_into(&mut out, c);
            } else {
                out.push(c);
            }
        }
        out.push_str(end);
        self.0.write_all(out.as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn controls_are_escaped_and_plain_text_is_borrowed() {
        assert!(matches!(one_line("group/app"), Cow::Borrowed(_)));
        assert_eq!(one_line("a\r\nb\x1b[31mc"), "a\\x0d\\x0ab\\x1b[31mc");
        assert_eq!(one_line("x\u{202e}y\u{9b}z"), "x\\u{202e}y\\u{9b}z");
        assert_eq!(escape_controls("one\ntwo\r", true), "one\ntwo\\x0d");
    }

    #[test]
    fn a_log_line_keeps_its_newline_and_colours_only() {
        let mut w = LogLineWriter(Vec::new());
        w.write_all(b"\x1b[33m WARN\x1b[0m got a\nFAKE line\r\n")
            .unwrap();
        assert_eq!(
            String::from_utf8(w.0).unwrap(),
            "\x1b[33m WARN\x1b[0m got a\\x0aFAKE line\\x0d\n"
        );
    }
}
