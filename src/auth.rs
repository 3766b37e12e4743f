//! Authentication: roles, JWT claims, signing keys, minting and verifying tokens, and the axum
//! extractors ([`RequirePlayer`], [`RequireViewer`], [`RequireAuthor`], [`RequireAdmin`]) that
//! guard API routes.
//!
//! Tokens are HS256 JWTs signed with one shared secret (`BEAST_JWT_SECRET` or a file). The
//! algorithm is pinned (a token's own `alg` header is never trusted), `exp` is required and the
//! leeway is [`LEEWAY_SECS`]. Roles are ordered `player < viewer < author < admin`. A player token
//! carries a `team` claim (SPEC §8) and no other role does; a token that breaks this is refused.
//!
//! [`Auth`] is what the API keeps in its state: the keys, or nothing when the operator runs with
//! `--no-auth`, in which case every request is an anonymous admin.
//!
//! This module never logs or formats a secret or a token; error messages describe what is wrong
//! with a token without echoing it.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::api::ApiError;

/// Shortest secret accepted: HS256 wants at least as many key bytes as the hash has (RFC 7518 §3.2).
pub const MIN_SECRET_LEN: usize = 32;

/// Clock skew tolerated on `exp`.
pub const LEEWAY_SECS: u64 = 5;

/// Longest subject accepted when minting.
const MAX_SUBJECT_LEN: usize = 128;

/// Subject of the anonymous caller when authentication is disabled.
pub const ANONYMOUS: &str = "anonymous";

/// Everything that can go wrong loading a secret, minting or verifying a token.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error(
        "no JWT secret: set BEAST_JWT_SECRET (--jwt-secret) or BEAST_JWT_SECRET_FILE \
         (--jwt-secret-file), or run with --no-auth"
    )]
    NoSecret,
    #[error(
        "both a JWT secret (BEAST_JWT_SECRET / --jwt-secret) and a secret file \
         (BEAST_JWT_SECRET_FILE / --jwt-secret-file) are set: keep one"
    )]
    TwoSecrets,
    #[error("cannot read the JWT secret file {path}: {source}")]
    SecretFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the JWT secret is {len} bytes long; at least {MIN_SECRET_LEN} are required \
         (e.g. `openssl rand -hex 32`)"
    )]
    ShortSecret { len: usize },
    #[error("unknown role {0:?}: expected player, viewer, author or admin")]
    UnknownRole(String),
    #[error("invalid team: {0}")]
    InvalidTeam(String),
    #[error("a player token needs a team (--team, or \"team\" when minting through the API)")]
    NoTeam,
    #[error("only a player token carries a team; a {0} token acts for any team with ?team=")]
    TeamOnRole(Role),
    #[error("invalid subject: {0}")]
    InvalidSubject(&'static str),
    #[error("invalid ttl: {0}")]
    InvalidTtl(&'static str),
    #[error("cannot sign the token: {0}")]
    Sign(#[source] jsonwebtoken::errors::Error),

    // Why a presented token is refused. The messages are sent to clients: they never echo a token.
    #[error("missing bearer token")]
    MissingToken,
    #[error("token expired")]
    Expired,
    #[error("token signature does not verify")]
    BadSignature,
    #[error("token algorithm not accepted (only HS256)")]
    Algorithm,
    #[error("token lacks the required claim {0:?}")]
    MissingClaim(String),
    #[error("token is malformed")]
    Malformed,
    #[error("player token without a team claim")]
    PlayerWithoutTeam,
    #[error("only a player token may carry a team claim")]
    TeamWithoutPlayer,
}

/// What a caller may do. The order is meaningful: `Player < Viewer < Author < Admin` (the
/// declaration order: keep it).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A CTF team: the info namespace and its own team's instances only.
    Player,
    Viewer,
    Author,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Player => "player",
            Role::Viewer => "viewer",
            Role::Author => "author",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = AuthError;

    fn from_str(s: &str) -> Result<Role, AuthError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "player" => Ok(Role::Player),
            "viewer" => Ok(Role::Viewer),
            "author" => Ok(Role::Author),
            "admin" => Ok(Role::Admin),
            _ => Err(AuthError::UnknownRole(s.to_string())),
        }
    }
}

