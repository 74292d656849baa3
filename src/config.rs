//! PURE: the per-project configuration file, `.autodep.yml` at the root
//! of a project's default branch:
//!
//! ```yaml
//! dockerfiles: [services/api/Dockerfile, services/worker/Dockerfile]
//! depends_on: [registry.example.com/platform/base, platform/tools, python:3.12]
//! images: [harbor.example.com/team/app]
//! trigger: false          # or {ref: main, variables: {KEY: value}}
//! ```
//!
//! Parsed with serde-saphyr under its resource budget (anchors, aliases,
//! depth) and a size cap. A file that is not valid is an error with its
//! line and the reason; the project then falls back to the defaults.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The file's path in every repository.
pub const CONFIG_FILE: &str = ".autodep.yml";
/// Larger files are refused unread.
pub const MAX_CONFIG_BYTES: usize = 64 * 1024;
/// Entries per list.
const MAX_ENTRIES: usize = 100;
/// Dockerfile paths of one project.
const MAX_DOCKERFILES: usize = 20;

/// A project's configuration, as stored with its scan.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectConfig {
    /// Replaces the global `--dockerfile` list for this project.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dockerfiles: Option<Vec<String>>,
    /// Dependencies no `FROM` shows: images or project paths, each with
    /// its line in the file.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<(String, usize)>,
    /// Images this project produces on registries other than GitLab's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<String>,
    #[serde(default)]
    pub trigger: Trigger,
}

/// Whether and how the project is triggered.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    #[default]
    Default,
    /// `trigger: false`: never triggered (nor anything through it).
    Never,
    With {
        git_ref: Option<String>,
        variables: BTreeMap<String, String>,
    },
}

impl Trigger {
    pub fn is_default(&self) -> bool {
        *self == Trigger::Default
    }
}

/// What is wrong with a file, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{CONFIG_FILE}{}: {reason}; the defaults are used", line.map(|l| format!(" line {l}")).unwrap_or_default())]
pub struct ConfigError {
    pub line: Option<usize>,
    pub reason: String,
}

fn error(line: Option<usize>, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        line,
        reason: reason.into(),
    }
}

