//! The HTTP API: `fn router(state) -> Router`, handlers grouped by namespace in small files.
//!
//! Today: `/healthz`, `/readyz` (open), the auth namespace and the read-only status namespace
//! (viewer). Handlers only read shared state (desired store, status board, readiness, auth keys);
//! they never talk to the engine. Routes are guarded by the extractors of [`crate::auth`].

mod auth;
mod error;
mod status;

use std::sync::Arc;

use axum::extract::FromRef;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};

pub use error::ApiError;

use crate::auth::Auth;
use crate::desired::DesiredStore;
use crate::reconcile::Readiness;
use crate::status::StatusBoard;

/// What handlers read.
#[derive(Clone)]
pub struct AppState {
    pub store: DesiredStore,
    pub status: StatusBoard,
    pub readiness: Arc<Readiness>,
    /// Token keys, or disabled (`--no-auth`).
    pub auth: Auth,
}

impl FromRef<AppState> for Auth {
    fn from_ref(state: &AppState) -> Auth {
        state.auth.clone()
    }
}

/// The whole API.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .merge(auth::routes())
        .merge(status::routes())
        .fallback(not_found)
        .with_state(state)
}

async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

async fn readyz(
    axum::extract::State(state): axum::extract::State<AppState>,
) -> (StatusCode, Json<serde_json::Value>) {
    let first = state
        .readiness
        .first_pass_done
        .load(std::sync::atomic::Ordering::Relaxed);
    let engine = state
        .readiness
        .engine_up
        .load(std::sync::atomic::Ordering::Relaxed);
    let body =
        serde_json::json!({"ready": first && engine, "firstPassDone": first, "engineUp": engine});
    let code = if first && engine {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body))
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such route".to_string())
}
