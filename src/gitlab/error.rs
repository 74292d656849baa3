//! What can go wrong talking to GitLab, with what to do about it, and
//! GitLab's own error texts read out of its answers.

use super::wire::clean;

#[derive(Debug, thiserror::Error)]
pub enum GitLabError {
    #[error("GitLab rejected the token ({status}: {message}). Check --token, --token-file or GITLAB_TOKEN; the token needs the `api` scope to trigger pipelines (`read_api` is enough for `deps` and `graph`)")]
    Unauthorized { status: u16, message: String },
    #[error("GitLab refused {method} {path} ({status}: {message}); the token's user needs at least the Developer role on that project")]
    Forbidden {
        method: String,
        path: String,
        status: u16,
        message: String,
    },
    #[error("not found on GitLab: {path} ({message})")]
    NotFound { path: String, message: String },
    #[error("GitLab answered {status} to {method} {path}: {message}")]
    Status {
        method: String,
        path: String,
        status: u16,
        message: String,
    },
    #[error("cannot reach GitLab at {url}: {detail}. Check --url and the network; for a private CA pass --ca-cert")]
    Unreachable { url: String, detail: String },
    #[error("GitLab's answer to {path} was not what the API documents: {detail}")]
    Decode { path: String, detail: String },
    #[error("no answer to {path} after the request was sent ({detail}); it may have taken effect")]
    NoAnswer { path: String, detail: String },
    #[error("GitLab's GraphQL API refused the scan's query: {message}. Use --api rest to scan over REST")]
    GraphQl { message: String },
    #[error("{path} is larger than {limit} bytes; not read")]
    TooLarge { path: String, limit: usize },
    #[error("GitLab redirected {path} ({status}) to {to:?}, outside {}; not followed, so the token is not sent there. Check --url (scheme, host and port)", "the --url origin")]
    Redirected {
        path: String,
        status: u16,
        to: String,
    },
}

impl GitLabError {
    /// The token or the connection is wrong: nothing else will work either.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            GitLabError::Unauthorized { .. }
                | GitLabError::Unreachable { .. }
                | GitLabError::Redirected { .. }
        )
    }

    /// The request may or may not have taken effect (a 5xx, or no answer
    /// after it was sent): look before repeating it.
    pub fn is_ambiguous(&self) -> bool {
        match self {
            GitLabError::NoAnswer { .. } => true,
            GitLabError::Status { status, .. } => *status >= 500,
            _ => false,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            GitLabError::Unauthorized { status, .. }
            | GitLabError::Forbidden { status, .. }
            | GitLabError::Status { status, .. } => Some(*status),
            GitLabError::NotFound { .. } => Some(404),
            _ => None,
        }
    }
}

/// GitLab's error bodies: `{"message": …}` or `{"error": …}`, where
/// `message` may be a string or a hash of arrays.
pub(super) fn error_message(body: &str) -> String {
    let mut message = raw_error_message(body);
    clean(&mut message);
    message
}

fn raw_error_message(body: &str) -> String {
    let Ok(value) = serde_json::from_str::<serde_json::Value>(body) else {
        let text = body.trim();
        return if text.is_empty() {
            "no details".into()
        } else {
            text.chars().take(200).collect()
        };
    };
    let pick = |v: &serde_json::Value| -> Option<String> {
        match v {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Null => None,
            other => Some(other.to_string()),
        }
    };
    let main = value
        .get("message")
        .and_then(pick)
        .or_else(|| value.get("error").and_then(pick))
        .unwrap_or_else(|| value.to_string());
    match value.get("error_description").and_then(|d| d.as_str()) {
        Some(d) => format!("{main}: {d}"),
        None => main,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_messages_from_both_body_shapes() {
        assert_eq!(
            error_message(r#"{"message":"404 Project Not Found"}"#),
            "404 Project Not Found"
        );
        assert_eq!(
            error_message(r#"{"error":"ref is missing"}"#),
            "ref is missing"
        );
        assert_eq!(
            error_message(r#"{"message":{"base":["Reference not found"]}}"#),
            r#"{"base":["Reference not found"]}"#
        );
        assert_eq!(
            error_message(
                r#"{"error":"insufficient_scope","error_description":"The request requires higher privileges"}"#
            ),
            "insufficient_scope: The request requires higher privileges"
        );
        assert_eq!(error_message("Retry later\n"), "Retry later");
        assert_eq!(error_message(""), "no details");
    }
}