/// The payload of a beast token. Times are seconds since the Unix epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub role: Role,
    pub iat: u64,
    pub exp: u64,
    /// The team a player acts for; only player tokens carry one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
}

impl Claims {
    /// Claims for a token issued at `now` that lives `ttl`; refuses an empty or odd subject and a
    /// ttl under a second.
    pub fn new(role: Role, subject: &str, ttl: Duration, now: u64) -> Result<Claims, AuthError> {
        check_subject(subject)?;
        if ttl.as_secs() == 0 {
            return Err(AuthError::InvalidTtl("must be at least 1s"));
        }
        let exp = now
            .checked_add(ttl.as_secs())
            .ok_or(AuthError::InvalidTtl("too long"))?;
        Ok(Claims {
            sub: subject.to_string(),
            role,
            iat: now,
            exp,
            team: None,
        })
    }

    /// The same claims acting for `team`: required for a player, refused for any other role.
    pub fn with_team(mut self, team: Option<&str>) -> Result<Claims, AuthError> {
        match (self.role, team) {
            (Role::Player, Some(team)) => {
                crate::instances::check_team(team)
                    .map_err(|e| AuthError::InvalidTeam(e.to_string()))?;
                self.team = Some(team.to_string());
                Ok(self)
            }
            (Role::Player, None) => Err(AuthError::NoTeam),
            (role, Some(_)) => Err(AuthError::TeamOnRole(role)),
            (_, None) => {
                self.team = None;
                Ok(self)
            }
        }
    }

    /// The caller of every request when authentication is disabled: an admin that never expires.
    pub fn anonymous() -> Claims {
        Claims {
            sub: ANONYMOUS.to_string(),
            role: Role::Admin,
            iat: 0,
            exp: u64::MAX,
            team: None,
        }
    }
}

fn check_subject(subject: &str) -> Result<(), AuthError> {
    if subject.is_empty() {
        return Err(AuthError::InvalidSubject("must not be empty"));
    }
    if subject.len() > MAX_SUBJECT_LEN {
        return Err(AuthError::InvalidSubject("longer than 128 bytes"));
    }
    if subject.chars().any(char::is_control) {
        return Err(AuthError::InvalidSubject("contains control characters"));
    }
    Ok(())
}

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

/// The signing and verifying keys, with the validation rules pinned.
#[derive(Clone)]
pub struct Keys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Keys { HS256, .. }")
    }
}

impl Keys {
    /// Keys from a secret of at least [`MIN_SECRET_LEN`] bytes.
    pub fn new(secret: &[u8]) -> Result<Keys, AuthError> {
        check_secret_len(secret)?;
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = vec![Algorithm::HS256];
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.validate_exp = true;
        validation.leeway = LEEWAY_SECS;
        validation.validate_aud = false;
        Ok(Keys {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
        })
    }

    /// Signs `claims` as an HS256 token.
    pub fn sign(&self, claims: &Claims) -> Result<String, AuthError> {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
            .map_err(AuthError::Sign)
    }

    /// Checks a token's algorithm, signature and expiry, and returns its claims.
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        let raw = jsonwebtoken::decode::<RawClaims>(token, &self.decoding, &self.validation)
            .map_err(|e| refusal(e.into_kind()))?
            .claims;
        // The validation already required `sub` and `exp`; `role` is ours to require.
        let missing = |claim: &str| AuthError::MissingClaim(claim.to_string());
        let role = raw.role.ok_or_else(|| missing("role"))?;
        match (role, &raw.team) {
            (Role::Player, None) => return Err(AuthError::PlayerWithoutTeam),
            (Role::Player, Some(team)) if crate::instances::check_team(team).is_err() => {
                return Err(AuthError::Malformed)
            }
            (Role::Player, Some(_)) | (_, None) => {}
            (_, Some(_)) => return Err(AuthError::TeamWithoutPlayer),
        }
        Ok(Claims {
            sub: raw.sub.ok_or_else(|| missing("sub"))?,
            role,
            iat: raw.iat.unwrap_or(0),
            exp: raw.exp.ok_or_else(|| missing("exp"))?,
            team: raw.team,
        })
    }
}

