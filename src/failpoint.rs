//! Fault injection for the end-to-end tests: `AUTODEP_FAILPOINTS` lists
//! `name:argument` pairs (comma-separated) where the server misbehaves on
//! purpose, so tests can show that it survives. Unset in production, where
//! every check is one lookup in an empty list.

use std::sync::OnceLock;

fn points() -> &'static [(String, String)] {
    static POINTS: OnceLock<Vec<(String, String)>> = OnceLock::new();
    POINTS.get_or_init(|| {
        std::env::var("AUTODEP_FAILPOINTS")
            .unwrap_or_default()
            .split(',')
            .filter_map(|p| p.split_once(':'))
            .map(|(n, a)| (n.trim().to_string(), a.trim().to_string()))
            .collect()
    })
}

/// True when the failpoint `name` is set for `argument`.
pub fn hit(name: &str, argument: &str) -> bool {
    points().iter().any(|(n, a)| n == name && a == argument)
}
