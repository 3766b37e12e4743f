//! The HTTP API: `fn router(state) -> Router`, handlers grouped by namespace in small files.
//!
//! Namespaces: auth, manage (author), status (viewer), info (any token, players included),
//! instances (players for their team, authors and admins for any), notification (viewer / admin),
//! hooks (no token: authenticated by the webhook secret), plus `/healthz` and `/readyz` (open).
//! Handlers read shared state and act through the [`Control`] seam; they never talk to the
//! engine. Routes are guarded by the extractors of [`crate::auth`].

mod auth;
mod digest;
mod error;
pub mod hooks;
mod info;
mod instances;
#[cfg(test)]
mod instances_tests;
mod manage;
mod notification;
pub mod openapi;
mod status;
#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::stream::BoxStream;

use axum::extract::FromRef;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use tower_http::timeout::TimeoutLayer;

use openapi::{Api, Content, Op};
use schemars::JsonSchema;
use serde::Serialize;

pub use error::ApiError;
pub use hooks::GitHook;

use crate::auth::Auth;
use crate::desired::DesiredStore;
use crate::metrics::MetricsHandle;
#[cfg(test)]
use crate::notify::{Delivery, NotifierConfig};
use crate::notify::{Notifier, Webhooks};
use crate::reconcile::Readiness;
use crate::source::api_store::ApiStore;
use crate::source::git::GitSource;
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
    /// The output of the last image build of `name`.
    fn build_log(&self, name: &str) -> Vec<String>;
    /// The output of `name`'s containers (one replica, or all of them line-prefixed).
    fn logs(
        &self,
        name: &str,
        replica: Option<u32>,
        tail: usize,
        follow: bool,
    ) -> BoxFuture<'static, Result<LogStream, ApiError>>;
}

/// One cached response body, keyed by the versions it was built from.
#[derive(Clone, Default)]
pub struct ResponseCache {
    inner: Arc<std::sync::Mutex<Option<CachedBody>>>,
}

/// A body and the (store, status) versions it was built from.
type CachedBody = ((u64, u64), bytes::Bytes);

impl ResponseCache {
    pub fn get(&self, versions: (u64, u64)) -> Option<bytes::Bytes> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner
            .as_ref()
            .filter(|(v, _)| *v == versions)
            .map(|(_, b)| b.clone())
    }

    pub fn put(&self, versions: (u64, u64), body: bytes::Bytes) {
        *self.inner.lock().unwrap_or_else(|p| p.into_inner()) = Some((versions, body));
    }
}

/// A [`Control`] that does nothing, for router tests without an operator.
pub struct NoControl;

impl Control for NoControl {
    fn enqueue(&self, _name: &str) {}
    fn redeploy(&self, _name: &str) {}
    fn build_log(&self, _name: &str) -> Vec<String> {
        Vec::new()
    }
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
    pub metrics: MetricsHandle,
    /// The last serialised status list, valid while the store and status versions hold.
    pub status_cache: ResponseCache,
    /// Feeds `GET /api/v1/notification/events`.
    pub notifier: Notifier,
    /// Webhook subscriptions (the same registry the notifier offers to).
    pub webhooks: Webhooks,
    /// The git webhook (`--git` with `--git-webhook-secret`); `None` answers the hook with 404.
    pub git_hook: Option<GitHook>,
    /// The git source (`--git`), for the status view: its commit, last sync and last error.
    pub git: Option<Arc<GitSource>>,
    /// Per-team instances (SPEC §8); `None` answers the instances routes with 404.
    pub instances: Option<Arc<crate::instances::Instances>>,
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
            metrics: MetricsHandle::new(),
            status_cache: ResponseCache::default(),
            notifier: Notifier::new(NotifierConfig::default(), None),
            webhooks: Webhooks::in_memory(Delivery::default())
                .unwrap_or_else(|e| panic!("test webhooks: {e}")),
            git_hook: None,
            git: None,
            instances: None,
        }
    }
}

