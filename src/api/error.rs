//! The one error type of the API: maps to a status code and `{"error": {"code", "message"}}`
//! (plus `details` for validation errors). Internal details are logged, never sent.

use axum::http::{header, HeaderValue, StatusCode};
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
    /// The request conflicts with the current state (name owned by a file, already exists).
    #[error("{0}")]
    Conflict(String),
    /// `If-Match` names a version that is not the current one.
    #[error("{0}")]
    PreconditionFailed(String),
    /// The body is larger than the server accepts.
    #[error("{0}")]
    TooLarge(String),
    /// A manifest that does not validate: one message per error, `file:line:col: path: message`.
    #[error("{message}")]
    Invalid {
        message: String,
        details: Vec<String>,
    },
    /// 429: a limit was reached; `Retry-After` says when to ask again (whole seconds, at least 1).
    #[error("{message}")]
    TooManyRequests {
        message: String,
        retry_after: std::time::Duration,
    },
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// An invalid manifest from its errors.
    pub fn invalid(details: Vec<String>) -> ApiError {
        let message = match details.as_slice() {
            [one] => one.clone(),
            [first, rest @ ..] => format!("{first} (and {} more)", rest.len()),
            [] => "invalid manifest".to_string(),
        };
        ApiError::Invalid { message, details }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "NotFound"),
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "BadRequest"),
            ApiError::MissingToken(_) | ApiError::Unauthorized(_) => {
                (StatusCode::UNAUTHORIZED, "Unauthorized")
            }
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "Forbidden"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "Conflict"),
            ApiError::PreconditionFailed(_) => {
                (StatusCode::PRECONDITION_FAILED, "PreconditionFailed")
            }
            ApiError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "TooLarge"),
            ApiError::Invalid { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "Invalid"),
            ApiError::TooManyRequests { .. } => (StatusCode::TOO_MANY_REQUESTS, "TooManyRequests"),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "Unavailable"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "Internal"),
        };
        let mut error = serde_json::json!({"code": code, "message": self.to_string()});
        match &self {
            ApiError::Internal(m) => {
                tracing::error!(error = %m, "internal error answering a request");
                error["message"] = "internal error".into();
            }
            ApiError::Invalid { details, .. } => error["details"] = details.clone().into(),
            _ => {}
        }
        let mut response = (status, Json(serde_json::json!({ "error": error }))).into_response();
        if let Some(challenge) = self.challenge() {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, challenge);
        }
        if let ApiError::TooManyRequests { retry_after, .. } = &self {
            // Whole seconds, rounded up: never earlier than the limit allows, never 0.
            let secs = (retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0)).max(1);
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
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
