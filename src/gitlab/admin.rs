//! The set-up side of GitLab's API: project webhooks (list, create,
//! update, delete), the instance's version, the token's own record and a
//! project's registry repositories. Wire types stay here.

use reqwest::Method;
use serde::{Deserialize, Serialize};

use super::{GitLab, GitLabError};
use crate::printable::one_line;

/// A project hook as GitLab shows it (its token is never shown).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hook {
    pub id: u64,
    pub url: String,
    #[serde(default)]
    pub push_events: bool,
    #[serde(default)]
    pub pipeline_events: bool,
    #[serde(default)]
    pub push_events_branch_filter: Option<String>,
    #[serde(default)]
    pub enable_ssl_verification: bool,
    /// `executable`, `temporarily_disabled`, `disabled` (GitLab 15.7+;
    /// absent before).
    #[serde(default)]
    pub alert_status: Option<String>,
    #[serde(default)]
    pub disabled_until: Option<String>,
    /// Every other `*_events` flag, by name.
    #[serde(flatten)]
    pub other: std::collections::BTreeMap<String, serde_json::Value>,
}

impl Hook {
    /// The other event flags that are on.
    pub fn other_events_on(&self) -> Vec<String> {
        self.other
            .iter()
            .filter(|(k, v)| k.ends_with("_events") && v.as_bool() == Some(true))
            .map(|(k, _)| k.clone())
            .collect()
    }
}

/// The token's own record (`GET /personal_access_tokens/self`).
#[derive(Debug, Clone, Deserialize)]
pub struct TokenInfo {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub scopes: Vec<String>,
    #[serde(default)]
    pub expires_at: Option<String>,
    #[serde(default)]
    pub active: bool,
}

/// A registry repository of a project: where GitLab says its images live.
#[derive(Debug, Clone, Deserialize)]
pub struct RegistryRepository {
    pub location: String,
}

/// Whose webhooks: a project's, or a group's (Premium; they hear every
/// project of the group and its subgroups).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookOwner {
    Project(u64),
    /// By full path.
    Group(String),
}

impl HookOwner {
    fn hooks_path(&self) -> String {
        match self {
            HookOwner::Project(id) => format!("/projects/{id}/hooks"),
            HookOwner::Group(path) => format!("/groups/{}/hooks", super::encode_segment(path)),
        }
    }
}

impl GitLab {
    pub async fn hooks(&self, owner: &HookOwner) -> Result<Vec<Hook>, GitLabError> {
        let path = owner.hooks_path();
        let query = [("per_page", "100".to_string())];
        let (_, hooks) = self.get_json::<Vec<Hook>>(&path, &query).await?;
        Ok(hooks
            .into_iter()
            .map(|mut h| {
                h.url = one_line(&h.url).into_owned();
                h
            })
            .collect())
    }

    /// Creates (`hook_id` none) or updates a hook with these fields.
    pub async fn save_hook(
        &self,
        owner: &HookOwner,
        hook_id: Option<u64>,
        fields: &serde_json::Value,
    ) -> Result<Hook, GitLabError> {
        let base = owner.hooks_path();
        let (method, path) = match hook_id {
            None => (Method::POST, base),
            Some(id) => (Method::PUT, format!("{base}/{id}")),
        };
        let (_, text) = self
            .send(
                method,
                &path,
                &[],
                Some(fields),
                self.config.max_response_bytes,
            )
            .await?;
        serde_json::from_str(&text).map_err(|e| GitLabError::Decode {
            path,
            detail: e.to_string(),
        })
    }

    pub async fn delete_hook(&self, owner: &HookOwner, hook_id: u64) -> Result<(), GitLabError> {
        let path = format!("{}/{hook_id}", owner.hooks_path());
        match self.send(Method::DELETE, &path, &[], None, 64 * 1024).await {
            Ok(_) | Err(GitLabError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// GitLab's version string, e.g. `18.6.0-ee`.
    pub async fn version(&self) -> Result<String, GitLabError> {
        #[derive(Deserialize)]
        struct Version {
            version: String,
        }
        let (_, v) = self.get_json::<Version>("/version", &[]).await?;
        Ok(one_line(&v.version).into_owned())
    }

    pub async fn token_info(&self) -> Result<TokenInfo, GitLabError> {
        Ok(self
            .get_json::<TokenInfo>("/personal_access_tokens/self", &[])
            .await?
            .1)
    }

    /// The first `n` projects the token sees (one page, oldest first).
    pub async fn first_projects(&self, n: usize) -> Result<Vec<super::Project>, GitLabError> {
        let query = [
            ("order_by", "id".to_string()),
            ("sort", "asc".to_string()),
            ("per_page", n.clamp(1, 100).to_string()),
        ];
        let (_, list) = self
            .get_json::<Vec<super::Project>>("/projects", &query)
            .await?;
        Ok(list.into_iter().map(super::Project::cleaned).collect())
    }

    pub async fn registry_repositories(
        &self,
        project_id: u64,
    ) -> Result<Vec<RegistryRepository>, GitLabError> {
        let path = format!("/projects/{project_id}/registry/repositories");
        Ok(self
            .get_json::<Vec<RegistryRepository>>(&path, &[])
            .await?
            .1)
    }
}