type Spanned<T> = serde_saphyr::Spanned<T>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    #[serde(default)]
    dockerfiles: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    depends_on: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    images: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    trigger: Option<Spanned<RawTrigger>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawTrigger {
    Switch(bool),
    With(RawWith),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWith {
    #[serde(default, rename = "ref")]
    git_ref: Option<String>,
    #[serde(default)]
    variables: BTreeMap<String, String>,
}

fn line<T>(s: &Spanned<T>) -> Option<usize> {
    Some(s.referenced.line() as usize).filter(|l| *l > 0)
}

/// Reads a configuration file.
pub fn parse(text: &str) -> Result<ProjectConfig, ConfigError> {
    if text.len() > MAX_CONFIG_BYTES {
        return Err(error(None, format!("larger than {MAX_CONFIG_BYTES} bytes")));
    }
    if text.trim().is_empty() {
        return Ok(ProjectConfig::default());
    }
    let raw: Raw = serde_saphyr::from_str(text).map_err(|e| {
        let line = e.location().map(|l| l.line() as usize).filter(|l| *l > 0);
        // The first line: the rest draws the place.
        let text = e.to_string();
        let first = text
            .lines()
            .next()
            .unwrap_or("")
            .trim_start_matches("error: ");
        let reason: String = crate::printable::one_line(first)
            .chars()
            .take(300)
            .collect();
        error(line, reason)
    })?;
    let mut config = ProjectConfig::default();
    if let Some(list) = raw.dockerfiles {
        if list.value.len() > MAX_DOCKERFILES {
            return Err(error(
                line(&list),
                format!("dockerfiles: more than {MAX_DOCKERFILES} paths"),
            ));
        }
        let mut paths = Vec::new();
        for p in &list.value {
            let clean = repo_path(&p.value).ok_or_else(|| {
                error(
                    line(p),
                    format!("{:?} is not a path inside the repository", p.value),
                )
            })?;
            if !paths.contains(&clean) {
                paths.push(clean);
            }
        }
        config.dockerfiles = Some(paths);
    }
    for entry in raw.depends_on.unwrap_or_default() {
        let text = entry.value.trim();
        if text.is_empty() || crate::image::ImageRef::parse(text).is_err() {
            return Err(error(
                line(&entry),
                format!(
                    "depends_on: {:?} is neither an image nor a project path",
                    entry.value
                ),
            ));
        }
        config
            .depends_on
            .push((text.to_string(), line(&entry).unwrap_or(0)));
    }
    check_count(config.depends_on.len(), None, "depends_on")?;
    for entry in raw.images.unwrap_or_default() {
        let text = entry.value.trim();
        match crate::image::ImageRef::parse(text) {
            Ok(r) => config.images.push(r.name()),
            Err(_) => {
                return Err(error(
                    line(&entry),
                    format!("images: {:?} is not an image name", entry.value),
                ))
            }
        }
    }
    check_count(config.images.len(), None, "images")?;
    config.trigger = match raw.trigger {
        None => Trigger::Default,
        Some(t) => {
            let at = line(&t);
            match t.value {
                RawTrigger::Switch(true) => Trigger::Default,
                RawTrigger::Switch(false) => Trigger::Never,
                RawTrigger::With(with) => {
                    if let Some(bad) = with.variables.keys().find(|k| !is_variable_name(k)) {
                        return Err(error(
                            at,
                            format!("trigger.variables: {bad:?} is not a variable name"),
                        ));
                    }
                    Trigger::With {
                        git_ref: with.git_ref.filter(|r| !r.trim().is_empty()),
                        variables: with.variables,
                    }
                }
            }
        }
    };
    Ok(config)
}

fn check_count(n: usize, line: Option<usize>, what: &str) -> Result<(), ConfigError> {
    if n > MAX_ENTRIES {
        return Err(error(
            line,
            format!("{what}: more than {MAX_ENTRIES} entries"),
        ));
    }
    Ok(())
}

/// A path relative to the repository root, without `..` or empty parts.
pub fn repo_path(path: &str) -> Option<String> {
    let clean = path.trim().trim_start_matches("./").trim_start_matches('/');
    let ok = !clean.is_empty()
        && clean.len() <= 1024
        && !clean.split('/').any(|p| p.is_empty() || p == "..")
        && !clean.chars().any(char::is_control);
    ok.then(|| clean.to_string())
}

fn is_variable_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_example_reads_as_it_says() {
        let c = parse(
            "dockerfiles: [services/api/Dockerfile, ./services/worker/Dockerfile]\n\
             depends_on: [registry.example.com/platform/base, platform/tools, python:3.12]\n\
             images: [harbor.example.com/team/app]\n\
             trigger: {ref: main, variables: {KEY: value}}\n",
        )
        .unwrap();
        assert_eq!(
            c.dockerfiles.unwrap(),
            ["services/api/Dockerfile", "services/worker/Dockerfile"]
        );
        assert_eq!(c.depends_on[2], ("python:3.12".to_string(), 2));
        assert_eq!(c.images, ["harbor.example.com/team/app"]);
        assert_eq!(
            c.trigger,
            Trigger::With {
                git_ref: Some("main".into()),
                variables: [("KEY".to_string(), "value".to_string())].into()
            }
        );
        assert_eq!(parse("trigger: false\n").unwrap().trigger, Trigger::Never);
        assert_eq!(parse("").unwrap(), ProjectConfig::default());
    }

    #[test]
    fn a_bad_file_says_where_and_why() {
        for (text, at, why) in [
            (
                "dockerfiles: [a]\nimages: [\"Not An Image!\"]\n",
                Some(2),
                "not an image name",
            ),
            (
                "dockerfiles:\n  - ../../etc/passwd\n",
                Some(2),
                "not a path inside",
            ),
            (
                "trigger: {ref: main, variables: {\"1x\": v}}\n",
                Some(1),
                "not a variable name",
            ),
            ("colour: blue\n", Some(1), "colour"),
            ("dockerfiles: [a\n", None, ""),
        ] {
            let e = parse(text).unwrap_err();
            if at.is_some() {
                assert_eq!(e.line, at, "{text:?}: {e}");
            }
            assert!(e.to_string().contains(why), "{text:?}: {e}");
            assert!(e.to_string().contains("the defaults are used"));
        }
    }

    #[test]
    fn hostile_files_are_refused_with_a_reason() {
        // Aliases that expand where the schema takes them: one 60 KiB
        // string named 200 times is 12 MiB once expanded; refused, by the
        // parser's alias budget or the entry count, never built.
        let mut aliases = format!("depends_on:\n  - &s {}\n", "a".repeat(60 * 1024));
        aliases.push_str(&"  - *s\n".repeat(200));
        let e = parse(&aliases).unwrap_err();
        assert!(
            e.reason.contains("budget") || e.reason.contains("more than 100 entries"),
            "{e}"
        );
        // An exponential alias bomb stops at the first key the schema
        // does not have, before any alias is expanded.
        let mut bomb = String::from("a0: &a0 [x, x]\n");
        for i in 1..40 {
            bomb.push_str(&format!("a{i}: &a{i} [*a{}, *a{}]\n", i - 1, i - 1));
        }
        bomb.push_str("depends_on: *a39\n");
        assert!(parse(&bomb)
            .unwrap_err()
            .reason
            .contains("unknown field `a0`"));
        // 100,000 levels of nesting: an error, not a stack overflow.
        let deep = format!("depends_on: {}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(parse(&deep).is_err());
        let big = parse(&"x".repeat(MAX_CONFIG_BYTES + 1)).unwrap_err();
        assert!(big.reason.contains("larger than"), "{big}");
    }
}