/// Claims as they arrive: every field optional, so that a missing one is reported by name
/// rather than as a malformed token.
#[derive(Deserialize)]
struct RawClaims {
    sub: Option<String>,
    role: Option<Role>,
    iat: Option<u64>,
    exp: Option<u64>,
    team: Option<String>,
}

/// Why a token is refused, in words fit for the client.
fn refusal(kind: ErrorKind) -> AuthError {
    match kind {
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::InvalidSignature => AuthError::BadSignature,
        ErrorKind::InvalidAlgorithm
        | ErrorKind::InvalidAlgorithmName
        | ErrorKind::MissingAlgorithm => AuthError::Algorithm,
        ErrorKind::MissingRequiredClaim(claim) => AuthError::MissingClaim(claim),
        _ => AuthError::Malformed,
    }
}

fn check_secret_len(secret: &[u8]) -> Result<(), AuthError> {
    if secret.len() < MIN_SECRET_LEN {
        return Err(AuthError::ShortSecret { len: secret.len() });
    }
    Ok(())
}

/// The secret from `--jwt-secret` / `BEAST_JWT_SECRET` or from `--jwt-secret-file` /
/// `BEAST_JWT_SECRET_FILE`. Setting both is an error (which one wins would be a guess). A file's
/// trailing newline (`\n` or `\r\n`) is dropped, as editors and `echo` add one. Refuses a secret
/// shorter than [`MIN_SECRET_LEN`] bytes.
pub fn load_secret(secret: Option<String>, file: Option<PathBuf>) -> Result<Vec<u8>, AuthError> {
    let bytes = match (secret, file) {
        (Some(_), Some(_)) => return Err(AuthError::TwoSecrets),
        (None, None) => return Err(AuthError::NoSecret),
        (Some(secret), None) => secret.into_bytes(),
        (None, Some(path)) => read_secret_file(path)?,
    };
    check_secret_len(&bytes)?;
    Ok(bytes)
}

fn read_secret_file(path: PathBuf) -> Result<Vec<u8>, AuthError> {
    let mut bytes =
        std::fs::read(&path).map_err(|source| AuthError::SecretFile { path, source })?;
    if bytes.last() == Some(&b'\n') {
        bytes.pop();
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
    }
    Ok(bytes)
}

/// Mints a token for `subject` with `role` that expires `ttl` from now (not a player: see
/// [`mint_for_team`]).
pub fn mint(keys: &Keys, role: Role, subject: &str, ttl: Duration) -> Result<String, AuthError> {
    keys.sign(&Claims::new(role, subject, ttl, now())?.with_team(None)?)
}

/// Mints a token with `role` and, for a player, the `team` it acts for (required for a player,
/// refused for any other role).
pub fn mint_for_team(
    keys: &Keys,
    role: Role,
    subject: &str,
    team: Option<&str>,
    ttl: Duration,
) -> Result<String, AuthError> {
    keys.sign(&Claims::new(role, subject, ttl, now())?.with_team(team)?)
}

/// Verifies a token; see [`Keys::verify`].
pub fn verify(keys: &Keys, token: &str) -> Result<Claims, AuthError> {
    keys.verify(token)
}

/// The API's authentication state: keys, or disabled (`--no-auth`).
#[derive(Debug, Clone)]
pub struct Auth(Option<Arc<Keys>>);

impl Auth {
    pub fn enabled(keys: Keys) -> Auth {
        Auth(Some(Arc::new(keys)))
    }

    /// `--no-auth`: every request is an anonymous admin.
    pub fn disabled() -> Auth {
        Auth(None)
    }

    pub fn keys(&self) -> Option<&Keys> {
        self.0.as_deref()
    }

    pub fn is_disabled(&self) -> bool {
        self.0.is_none()
    }

    /// Who sent the request, at any role; `Err` when its credentials are missing or invalid.
    pub fn authenticate(&self, parts: &Parts) -> Result<Claims, AuthError> {
        let Some(keys) = self.keys() else {
            return Ok(Claims::anonymous());
        };
        keys.verify(bearer(parts)?)
    }

