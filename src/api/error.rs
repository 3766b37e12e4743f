//! The one error type of the API: maps to a status code and `{"error": {"code", "message"}}`.
//! Internal details are logged, never sent.

use axum::http::header::WWW_AUTHENTICATE;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    /// 401 for a request without a bearer token: the challenge carries no error code (RFC 6750 §3).
    #[error("{0}")]
    MissingToken(String),
    /// 401 for a token that is malformed, forged, expired or uses another algorithm.
    #[error("{0}")]
    Unauthorized(String),
    /// 403: a valid token whose role is too low, or a request beyond what the token allows.
    #[error("{0}")]
    Forbidden(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, message) = match &self {
            ApiError::NotFound(m) => (StatusCode::NOT_FOUND, "NotFound", m.clone()),
            ApiError::BadRequest(m) => (StatusCode::BAD_REQUEST, "BadRequest", m.clone()),
            ApiError::MissingToken(m) | ApiError::Unauthorized(m) => {
                (StatusCode::UNAUTHORIZED, "Unauthorized", m.clone())
            }
            ApiError::Forbidden(m) => (StatusCode::FORBIDDEN, "Forbidden", m.clone()),
            ApiError::Internal(m) => {
                tracing::error!(error = %m, "internal error answering a request");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Internal",
                    "internal error".to_string(),
                )
            }
        };
        let body = serde_json::json!({"error": {"code": code, "message": message}});
        let mut response = (status, Json(body)).into_response();
        if let Some(challenge) = self.challenge() {
            response.headers_mut().insert(WWW_AUTHENTICATE, challenge);
        }
        response
    }
}

impl ApiError {
    /// The `WWW-Authenticate` header of a 401 (RFC 6750 §3).
    fn challenge(&self) -> Option<HeaderValue> {
        let value = match self {
            ApiError::MissingToken(_) => r#"Bearer realm="beast""#.to_string(),
            ApiError::Unauthorized(m) => format!(
                r#"Bearer realm="beast", error="invalid_token", error_description="{}""#,
                quoted_text(m)
            ),
            _ => return None,
        };
        Some(HeaderValue::from_str(&value).unwrap_or_else(|_| {
            HeaderValue::from_static(r#"Bearer realm="beast", error="invalid_token""#)
        }))
    }
}

/// `text` fit for a quoted-string: printable ASCII without `"` or `\`.
fn quoted_text(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '"' => '\'',
            '\\' => '/',
            c if c.is_ascii_graphic() || c == ' ' => c,
            _ => '?',
        })
        .collect()
}
