//! The HTTP API: `fn router(state) -> Router`, handlers grouped by namespace in small files.
//!
//! Today: `/healthz`, `/readyz`, the read-only status namespace and the notification namespace
//! (event feed, webhook subscriptions). Handlers only read shared state (desired store, status
//! board, readiness, notifier); they never talk to the engine.

mod error;
mod notification;
mod status;

use std::sync::Arc;

use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};

pub use error::ApiError;

use crate::desired::DesiredStore;
use crate::notify::{Notifier, Webhooks};
use crate::reconcile::Readiness;
use crate::status::StatusBoard;

/// What handlers read.
#[derive(Clone)]
pub struct AppState {
    pub store: DesiredStore,
    pub status: StatusBoard,
    pub readiness: Arc<Readiness>,
    /// Feeds `GET /api/v1/notification/events`.
    pub notifier: Notifier,
    /// Webhook subscriptions (the same registry the notifier offers to).
    pub webhooks: Webhooks,
}

/// The whole API.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .merge(status::routes())
        .merge(notification::routes())
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