    /// Who sent the request, if their role is at least `min`.
    pub fn authorize(&self, parts: &Parts, min: Role) -> Result<Claims, ApiError> {
        let claims = self.authenticate(parts).map_err(unauthorized)?;
        if claims.role < min {
            return Err(ApiError::Forbidden(format!(
                "this needs the {min} role; the token has {}",
                claims.role
            )));
        }
        Ok(claims)
    }
}

/// The token of an `Authorization: Bearer <token>` header. Any other scheme counts as no token.
fn bearer(parts: &Parts) -> Result<&str, AuthError> {
    let value = parts
        .headers
        .get(AUTHORIZATION)
        .ok_or(AuthError::MissingToken)?
        .to_str()
        .map_err(|_| AuthError::Malformed)?;
    let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::MissingToken);
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(AuthError::Malformed);
    }
    Ok(token)
}

fn unauthorized(err: AuthError) -> ApiError {
    match err {
        AuthError::MissingToken => ApiError::MissingToken(err.to_string()),
        other => ApiError::Unauthorized(other.to_string()),
    }
}

/// Declares an extractor that admits callers of at least one role and yields their claims.
macro_rules! require_role {
    ($(#[$doc:meta])* $name:ident, $role:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone)]
        pub struct $name(pub Claims);

        impl<S> FromRequestParts<S> for $name
        where
            Auth: FromRef<S>,
            S: Send + Sync,
        {
            type Rejection = ApiError;

            async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
                Auth::from_ref(state).authorize(parts, $role).map($name)
            }
        }
    };
}

