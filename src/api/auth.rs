//! The auth namespace: `POST /api/v1/auth/token` exchanges a valid token for a narrower one.
//!
//! The new token may have a lower role and a shorter life, never more: its role is at most the
//! caller's and it expires no later than the caller's token. Only an admin may name another
//! subject. A `ttl` that would outlive the presented token is refused (403), not clamped, so a
//! client never holds a token that dies earlier than it asked for without knowing.
//!
//! Player tokens (SPEC §8): only an admin mints one for a team (how a CTF platform acts for its
//! teams); a player may exchange its own token for a shorter one of the same team, nothing else.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use axum::Json;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::openapi::{Api, Op};
use super::ApiError;
use crate::auth::{now, Auth, AuthError, Claims, RequirePlayer, Role};

pub fn routes() -> Api {
    Api::new("auth").route(
        "/api/v1/auth/token",
        post(exchange),
        [
            Op::post("Exchange a valid token for a narrower or shorter one; an admin mints player tokens for a team")
                .role("player")
                .example(r#"{"role": "player", "team": "team-1", "ttl": "48h"}"#)
                .body::<TokenRequest>(false)
                .json::<TokenResponse>(200),
        ],
    )
}

/// The body of a token request; every field is optional, an empty body is `{}`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct TokenRequest {
    /// Defaults to the caller's role.
    role: Option<Role>,
    /// humantime, e.g. `1h`; defaults to the rest of the caller's token's life.
    ttl: Option<String>,
    /// Defaults to the caller's subject (the team, for a player token minted by an admin); only
    /// an admin may choose another.
    subject: Option<String>,
    /// The team of a player token: required when an admin mints one, refused for other roles.
    /// A player's own team is kept (naming another is refused).
    team: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
struct TokenResponse {
    token: String,
    role: Role,
    subject: String,
    /// The team of a player token.
    #[serde(skip_serializing_if = "Option::is_none")]
    team: Option<String>,
    /// RFC 3339.
    expires_at: String,
}

async fn exchange(
    RequirePlayer(caller): RequirePlayer,
    State(auth): State<Auth>,
    body: Bytes,
) -> Result<Json<TokenResponse>, ApiError> {
    let Some(keys) = auth.keys() else {
        return Err(ApiError::BadRequest(
            "authentication is disabled (--no-auth): there are no tokens to exchange".to_string(),
        ));
    };
    let request = parse_request(&body)?;
    let claims = narrow(&caller, request, now())?;
    let token = keys
        .sign(&claims)
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    tracing::info!(caller = %caller.sub, subject = %claims.sub, role = %claims.role, team = claims.team.as_deref().unwrap_or(""), exp = claims.exp, "token exchanged");
    Ok(Json(TokenResponse {
        token,
        role: claims.role,
        team: claims.team.clone(),
        expires_at: rfc3339(claims.exp)?,
        subject: claims.sub,
    }))
}

fn parse_request(body: &[u8]) -> Result<TokenRequest, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(TokenRequest::default());
    }
    serde_json::from_slice(body).map_err(|e| ApiError::BadRequest(format!("request body: {e}")))
}

/// The claims of the token `caller` asked for at `now`, if they are no wider than its own.
fn narrow(caller: &Claims, request: TokenRequest, now: u64) -> Result<Claims, ApiError> {
    let role = request.role.unwrap_or(caller.role);
    if role > caller.role {
        return Err(ApiError::Forbidden(format!(
            "a {} token cannot mint a {role} token",
            caller.role
        )));
    }
    let team = team_of(caller, role, request.team)?;
    let subject = match (request.subject, &team) {
        (Some(subject), _) => subject,
        (None, Some(team)) if caller.role == Role::Admin => team.clone(),
        (None, _) => caller.sub.clone(),
    };
    if subject != caller.sub && caller.role < Role::Admin {
        return Err(ApiError::Forbidden(
            "only an admin may mint a token for another subject".to_string(),
        ));
    }
    let left = caller.exp.saturating_sub(now);
    if left == 0 {
        return Err(ApiError::Unauthorized(AuthError::Expired.to_string()));
    }
    let ttl = match request.ttl {
        None => Duration::from_secs(left),
        Some(text) => {
            let ttl = humantime::parse_duration(&text)
                .map_err(|e| ApiError::BadRequest(format!("ttl {text:?}: {e}")))?;
            if ttl.as_secs() > left {
                return Err(ApiError::Forbidden(format!(
                    "ttl {text} outlives the presented token, which expires in {left}s"
                )));
            }
            ttl
        }
    };
    Claims::new(role, &subject, ttl, now)
        .and_then(|c| c.with_team(team.as_deref()))
        .map_err(|e| ApiError::BadRequest(e.to_string()))
}

