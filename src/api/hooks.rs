//! Incoming hooks: `POST /api/v1/manage/hooks/git` asks the git source to fetch at once.
//!
//! The route takes no bearer token: a forge cannot mint one. It is authenticated by the shared
//! webhook secret instead, either GitHub's `X-Hub-Signature-256: sha256=<hex>` (HMAC-SHA256 of
//! the raw body) or GitLab's `X-Gitlab-Token: <secret>`, both compared in constant time. Anything
//! else is 401; without `--git-webhook-secret` the route answers 404.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Json;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::sync::Notify;

use super::openapi::{Api, Op};
use super::{ApiError, AppState};

type HmacSha256 = Hmac<Sha256>;

/// GitHub's signature header.
pub const GITHUB_SIGNATURE: &str = "x-hub-signature-256";
/// GitLab's secret-token header.
pub const GITLAB_TOKEN: &str = "x-gitlab-token";

/// The git webhook's secret and what a verified call pokes.
#[derive(Clone)]
pub struct GitHook {
    pub secret: Vec<u8>,
    /// Notified once per accepted call; the git sync loop fetches when woken.
    pub trigger: Arc<Notify>,
}

impl std::fmt::Debug for GitHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitHook")
            .field("secret", &"<redacted>")
            .finish_non_exhaustive()
    }
}

pub fn routes() -> Api {
    Api::new("hooks").route(
        "/api/v1/manage/hooks/git",
        post(git),
        [Op::post(
            "Fetch the git source now. No bearer token: authenticated by the webhook secret \
             (GitHub X-Hub-Signature-256 HMAC of the body, or GitLab X-Gitlab-Token)",
        )
        .header(
            "X-Hub-Signature-256",
            "GitHub: sha256=<hex HMAC-SHA256 of the body>",
        )
        .header("X-Gitlab-Token", "GitLab: the shared secret")
        .json::<HookAccepted>(202)
        .errors(&[401, 404])],
    )
}

/// The answer to an accepted hook call.
#[derive(serde::Serialize, schemars::JsonSchema)]
pub struct HookAccepted {
    /// Always true: a fetch was asked for.
    accepted: bool,
}

async fn git(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<HookAccepted>), ApiError> {
    let Some(hook) = &state.git_hook else {
        return Err(ApiError::NotFound(
            "the git webhook is not configured (beast run --git URL --git-webhook-secret S)"
                .to_string(),
        ));
    };
    if let Err(why) = verify(&hook.secret, &headers, &body) {
        tracing::warn!(reason = why, "git webhook refused");
        return Err(ApiError::Unauthorized(why.to_string()));
    }
    hook.trigger.notify_one();
    Ok((StatusCode::ACCEPTED, Json(HookAccepted { accepted: true })))
}

/// Checks a hook call against `secret`: GitHub's body signature if present, else GitLab's token.
pub fn verify(secret: &[u8], headers: &HeaderMap, body: &[u8]) -> Result<(), &'static str> {
    if let Some(signature) = headers.get(GITHUB_SIGNATURE) {
        let hex_sig = signature
            .to_str()
            .ok()
            .and_then(|s| s.trim().strip_prefix("sha256="))
            .ok_or("X-Hub-Signature-256 is not of the form sha256=<hex>")?;
        let signature = hex::decode(hex_sig).map_err(|_| "X-Hub-Signature-256 is not valid hex")?;
        return mac(secret, body)
            .verify_slice(&signature)
            .map_err(|_| "X-Hub-Signature-256 does not match the body");
    }
    if let Some(token) = headers.get(GITLAB_TOKEN) {
        // Compare MACs of both values: constant time, and the length of the secret does not leak.
        let expected = mac(secret, secret).finalize().into_bytes();
        return mac(secret, token.as_bytes())
            .verify_slice(&expected)
            .map_err(|_| "X-Gitlab-Token is wrong");
    }
    Err("missing X-Hub-Signature-256 or X-Gitlab-Token")
}

