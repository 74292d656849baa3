//! GitLab as the container registry's token service: `GET /jwt/auth`
//! (the realm a registry with `auth: token` sends clients to) answers a
//! JWT for the requested `repository:NAME:ACTIONS` scopes, signed ES256
//! with a key whose self-signed certificate the registry trusts
//! (`rootcertbundle`) and sent in the token's `x5c` header. Basic
//! authentication with a token the simulator knows, any user name (as a
//! personal access token); `api` tokens may pull and push, `read_api` ones
//! pull. Without credentials: a token that grants nothing, as GitLab gives
//! anonymous callers for private projects.

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine;
use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::json;

use crate::api::query_pairs;
use crate::world::TokenScope;
use crate::Shared;

/// The issuer and audience a registry must be configured with.
pub const ISSUER: &str = "gitlab-issuer";
pub const SERVICE: &str = "container_registry";

/// The signing key and its certificate.
pub struct TokenSigner {
    key: EcdsaKeyPair,
    rng: ring::rand::SystemRandom,
    cert_der_b64: String,
    /// For the registry's `rootcertbundle`.
    pub cert_pem: String,
}

impl TokenSigner {
    pub fn new() -> anyhow::Result<TokenSigner> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let params = rcgen::CertificateParams::new(vec!["gitlab-sim token signer".to_string()])?;
        let cert = params.self_signed(&key)?;
        let rng = ring::rand::SystemRandom::new();
        let signer =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &key.serialize_der(), &rng)
                .map_err(|e| anyhow::anyhow!("cannot load the signing key: {e}"))?;
        Ok(TokenSigner {
            key: signer,
            rng,
            cert_der_b64: base64::engine::general_purpose::STANDARD.encode(cert.der()),
            cert_pem: cert.pem(),
        })
    }

    fn sign(&self, claims: &serde_json::Value) -> Option<String> {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let header = json!({"typ": "JWT", "alg": "ES256", "x5c": [self.cert_der_b64]});
        let input = format!(
            "{}.{}",
            b64.encode(header.to_string()),
            b64.encode(claims.to_string())
        );
        let signature = self.key.sign(&self.rng, input.as_bytes()).ok()?;
        Some(format!("{input}.{}", b64.encode(signature.as_ref())))
    }
}

pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new().route("/jwt/auth", get(auth))
}

fn denied() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        Json(json!({"errors": [{"code": "UNAUTHORIZED", "message": "HTTP Basic: Access denied"}]})),
    )
        .into_response()
}

/// The token user's scope, from Basic credentials.
fn caller(shared: &Shared, headers: &HeaderMap) -> Result<Option<TokenScope>, Response> {
    let Some(basic) = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
    else {
        return Ok(None);
    };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(basic.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(denied)?;
    let (_, secret) = decoded.split_once(':').ok_or_else(denied)?;
    let world = shared.world.lock().expect("world lock");
    match world.tokens.get(secret) {
        Some(scope @ (TokenScope::Api | TokenScope::ReadApi)) => Ok(Some(*scope)),
        _ if world.job_tokens.iter().any(|t| t == secret) => Ok(Some(TokenScope::ReadApi)),
        _ => Err(denied()),
    }
}

async fn auth(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let scope = match caller(&shared, &headers) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let query = query_pairs(&raw);
    let mut access = Vec::new();
    for (_, requested) in query.iter().filter(|(k, _)| k == "scope") {
        let mut parts = requested.splitn(3, ':');
        let (Some("repository"), Some(name), Some(actions)) =
            (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let granted: Vec<&str> = actions
            .split(',')
            .filter(|a| {
                matches!(
                    (scope, *a),
                    (Some(TokenScope::Api), "pull" | "push") | (Some(TokenScope::ReadApi), "pull")
                )
            })
            .collect();
        access.push(json!({"type": "repository", "name": name, "actions": granted}));
    }
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let claims = json!({
        "iss": ISSUER,
        "sub": if scope.is_some() { "autodep" } else { "" },
        "aud": query.iter().find(|(k, _)| k == "service").map(|(_, v)| v.as_str()).unwrap_or(SERVICE),
        "exp": now + 300,
        "nbf": now - 5,
        "iat": now,
        "jti": uuid::Uuid::new_v4().to_string(),
        "access": access,
    });
    match shared.token_signer.sign(&claims) {
        Some(token) => Json(json!({"token": token})).into_response(),
        None => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}