/// Largest request body accepted (a manifest is at most 1 MiB).
pub const MAX_BODY: usize = 1024 * 1024;
/// How long a request may take before it is answered 408 (streams are not cut: only the wait
/// for the response's head is timed).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Every route with its documentation.
pub fn api() -> Api {
    Api::new("health")
        .route(
            "/healthz",
            get(healthz),
            [Op::get("Liveness").json::<Health>(200)],
        )
        .route(
            "/readyz",
            get(readyz),
            [
                Op::get("Ready once the first pass is done and the engine answers")
                    .json::<Ready>(200)
                    .json::<Ready>(503),
            ],
        )
        .route(
            "/metrics",
            get(metrics),
            [Op::get("Prometheus metrics (OpenMetrics text)")
                .reply(200, Content::Text(OPENMETRICS))],
        )
        .route(
            "/api/v1/openapi.json",
            get(openapi_document),
            [Op::get("This document").json::<Document>(200)],
        )
        .merge(auth::routes())
        .merge(status::routes())
        .merge(manage::routes())
        .merge(info::routes())
        .merge(instances::routes())
        .merge(notification::routes())
        .merge(hooks::routes())
}

/// The content type of `/metrics`: prometheus-client's text encoder writes OpenMetrics 1.0
/// (it ends with `# EOF`), not the older Prometheus text format.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// `GET /healthz`.
#[derive(Serialize, JsonSchema)]
struct Health {
    /// Always `ok`.
    status: &'static str,
}

/// `GET /readyz` (200 when `ready`, else 503).
#[derive(Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
struct Ready {
    ready: bool,
    first_pass_done: bool,
    engine_up: bool,
}

/// An OpenAPI 3.0 document (this one).
#[derive(Serialize, JsonSchema)]
#[schemars(extend("additionalProperties" = true))]
struct Document {
    openapi: String,
    info: serde_json::Map<String, serde_json::Value>,
    paths: serde_json::Map<String, serde_json::Value>,
    components: serde_json::Map<String, serde_json::Value>,
}

/// A list response: `{"items": [...]}`.
#[derive(Serialize, JsonSchema)]
#[schemars(rename = "{T}List")]
pub struct Items<T> {
    pub items: Vec<T>,
}

/// The whole API, hardened: body limit, request timeout, JSON errors, request metrics.
pub fn router(state: AppState) -> Router {
    let (routes, _) = api().finish();
    let metrics = state.metrics.clone();
    routes
        .merge(crate::web::router())
        .fallback(not_found)
        .layer(middleware::map_response(json_errors))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
        .layer(middleware::from_fn_with_state(metrics, count_requests))
        .with_state(state)
}

async fn openapi_document() -> Json<serde_json::Value> {
    let (_, docs) = api().finish();
    Json(openapi::document(&docs))
}

async fn metrics(State(state): State<AppState>) -> Response {
    let mut response = state.metrics.render().into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(OPENMETRICS));
    response
}

/// Counts every request by method, matched route and status.
async fn count_requests(
    State(metrics): State<MetricsHandle>,
    request: Request,
    next: Next,
) -> Response {
    let method = request.method().to_string();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let response = next.run(request).await;
    metrics.count_request(&method, &route, response.status().as_u16());
    response
}

/// Gives the errors that layers and the router produce themselves (405, 408, 413, a rejected
/// body) the API's JSON shape.
async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let error = match status {
        StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::TooLarge(format!("the body is larger than {MAX_BODY} bytes"))
        }
        StatusCode::METHOD_NOT_ALLOWED => {
            return plain(
                status,
                "MethodNotAllowed",
                "method not allowed on this route",
            )
        }
        StatusCode::REQUEST_TIMEOUT => {
            return plain(status, "Timeout", "the request took too long")
        }
        StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            return plain(status, "UnsupportedMediaType", "unsupported content type")
        }
        s if s.is_client_error() => {
            ApiError::BadRequest(s.canonical_reason().unwrap_or("bad request").to_string())
        }
        s => ApiError::Internal(format!("status {s} from a layer")),
    };
    error.into_response()
}

fn plain(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(serde_json::json!({"error": {"code": code, "message": message}})),
    )
        .into_response()
}

async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Ready>) {
    let first = state
        .readiness
        .first_pass_done
        .load(std::sync::atomic::Ordering::Relaxed);
    let engine = state
        .readiness
        .engine_up
        .load(std::sync::atomic::Ordering::Relaxed);
    let body = Ready {
        ready: first && engine,
        first_pass_done: first,
        engine_up: engine,
    };
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