/// The team of the token `caller` asked for with `role`: a player keeps its own; only an admin
/// mints a player token for a team.
fn team_of(caller: &Claims, role: Role, team: Option<String>) -> Result<Option<String>, ApiError> {
    if role != Role::Player {
        return match team {
            Some(_) => Err(ApiError::BadRequest(format!(
                "only a player token carries a team; a {role} token acts for any team"
            ))),
            None => Ok(None),
        };
    }
    if caller.role == Role::Player {
        return match team {
            Some(team) if Some(&team) != caller.team.as_ref() => Err(ApiError::Forbidden(
                "a player token cannot mint a token for another team".to_string(),
            )),
            _ => Ok(caller.team.clone()),
        };
    }
    if caller.role < Role::Admin {
        return Err(ApiError::Forbidden(
            "only an admin may mint a player token".to_string(),
        ));
    }
    match team {
        Some(team) => Ok(Some(team)),
        None => Err(ApiError::BadRequest(AuthError::NoTeam.to_string())),
    }
}

fn rfc3339(unix: u64) -> Result<String, ApiError> {
    let internal = |e: &dyn std::fmt::Display| ApiError::Internal(format!("expiry {unix}: {e}"));
    let secs = i64::try_from(unix).map_err(|e| internal(&e))?;
    time::OffsetDateTime::from_unix_timestamp(secs)
        .map_err(|e| internal(&e))?
        .format(&time::format_description::well_known::Rfc3339)
        .map_err(|e| internal(&e))
}

#[cfg(test)]
mod tests {

    use axum::body::Body;
    use axum::Router;

    use crate::api::AppState;
    use axum::http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
    use axum::http::{Request, StatusCode};
    use axum::routing::get;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use http_body_util::BodyExt;
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    use serde_json::{json, Value};
    use tower::ServiceExt;

    use super::*;
    use crate::api::router;
    use crate::auth::{mint, verify, Keys, RequireAdmin, RequireAuthor, LEEWAY_SECS};

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
    const OTHER: &[u8] = b"fedcba9876543210fedcba9876543210";

    fn keys() -> Keys {
        Keys::new(SECRET).unwrap()
    }

    /// The real API plus test-only author and admin routes (no such routes exist yet).
    fn app(auth: Auth) -> Router {
        let state = AppState::for_tests(auth);
        let guarded = Router::new()
            .route(
                "/test/author",
                get(|RequireAuthor(c): RequireAuthor| async move { c.sub }),
            )
            .route(
                "/test/admin",
                get(|RequireAdmin(c): RequireAdmin| async move { c.sub }),
            )
            .with_state(state.clone());
        router(state).merge(guarded)
    }

    fn secured() -> Router {
        app(Auth::enabled(keys()))
    }

    fn token(role: Role) -> String {
        mint(&keys(), role, "alice", Duration::from_secs(3600)).unwrap()
    }

    struct Reply {
        status: StatusCode,
        challenge: Option<String>,
        body: Value,
    }

    async fn send(app: Router, method: &str, uri: &str, token: Option<&str>, body: &str) -> Reply {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(t) = token {
            req = req.header(AUTHORIZATION, format!("Bearer {t}"));
        }
        let resp = app
            .oneshot(req.body(Body::from(body.to_string())).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let challenge = resp
            .headers()
            .get(WWW_AUTHENTICATE)
            .map(|v| v.to_str().unwrap().to_string());
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let body = serde_json::from_slice(&bytes)
            .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        Reply {
            status,
            challenge,
            body,
        }
    }

    async fn get_status(token: Option<&str>) -> Reply {
        send(secured(), "GET", "/api/v1/status/challenges", token, "").await
    }

    /// 401, a Bearer challenge with `error="invalid_token"`, the JSON error format.
    fn assert_invalid_token(reply: &Reply) {
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.body);
        let challenge = reply.challenge.as_deref().unwrap();
        assert!(
            challenge.starts_with(r#"Bearer realm="beast""#),
            "{challenge}"
        );
        assert!(
            challenge.contains(r#"error="invalid_token""#),
            "{challenge}"
        );
        assert!(challenge.contains("error_description="), "{challenge}");
        assert_eq!(reply.body["error"]["code"], "Unauthorized");
    }

    fn b64(value: &Value) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap())
    }