require_role!(
    /// Any valid token (player, viewer, author or admin): the info namespace and instances.
    RequirePlayer,
    Role::Player
);
require_role!(
    /// A token with the viewer role or above (a player is refused).
    RequireViewer,
    Role::Viewer
);
require_role!(
    /// A token with the author or admin role.
    RequireAuthor,
    Role::Author
);
require_role!(
    /// A token with the admin role.
    RequireAdmin,
    Role::Admin
);

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn keys() -> Keys {
        Keys::new(SECRET).unwrap()
    }

    #[test]
    fn roles_are_ordered_and_parse() {
        assert!(Role::Player < Role::Viewer);
        assert!(Role::Viewer < Role::Author && Role::Author < Role::Admin);
        assert_eq!("player".parse::<Role>().unwrap(), Role::Player);
        assert_eq!("Admin".parse::<Role>().unwrap(), Role::Admin);
        assert_eq!(" viewer ".parse::<Role>().unwrap(), Role::Viewer);
        let err = "root".parse::<Role>().unwrap_err().to_string();
        assert!(err.contains("\"root\"") && err.contains("player, viewer, author or admin"));
        assert_eq!(serde_json::to_string(&Role::Author).unwrap(), "\"author\"");
    }

    #[test]
    fn mint_then_verify_roundtrips() {
        let keys = keys();
        let token = mint(&keys, Role::Author, "alice", Duration::from_secs(60)).unwrap();
        let claims = verify(&keys, &token).unwrap();
        assert_eq!(claims.sub, "alice");
        assert_eq!(claims.role, Role::Author);
        assert_eq!(claims.exp - claims.iat, 60);
    }

    #[test]
    fn another_key_does_not_verify() {
        let other = Keys::new(b"another secret that is long enough!!").unwrap();
        let token = mint(&other, Role::Admin, "mallory", Duration::from_secs(60)).unwrap();
        assert!(matches!(
            verify(&keys(), &token),
            Err(AuthError::BadSignature)
        ));
    }

    #[test]
    fn expired_beyond_leeway_is_refused_within_leeway_accepted() {
        let keys = keys();
        let now = now();
        let mut claims = Claims::new(Role::Viewer, "bob", Duration::from_secs(1), now).unwrap();
        claims.exp = now - LEEWAY_SECS - 10;
        assert!(matches!(
            keys.verify(&keys.sign(&claims).unwrap()),
            Err(AuthError::Expired)
        ));
        claims.exp = now - 1;
        assert!(keys.verify(&keys.sign(&claims).unwrap()).is_ok());
    }

    #[test]
    fn mint_refuses_bad_subject_and_ttl() {
        let keys = keys();
        assert!(matches!(
            mint(&keys, Role::Viewer, "", Duration::from_secs(60)),
            Err(AuthError::InvalidSubject(_))
        ));
        assert!(matches!(
            mint(&keys, Role::Viewer, "a\nb", Duration::from_secs(60)),
            Err(AuthError::InvalidSubject(_))
        ));
        assert!(matches!(
            mint(&keys, Role::Viewer, "x", Duration::from_millis(500)),
            Err(AuthError::InvalidTtl(_))
        ));
    }

    #[test]
    fn load_secret_rejects_short_missing_and_both() {
        let err = load_secret(Some("short".into()), None).unwrap_err();
        assert!(matches!(err, AuthError::ShortSecret { len: 5 }));
        assert!(err.to_string().contains("at least 32"));
        assert!(!err.to_string().contains("short\""));
        assert!(matches!(load_secret(None, None), Err(AuthError::NoSecret)));
        assert!(matches!(
            load_secret(
                Some(String::from_utf8(SECRET.to_vec()).unwrap()),
                Some("f".into())
            ),
            Err(AuthError::TwoSecrets)
        ));
        assert!(Keys::new(b"31 bytes is one byte too short.").is_err());
    }

    #[test]
    fn load_secret_from_file_drops_one_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, b"0123456789abcdef0123456789abcdef\r\n").unwrap();
        assert_eq!(load_secret(None, Some(path.clone())).unwrap(), SECRET);
        // 31 bytes plus a newline is still too short: the newline does not count.
        std::fs::write(&path, b"0123456789abcdef0123456789abcde\n").unwrap();
        assert!(matches!(
            load_secret(None, Some(path)),
            Err(AuthError::ShortSecret { len: 31 })
        ));
        assert!(matches!(
            load_secret(None, Some(dir.path().join("missing"))),
            Err(AuthError::SecretFile { .. })
        ));
    }

    #[test]
    fn a_player_token_carries_its_team_and_no_other_role_does() {
        let keys = keys();
        let t = mint_for_team(
            &keys,
            Role::Player,
            "t1",
            Some("team-1"),
            Duration::from_secs(60),
        );
        let claims = verify(&keys, &t.unwrap()).unwrap();
        assert_eq!(
            (claims.role, claims.team.as_deref()),
            (Role::Player, Some("team-1"))
        );
        // Other roles serialise no team claim at all.
        let admin = mint(&keys, Role::Admin, "a", Duration::from_secs(60)).unwrap();
        assert_eq!(verify(&keys, &admin).unwrap().team, None);
        let payload = admin.split('.').nth(1).unwrap();
        use base64::Engine;
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap();
        assert!(!String::from_utf8(payload).unwrap().contains("team"));
        // Minting refuses a player without a team and a team on another role.
        let ttl = Duration::from_secs(60);
        assert!(matches!(
            mint_for_team(&keys, Role::Player, "p", None, ttl),
            Err(AuthError::NoTeam)
        ));
        assert!(matches!(
            mint(&keys, Role::Player, "p", ttl),
            Err(AuthError::NoTeam)
        ));
        assert!(matches!(
            mint_for_team(&keys, Role::Author, "p", Some("t"), ttl),
            Err(AuthError::TeamOnRole(Role::Author))
        ));
        assert!(matches!(
            mint_for_team(&keys, Role::Player, "p", Some(""), ttl),
            Err(AuthError::InvalidTeam(_))
        ));
        // Signed tokens that break the rule are refused when presented.
        let now = now();
        let mut bare = Claims::new(Role::Player, "p", ttl, now).unwrap();
        assert!(matches!(
            keys.verify(&keys.sign(&bare).unwrap()),
            Err(AuthError::PlayerWithoutTeam)
        ));
        bare.role = Role::Viewer;
        bare.team = Some("t".into());
        assert!(matches!(
            keys.verify(&keys.sign(&bare).unwrap()),
            Err(AuthError::TeamWithoutPlayer)
        ));
    }

    #[test]
    fn keys_debug_hides_the_secret() {
        let shown = format!("{:?}", keys());
        assert!(!shown.contains("0123456789"));
    }
}
