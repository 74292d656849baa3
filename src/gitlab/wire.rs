//! GitLab's JSON as the tool reads it: the fields it needs of projects and
//! pipelines (unknown fields ignored), cleaned once when decoded.

use serde::{Deserialize, Serialize};

/// A project as the tool needs it (unknown fields are ignored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Project {
    pub id: u64,
    pub path_with_namespace: String,
    #[serde(default)]
    pub default_branch: Option<String>,
    #[serde(default)]
    pub archived: bool,
    #[serde(default)]
    pub empty_repo: bool,
    #[serde(default)]
    pub web_url: String,
}

/// GitLab's strings as we keep them: control characters escaped (a
/// hostile or broken answer cannot forge a log line or an output line) and
/// at most 4 KiB.
pub(super) fn clean(text: &mut String) {
    if text.len() > 4096 || text.chars().any(char::is_control) {
        let mut cleaned = crate::printable::one_line(text).into_owned();
        if cleaned.len() > 4096 {
            let mut end = 4096;
            while !cleaned.is_char_boundary(end) {
                end -= 1;
            }
            cleaned.truncate(end);
        }
        *text = cleaned;
    }
}

impl Project {
    pub(super) fn cleaned(mut self) -> Project {
        clean(&mut self.path_with_namespace);
        clean(&mut self.web_url);
        if let Some(branch) = &mut self.default_branch {
            clean(branch);
        }
        self
    }
}

impl Pipeline {
    pub(super) fn cleaned(mut self) -> Pipeline {
        clean(&mut self.status);
        clean(&mut self.git_ref);
        clean(&mut self.web_url);
        clean(&mut self.source);
        self
    }
}

/// A pipeline as the tool needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pipeline {
    pub id: u64,
    pub project_id: u64,
    pub status: String,
    #[serde(rename = "ref", default)]
    pub git_ref: String,
    #[serde(default)]
    pub web_url: String,
    /// `push`, `api`, `trigger`, `pipeline`, `web`, …
    #[serde(default)]
    pub source: String,
}

/// A file's text and the blob id that identifies that version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileContent {
    pub text: String,
    pub blob_id: Option<String>,
}