    fn fresh_claims() -> Value {
        let now = now();
        json!({"sub": "mallory", "role": "admin", "iat": now, "exp": now + 3600})
    }

    #[tokio::test]
    async fn missing_token_is_401_with_a_bare_challenge() {
        let reply = get_status(None).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
        assert_eq!(reply.challenge.as_deref(), Some(r#"Bearer realm="beast""#));
        assert_eq!(reply.body["error"]["code"], "Unauthorized");
        assert_eq!(reply.body["error"]["message"], "missing bearer token");
    }

    #[tokio::test]
    async fn another_scheme_counts_as_no_token() {
        let req = Request::get("/api/v1/status/challenges")
            .header(AUTHORIZATION, "Basic YWRtaW46YWRtaW4=")
            .body(Body::empty())
            .unwrap();
        let resp = secured().oneshot(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(resp.headers()[WWW_AUTHENTICATE], r#"Bearer realm="beast""#);
    }

    #[tokio::test]
    async fn garbage_token_is_401() {
        assert_invalid_token(&get_status(Some("not-a-jwt")).await);
        assert_invalid_token(&get_status(Some("a.b.c")).await);
        let empty = send(secured(), "GET", "/api/v1/status/challenges", Some(""), "").await;
        assert_invalid_token(&empty);
    }

    #[tokio::test]
    async fn forged_token_signed_with_another_key_is_401() {
        let forged = mint(
            &Keys::new(OTHER).unwrap(),
            Role::Admin,
            "mallory",
            Duration::from_secs(60),
        )
        .unwrap();
        let reply = get_status(Some(&forged)).await;
        assert_invalid_token(&reply);
        assert!(reply.challenge.unwrap().contains("signature"));
    }

    #[tokio::test]
    async fn tampered_claims_are_401() {
        let good = token(Role::Viewer);
        let parts: Vec<&str> = good.split('.').collect();
        let tampered = format!("{}.{}.{}", parts[0], b64(&fresh_claims()), parts[2]);
        assert_invalid_token(&get_status(Some(&tampered)).await);
    }

    #[tokio::test]
    async fn alg_none_token_is_401() {
        let header = b64(&json!({"alg": "none", "typ": "JWT"}));
        let unsigned = format!("{header}.{}.", b64(&fresh_claims()));
        assert_invalid_token(&get_status(Some(&unsigned)).await);
        // Upper case and an empty signature segment dropped altogether.
        let header = b64(&json!({"alg": "NONE", "typ": "JWT"}));
        let unsigned = format!("{header}.{}", b64(&fresh_claims()));
        assert_invalid_token(&get_status(Some(&unsigned)).await);
    }

    #[tokio::test]
    async fn other_algorithms_are_401_even_with_the_right_key() {
        let claims = fresh_claims();
        let hs512 = jsonwebtoken::encode(
            &Header::new(Algorithm::HS512),
            &claims,
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap();
        let reply = get_status(Some(&hs512)).await;
        assert_invalid_token(&reply);
        assert!(reply.challenge.unwrap().contains("only HS256"));
        // An RS256 header over an HMAC signature: the key-confusion attack.
        let good = token(Role::Admin);
        let parts: Vec<&str> = good.split('.').collect();
        let header = b64(&json!({"alg": "RS256", "typ": "JWT"}));
        let confused = format!("{header}.{}.{}", parts[1], parts[2]);
        assert_invalid_token(&get_status(Some(&confused)).await);
    }

    #[tokio::test]
    async fn expired_token_is_401() {
        let now = now();
        let claims = Claims {
            sub: "alice".into(),
            role: Role::Admin,
            iat: now - 7200,
            exp: now - LEEWAY_SECS - 60,
            team: None,
        };
        let expired = keys().sign(&claims).unwrap();
        let reply = get_status(Some(&expired)).await;
        assert_invalid_token(&reply);
        assert_eq!(reply.body["error"]["message"], "token expired");
    }

    #[tokio::test]
    async fn token_without_exp_is_401() {
        let claims = json!({"sub": "alice", "role": "admin", "iat": now()});
        let endless = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap();
        let reply = get_status(Some(&endless)).await;
        assert_invalid_token(&reply);
        assert_eq!(
            reply.body["error"]["message"],
            r#"token lacks the required claim "exp""#
        );
    }

    #[tokio::test]
    async fn token_without_role_is_401() {
        let now = now();
        let claims = json!({"sub": "alice", "iat": now, "exp": now + 60});
        let roleless = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap();
        let reply = get_status(Some(&roleless)).await;
        assert_invalid_token(&reply);
        assert!(reply.challenge.unwrap().contains("role"));
    }

    #[tokio::test]
    async fn unknown_role_in_a_signed_token_is_401() {
        let now = now();
        let claims = json!({"sub": "alice", "role": "root", "iat": now, "exp": now + 60});
        let odd = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap();
        assert_invalid_token(&get_status(Some(&odd)).await);
    }

    #[tokio::test]
    async fn role_too_low_is_403() {
        let viewer = token(Role::Viewer);
        let reply = send(secured(), "GET", "/test/author", Some(&viewer), "").await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN);
        assert_eq!(reply.challenge, None);
        assert_eq!(reply.body["error"]["code"], "Forbidden");
        let author = token(Role::Author);
        let reply = send(secured(), "GET", "/test/admin", Some(&author), "").await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN);
    }

    #[tokio::test]
    async fn higher_roles_pass_lower_guards() {
        let admin = token(Role::Admin);
        let reply = send(secured(), "GET", "/test/author", Some(&admin), "").await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.body, "alice");
        let author = token(Role::Author);
        let reply = send(secured(), "GET", "/test/author", Some(&author), "").await;
        assert_eq!(reply.status, StatusCode::OK);
    }

    #[tokio::test]
    async fn valid_viewer_reads_status() {
        let viewer = token(Role::Viewer);
        let reply = get_status(Some(&viewer)).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.body, json!({"items": []}));
        let one = send(
            secured(),
            "GET",
            "/api/v1/status/challenges/nope",
            Some(&viewer),
            "",
        )
        .await;
        assert_eq!(one.status, StatusCode::NOT_FOUND);
        let anonymous = send(secured(), "GET", "/api/v1/status/challenges/nope", None, "").await;
        assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    }

    #[tokio::test]
    async fn health_endpoints_stay_open() {
        let reply = send(secured(), "GET", "/healthz", None, "").await;
        assert_eq!(reply.status, StatusCode::OK);
        let reply = send(secured(), "GET", "/readyz", None, "").await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(reply.challenge, None);
    }

    async fn exchange_with(caller: &str, body: &str) -> Reply {
        send(secured(), "POST", "/api/v1/auth/token", Some(caller), body).await
    }

    #[tokio::test]
    async fn exchange_narrows_role_and_ttl() {
        let admin = token(Role::Admin);
        let reply = exchange_with(&admin, r#"{"role": "viewer", "ttl": "10m"}"#).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        assert_eq!(reply.body["role"], "viewer");
        assert_eq!(reply.body["subject"], "alice");
        let claims = verify(&keys(), reply.body["token"].as_str().unwrap()).unwrap();
        assert_eq!(reply.body["expiresAt"], rfc3339(claims.exp).unwrap());
        assert!(reply.body["expiresAt"].as_str().unwrap().ends_with('Z'));
        assert_eq!(claims.role, Role::Viewer);
        assert_eq!(claims.exp - claims.iat, 600);
        // The narrower token works where a viewer may go, and nowhere else.
        let narrowed = reply.body["token"].as_str().unwrap().to_string();
        assert_eq!(get_status(Some(&narrowed)).await.status, StatusCode::OK);
        let author = send(secured(), "GET", "/test/author", Some(&narrowed), "").await;
        assert_eq!(author.status, StatusCode::FORBIDDEN);
    }

    #[tokio::test]
    async fn exchange_with_an_empty_body_keeps_role_subject_and_expiry() {
        let caller = token(Role::Author);
        let caller_exp = verify(&keys(), &caller).unwrap().exp;
        let reply = exchange_with(&caller, "").await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        let claims = verify(&keys(), reply.body["token"].as_str().unwrap()).unwrap();
        assert_eq!((claims.role, claims.sub.as_str()), (Role::Author, "alice"));
        assert!(claims.exp <= caller_exp);
    }

    #[tokio::test]
    async fn exchange_for_a_wider_role_is_403() {
        let viewer = token(Role::Viewer);
        let reply = exchange_with(&viewer, r#"{"role": "admin"}"#).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN);
        assert_eq!(reply.body["error"]["code"], "Forbidden");
    }

    #[tokio::test]
    async fn exchange_for_a_longer_life_is_403_not_clamped() {
        let caller = token(Role::Admin); // one hour
        let reply = exchange_with(&caller, r#"{"ttl": "2h"}"#).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN);
        assert!(reply.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("outlives"));
    }

    #[tokio::test]
    async fn exchange_for_another_subject_needs_admin() {
        let author = token(Role::Author);
        let reply = exchange_with(&author, r#"{"subject": "bob"}"#).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN);
        let admin = token(Role::Admin);
        let reply = exchange_with(&admin, r#"{"subject": "ci-bot", "role": "author"}"#).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.body["subject"], "ci-bot");
    }

    #[tokio::test]
    async fn exchange_with_a_bad_body_is_400() {
        let admin = token(Role::Admin);
        for body in [
            "{",
            r#"{"role": "root"}"#,
            r#"{"ttl": "forever"}"#,
            r#"{"ttl": "0s"}"#,
            r#"{"rôle": "viewer"}"#,
            r#"{"subject": ""}"#,
        ] {
            let reply = exchange_with(&admin, body).await;
            assert_eq!(
                reply.status,
                StatusCode::BAD_REQUEST,
                "{body}: {}",
                reply.body
            );
            assert_eq!(reply.body["error"]["code"], "BadRequest");
        }
    }

    #[tokio::test]
    async fn exchange_needs_a_valid_token() {
        let reply = send(secured(), "POST", "/api/v1/auth/token", None, "{}").await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
        let forged = mint(
            &Keys::new(OTHER).unwrap(),
            Role::Admin,
            "x",
            Duration::from_secs(60),
        )
        .unwrap();
        assert_invalid_token(&exchange_with(&forged, "{}").await);
    }

    #[tokio::test]
    async fn no_auth_lets_everything_through_as_admin() {
        let open = || app(Auth::disabled());
        let reply = send(open(), "GET", "/api/v1/status/challenges", None, "").await;
        assert_eq!(reply.status, StatusCode::OK);
        let reply = send(open(), "GET", "/test/admin", None, "").await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.body, "anonymous");
        // Even a garbage token: the operator chose not to check.
        let reply = send(open(), "GET", "/test/admin", Some("junk"), "").await;
        assert_eq!(reply.status, StatusCode::OK);
        let reply = send(open(), "POST", "/api/v1/auth/token", None, "{}").await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST);
        assert!(reply.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("--no-auth"));
    }

    #[tokio::test]
    async fn an_admin_mints_player_tokens_for_a_team() {
        let admin = token(Role::Admin);
        let reply = exchange_with(
            &admin,
            r#"{"role": "player", "team": "team-1", "ttl": "1h"}"#,
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        assert_eq!(reply.body["team"], "team-1");
        assert_eq!(reply.body["subject"], "team-1");
        let player = reply.body["token"].as_str().unwrap().to_string();
        let claims = verify(&keys(), &player).unwrap();
        assert_eq!(
            (claims.role, claims.team.as_deref()),
            (Role::Player, Some("team-1"))
        );
        // A player token reaches no viewer route.
        assert_eq!(
            get_status(Some(&player)).await.status,
            StatusCode::FORBIDDEN
        );
        // A player may shorten its own token, keeping its team; never for another team.
        let reply = exchange_with(&player, r#"{"ttl": "10m"}"#).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        assert_eq!(reply.body["team"], "team-1");
        let reply = exchange_with(&player, r#"{"team": "team-2"}"#).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN);
        let reply = exchange_with(&player, r#"{"role": "viewer"}"#).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN);
        // Only an admin mints player tokens; a team needs the player role and vice versa.
        let author = token(Role::Author);
        let reply = exchange_with(&author, r#"{"role": "player", "team": "t"}"#).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.body);
        let reply = exchange_with(&admin, r#"{"role": "player"}"#).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.body);
        let reply = exchange_with(&admin, r#"{"role": "viewer", "team": "t"}"#).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.body);
        let reply = exchange_with(&admin, r#"{"role": "player", "team": ""}"#).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.body);
    }

    #[tokio::test]
    async fn a_player_token_without_a_team_is_401() {
        let now = now();
        let claims = json!({"sub": "p", "role": "player", "iat": now, "exp": now + 60});
        let teamless = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap();
        let reply = send(
            secured(),
            "GET",
            "/api/v1/info/challenges",
            Some(&teamless),
            "",
        )
        .await;
        assert_invalid_token(&reply);
        assert_eq!(
            reply.body["error"]["message"],
            "player token without a team claim"
        );
    }

    #[test]
    fn narrow_refuses_an_expired_caller() {
        let caller = Claims {
            sub: "a".into(),
            role: Role::Admin,
            iat: 0,
            exp: 100,
            team: None,
        };
        let err = narrow(&caller, TokenRequest::default(), 100).unwrap_err();
        assert!(matches!(err, ApiError::Unauthorized(_)));
    }
}
