//! What every status page shares: escaping, safe links, times in the
//! viewer's words, the page's frame. Pure functions; no JavaScript (the
//! pages are served with a CSP that forbids it).

use std::fmt::Write;

/// Text for an HTML text node or a quoted attribute.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A link target only when it is http(s); anything else (`javascript:`,
/// `data:`) is not rendered as a link.
pub fn safe_href(url: &str) -> Option<String> {
    let lower = url.trim_start().to_ascii_lowercase();
    (lower.starts_with("https://") || lower.starts_with("http://")).then(|| escape(url))
}

/// How long ago `seconds` were, as a person says it: "just now",
/// "40 s ago", "3 min ago", "5 h ago", "2 days ago". A time in the future
/// (a clock ahead of ours) is "just now".
pub fn ago_words(seconds: i64) -> String {
    match seconds {
        s if s < 5 => "just now".into(),
        s if s < 60 => format!("{s} s ago"),
        s if s < 3600 => format!("{} min ago", s / 60),
        s if s < 2 * 86_400 => format!("{} h ago", s / 3600),
        s => format!("{} days ago", s / 86_400),
    }
}

/// An RFC 3339 time from the store as `<time>`: the words, with the exact
/// time on hover.
pub fn ago(rfc3339: &str, now: time::OffsetDateTime) -> String {
    let parsed =
        time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339);
    let Ok(then) = parsed else {
        return escape(rfc3339);
    };
    let words = ago_words((now - then).whole_seconds());
    let exact = escape(rfc3339);
    format!("<time datetime=\"{exact}\" title=\"{exact}\">{words}</time>")
}

/// The start of every page: its title, the shared style, the way back and
/// the project finder.
pub fn page_start(title: &str) -> String {
    let mut html = String::new();
    let _ = write!(
        html,
        "<!doctype html><meta charset=utf-8><title>{} · gitlab-docker-autodep</title>\
         <style>body{{font-family:sans-serif;margin:1.5em}}table{{border-collapse:collapse}}\
         td,th{{padding:2px 8px;border-bottom:1px solid #ddd;text-align:left;vertical-align:top}}\
         .failed{{color:#b00}}.done{{color:#070}}nav{{margin-bottom:1em}}</style>\
         <nav><a href=\"/\">status</a> · <form action=\"/projects\" method=\"get\" style=\"display:inline\">\
         <input name=\"q\" placeholder=\"find a project\" aria-label=\"find a project\"> \
         <button>find</button></form></nav><h1>{}</h1>",
        escape(title),
        escape(title)
    );
    html
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_http_links_are_rendered() {
        assert_eq!(
            safe_href("https://gitlab/x?a=1&b=2"),
            Some("https://gitlab/x?a=1&amp;b=2".into())
        );
        assert_eq!(safe_href("HTTP://gitlab/x"), Some("HTTP://gitlab/x".into()));
        for bad in [
            "javascript:alert(1)",
            " data:text/html,x",
            "vbscript:x",
            "//evil/x",
            "",
        ] {
            assert_eq!(safe_href(bad), None, "{bad}");
        }
    }

    #[test]
    fn times_read_as_a_person_says_them() {
        for (seconds, words) in [
            (-30, "just now"),
            (0, "just now"),
            (42, "42 s ago"),
            (180, "3 min ago"),
            (3599, "59 min ago"),
            (5 * 3600 + 10, "5 h ago"),
            (3 * 86_400, "3 days ago"),
        ] {
            assert_eq!(ago_words(seconds), words, "{seconds}");
        }
        let now = time::macros::datetime!(2026-11-30 12:03:00 UTC);
        let html = ago("2026-11-30T12:00:00Z", now);
        assert!(html.contains(">3 min ago</time>"), "{html}");
        assert!(html.contains("title=\"2026-11-30T12:00:00Z\""), "{html}");
        // Not a time: shown as stored, escaped.
        assert_eq!(ago("<b>", now), "&lt;b&gt;");
    }
}
