//! Who is calling: GitLab's token rules and its exact error bodies.

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::world::{TokenScope, World};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    Anonymous,
    User(TokenScope),
    /// A CI job token, on a route that accepts one.
    Job,
}

impl Caller {
    pub fn authenticated(self) -> bool {
        !matches!(self, Caller::Anonymous)
    }
}

/// A JSON error with GitLab's status and body.
pub fn error(status: StatusCode, body: Value) -> Response {
    (status, axum::Json(body)).into_response()
}

pub fn message(status: StatusCode, text: &str) -> Response {
    error(status, json!({ "message": text }))
}

pub fn unauthorized() -> Response {
    message(StatusCode::UNAUTHORIZED, "401 Unauthorized")
}

pub fn insufficient_scope() -> Response {
    error(
        StatusCode::FORBIDDEN,
        json!({
            "error": "insufficient_scope",
            "error_description": "The request requires higher privileges than provided by the access token.",
            "scope": "api",
        }),
    )
}

fn invalid_token(description: &str) -> Response {
    let mut r = error(
        StatusCode::UNAUTHORIZED,
        json!({"error": "invalid_token", "error_description": description}),
    );
    if let Ok(v) = format!(
        "Bearer realm=\"Protected by OAuth 2.0\", error=\"invalid_token\", error_description=\"{description}\""
    )
    .parse()
    {
        r.headers_mut().insert("www-authenticate", v);
    }
    r
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Identifies the caller from headers and query parameters.
/// `job_token_allowed`: the route declares `job_token_allowed`; elsewhere a
/// job token is ignored and the request is anonymous.
pub fn identify(
    world: &World,
    headers: &HeaderMap,
    query: &[(String, String)],
    job_token_allowed: bool,
) -> Result<Caller, Response> {
    let q = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let bearer = header(headers, "authorization").and_then(|v| {
        v.strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("bearer "))
    });
    let job = header(headers, "job-token").or_else(|| q("job_token"));
    if let Some(token) = header(headers, "private-token")
        .or_else(|| q("private_token"))
        .or(bearer)
    {
        if let Some(scope) = world.tokens.get(token) {
            return match scope {
                TokenScope::Expired => Err(invalid_token(
                    "Token is expired. You can either do re-authorization or token refresh.",
                )),
                TokenScope::Revoked => Err(invalid_token(
                    "Token was revoked. You have to re-authorize from the user.",
                )),
                scope => Ok(Caller::User(*scope)),
            };
        }
        let is_job = world.job_tokens.iter().any(|t| t == token);
        if bearer == Some(token) && is_job && job_token_allowed {
            return Ok(Caller::Job);
        }
        return Err(unauthorized());
    }
    if let Some(token) = job {
        if !job_token_allowed {
            return Ok(Caller::Anonymous);
        }
        return if world.job_tokens.iter().any(|t| t == token) {
            Ok(Caller::Job)
        } else {
            Err(unauthorized())
        };
    }
    Ok(Caller::Anonymous)
}

/// Write access: an `api`-scoped user token.
pub fn require_write(caller: Caller) -> Result<(), Response> {
    match caller {
        Caller::Anonymous => Err(unauthorized()),
        Caller::User(TokenScope::ReadApi) => Err(insufficient_scope()),
        _ => Ok(()),
    }
}