fn mac(key: &[u8], data: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length; the error branch cannot happen.
    let mut mac = <HmacSha256 as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| <HmacSha256 as Mac>::new(&Default::default()));
    mac.update(data);
    mac
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use crate::api::{router, AppState};
    use crate::auth::Auth;

    const SECRET: &[u8] = b"hook-secret";
    const BODY: &str = r#"{"ref":"refs/heads/main"}"#;

    fn sign(secret: &[u8], body: &str) -> String {
        let tag = mac(secret, body.as_bytes()).finalize().into_bytes();
        format!("sha256={}", hex::encode(tag))
    }

    fn state(hook: Option<GitHook>) -> AppState {
        let mut state = AppState::for_tests(Auth::disabled());
        state.git_hook = hook;
        state
    }

    fn hook() -> (GitHook, Arc<Notify>) {
        let trigger = Arc::new(Notify::new());
        let hook = GitHook {
            secret: SECRET.to_vec(),
            trigger: trigger.clone(),
        };
        (hook, trigger)
    }

    async fn call(
        state: AppState,
        headers: &[(&str, &str)],
        body: &str,
    ) -> (StatusCode, serde_json::Value) {
        let mut req = Request::builder()
            .method("POST")
            .uri("/api/v1/manage/hooks/git");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let response = router(state)
            .oneshot(req.body(Body::from(body.to_string())).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
        )
    }

    /// Whether `trigger` holds a notification (taken, if so).
    async fn triggered(trigger: &Notify) -> bool {
        tokio::time::timeout(std::time::Duration::from_millis(50), trigger.notified())
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn a_valid_github_signature_is_accepted_and_triggers_a_fetch() {
        let (hook, trigger) = hook();
        let sig = sign(SECRET, BODY);
        let (status, json) = call(
            state(Some(hook)),
            &[("X-Hub-Signature-256", &sig), ("X-GitHub-Event", "push")],
            BODY,
        )
        .await;
        assert_eq!(status, StatusCode::ACCEPTED);
        assert_eq!(json, serde_json::json!({"accepted": true}));
        assert!(triggered(&trigger).await);
    }

    #[tokio::test]
    async fn a_signature_made_with_another_secret_is_401() {
        let (hook, trigger) = hook();
        let sig = sign(b"not-the-secret", BODY);
        let (status, json) = call(state(Some(hook)), &[("X-Hub-Signature-256", &sig)], BODY).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(json["error"]["code"], "Unauthorized");
        assert!(!triggered(&trigger).await);
    }

    #[tokio::test]
    async fn a_signature_of_another_body_is_401() {
        let (hook, trigger) = hook();
        let sig = sign(SECRET, "{}");
        let (status, _) = call(state(Some(hook)), &[("X-Hub-Signature-256", &sig)], BODY).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(!triggered(&trigger).await);
    }

    #[tokio::test]
    async fn a_missing_signature_is_401() {
        let (hook, trigger) = hook();
        let (status, json) = call(state(Some(hook)), &[], BODY).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("missing"));
        assert!(!triggered(&trigger).await);
    }

    #[tokio::test]
    async fn malformed_signatures_are_401() {
        let good = sign(SECRET, BODY);
        let hex_only = good.trim_start_matches("sha256=").to_string();
        let sha1 = format!("sha1={hex_only}");
        let not_hex = format!("sha256={}", "z".repeat(64));
        let short = good[..good.len() - 2].to_string();
        for bad in [hex_only, sha1, not_hex, short, "sha256=".to_string()] {
            let (hook, trigger) = hook();
            let (status, _) = call(state(Some(hook)), &[("X-Hub-Signature-256", &bad)], BODY).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{bad}");
            assert!(!triggered(&trigger).await, "{bad}");
        }
    }

    #[tokio::test]
    async fn the_gitlab_token_is_accepted_only_when_equal_to_the_secret() {
        let (hook, trigger) = hook();
        let (status, _) = call(
            state(Some(hook.clone())),
            &[("X-Gitlab-Token", "hook-secret")],
            BODY,
        )
        .await;
        assert_eq!(status, StatusCode::ACCEPTED);
        assert!(triggered(&trigger).await);
        for bad in ["hook-secre", "hook-secret2", "", "HOOK-SECRET"] {
            let (status, _) =
                call(state(Some(hook.clone())), &[("X-Gitlab-Token", bad)], BODY).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{bad:?}");
        }
        assert!(!triggered(&trigger).await);
    }

    #[tokio::test]
    async fn a_bad_github_signature_is_not_rescued_by_a_gitlab_token() {
        let (hook, _) = hook();
        let sig = sign(b"wrong", BODY);
        let (status, _) = call(
            state(Some(hook)),
            &[
                ("X-Hub-Signature-256", &sig),
                ("X-Gitlab-Token", "hook-secret"),
            ],
            BODY,
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }

    #[tokio::test]
    async fn without_a_configured_secret_the_hook_is_404() {
        let sig = sign(SECRET, BODY);
        let (status, json) = call(state(None), &[("X-Hub-Signature-256", &sig)], BODY).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not configured"));
    }

    #[tokio::test]
    async fn the_hook_needs_no_bearer_token_even_with_auth_enabled() {
        let (hook, trigger) = hook();
        let keys = crate::auth::Keys::new(b"0123456789abcdef0123456789abcdef").unwrap();
        let mut state = AppState::for_tests(Auth::enabled(keys));
        state.git_hook = Some(hook);
        let sig = sign(SECRET, BODY);
        let (status, _) = call(state, &[("X-Hub-Signature-256", &sig)], BODY).await;
        assert_eq!(status, StatusCode::ACCEPTED);
        assert!(triggered(&trigger).await);
    }

    #[test]
    fn the_route_is_documented_as_open() {
        let (_, docs) = routes().finish();
        assert_eq!(docs.len(), 1);
        assert_eq!(docs[0].path, "/api/v1/manage/hooks/git");
        assert_eq!(docs[0].role, None);
    }
}
