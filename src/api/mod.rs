//! The HTTP API: `fn router(state) -> Router`, handlers grouped by namespace in small files.
//!
//! Namespaces: auth, manage (author), status and info (viewer), notification (viewer / admin),
//! plus `/healthz` and `/readyz` (open). Handlers read shared state and act through the
//! [`Control`] seam; they never talk to the engine. Routes are guarded by the extractors of
//! [`crate::auth`].

mod auth;
mod error;
mod info;
mod manage;
mod notification;
mod status;

use std::path::PathBuf;
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::stream::BoxStream;

use axum::extract::FromRef;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};

pub use error::ApiError;

use crate::auth::Auth;
use crate::desired::DesiredStore;
#[cfg(test)]
use crate::notify::{Delivery, NotifierConfig};
use crate::notify::{Notifier, Webhooks};
use crate::reconcile::Readiness;
use crate::source::api_store::ApiStore;
use crate::status::StatusBoard;
use crate::tasks::TaskBoard;

/// Container output, as the logs route streams it.
pub type LogStream = BoxStream<'static, Result<bytes::Bytes, std::io::Error>>;

/// What the API asks of the operator (object-safe, so handlers need no engine types).
pub trait Control: Send + Sync + 'static {
    /// Asks for a reconcile of `name` now.
    fn enqueue(&self, name: &str);
    /// Makes the next reconcile of `name` recreate its containers.
    fn redeploy(&self, name: &str);
    /// The output of `name`'s containers (one replica, or all of them line-prefixed).
    fn logs(
        &self,
        name: &str,
        replica: Option<u32>,
        tail: usize,
        follow: bool,
    ) -> BoxFuture<'static, Result<LogStream, ApiError>>;
}

/// A [`Control`] that does nothing, for router tests without an operator.
pub struct NoControl;

impl Control for NoControl {
    fn enqueue(&self, _name: &str) {}
    fn redeploy(&self, _name: &str) {}
    fn logs(
        &self,
        _name: &str,
        _replica: Option<u32>,
        _tail: usize,
        _follow: bool,
    ) -> BoxFuture<'static, Result<LogStream, ApiError>> {
        Box::pin(async { Ok(Box::pin(futures::stream::empty()) as LogStream) })
    }
}

/// What handlers read and act through.
#[derive(Clone)]
pub struct AppState {
    pub store: DesiredStore,
    pub status: StatusBoard,
    pub readiness: Arc<Readiness>,
    pub tasks: TaskBoard,
    /// Durable store of API-written manifests and lifecycle records.
    pub api_store: ApiStore,
    pub control: Arc<dyn Control>,
    /// The folder API manifests are validated against (they may not use paths).
    pub api_dir: PathBuf,
    /// Token keys, or disabled (`--no-auth`).
    pub auth: Auth,
    /// Feeds `GET /api/v1/notification/events`.
    pub notifier: Notifier,
    /// Webhook subscriptions (the same registry the notifier offers to).
    pub webhooks: Webhooks,
}

impl FromRef<AppState> for Auth {
    fn from_ref(state: &AppState) -> Auth {
        state.auth.clone()
    }
}

#[cfg(test)]
impl AppState {
    /// A state with empty stores in a fresh temporary folder and no operator behind it, for
    /// router tests.
    pub fn for_tests(auth: Auth) -> AppState {
        let dir = tempfile::tempdir()
            .map(|d| d.keep())
            .unwrap_or_else(|_| std::env::temp_dir().join("beast-test-state"));
        let api_store = ApiStore::open(&dir.join("store"))
            .unwrap_or_else(|e| panic!("test API store in {}: {e}", dir.display()));
        AppState {
            store: DesiredStore::new(),
            status: StatusBoard::new(),
            readiness: Arc::new(Readiness::default()),
            tasks: TaskBoard::new(),
            api_store,
            control: Arc::new(NoControl),
            api_dir: dir,
            auth,
            notifier: Notifier::new(NotifierConfig::default(), None),
            webhooks: Webhooks::in_memory(Delivery::default())
                .unwrap_or_else(|e| panic!("test webhooks: {e}")),
        }
    }
}

/// The whole API.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .merge(auth::routes())
        .merge(status::routes())
        .merge(manage::routes())
        .merge(info::routes())
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
