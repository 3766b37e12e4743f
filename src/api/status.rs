//! The status namespace: `GET /api/v1/status/challenges[/{name}]` (SPEC §6), for viewers.

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Json;
use schemars::JsonSchema;
use serde::Deserialize;

use super::openapi::{Api, Content, Op};
use super::{ApiError, AppState, Items};
use crate::auth::RequireViewer;
use crate::source::git::GitStatus;
use crate::status::{view, ChallengeStatus};
use crate::tasks::Task;

pub fn routes() -> Api {
    Api::new("status")
        .route(
            "/api/v1/status/challenges",
            get(list),
            [Op::get("Status of every challenge (labelSelector=k=v)")
                .role("viewer")
                .query::<ListQuery>()
                .json::<Items<ChallengeStatus>>(200)],
        )
        .route(
            "/api/v1/status/challenges/{name}",
            get(one),
            [Op::get("Status of one challenge")
                .role("viewer")
                .json::<ChallengeStatus>(200)
                .errors(&[404])],
        )
        .route(
            "/api/v1/status/challenges/{name}/logs",
            get(logs),
            [Op::get("Container output (tail, follow, replica, build)")
                .role("viewer")
                .query::<LogsQuery>()
                .reply(200, Content::Text("text/plain; charset=utf-8"))
                .errors(&[404, 503])],
        )
        .route(
            "/api/v1/status/git",
            get(git),
            [Op::get("The --git source: commit, last sync, last error")
                .role("viewer")
                .json::<GitStatus>(200)
                .errors(&[404])],
        )
        .route(
            "/api/v1/status/tasks/{id}",
            get(task),
            [Op::get("A lifecycle task")
                .role("viewer")
                .json::<Task>(200)
                .errors(&[404])],
        )
}

/// The GitOps source's state; 404 when beast runs without `--git`.
async fn git(_: RequireViewer, State(state): State<AppState>) -> Result<Response, ApiError> {
    let source = state
        .git
        .as_ref()
        .ok_or_else(|| ApiError::NotFound("beast runs without --git".to_string()))?;
    Ok(Json(source.status()).into_response())
}

async fn task(
    _: RequireViewer,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Task>, ApiError> {
    state
        .tasks
        .get(&id)
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("task {id:?} not found")))
}

#[derive(Debug, Deserialize, JsonSchema)]
struct LogsQuery {
    /// How many lines from the end (default 100, at most 10000).
    tail: Option<usize>,
    follow: Option<bool>,
    replica: Option<u32>,
    /// The last image build's output instead of the containers'.
    build: Option<bool>,
}

/// Container output as text; `follow=true` keeps the response open and streams new output.
async fn logs(
    _: RequireViewer,
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<LogsQuery>,
) -> Result<Response, ApiError> {
    if state.store.get(&name).is_none() {
        return Err(ApiError::NotFound(format!("challenge {name:?} not found")));
    }
    let tail = q.tail.unwrap_or(100).min(10_000);
    if q.build.unwrap_or(false) {
        let lines = state.control.build_log(&name);
        let skip = lines.len().saturating_sub(tail);
        let mut text = lines[skip..].join("\n");
        if !text.is_empty() {
            text.push('\n');
        }
        let mut response = text.into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        return Ok(response);
    }
    let stream = state
        .control
        .logs(&name, q.replica, tail, q.follow.unwrap_or(false))
        .await?;
    let mut response = Body::from_stream(stream).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    Ok(response)
}

#[derive(Debug, Deserialize, JsonSchema)]
struct ListQuery {
    /// `key=value[,key=value]`: only challenges whose metadata.labels match all pairs.
    #[serde(rename = "labelSelector")]
    label_selector: Option<String>,
}

async fn list(
    _: RequireViewer,
    State(state): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let selector = parse_selector(q.label_selector.as_deref().unwrap_or(""))?;
    let versions = (state.store.version(), state.status.version());
    if selector.is_empty() {
        if let Some(body) = state.status_cache.get(versions) {
            return Ok(json_bytes(body));
        }
    }
    let items: Vec<ChallengeStatus> = state
        .store
        .snapshot()
        .iter()
        .filter(|e| {
            selector.iter().all(|(k, v)| {
                e.spec
                    .as_ref()
                    .and_then(|c| c.labels.get(k))
                    .map(String::as_str)
                    == Some(v)
            })
        })
        .map(|e| view(e, state.status.get(&e.name)))
        .collect();
    let body = serde_json::to_vec(&Items { items })
        .map(Bytes::from)
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    if selector.is_empty() {
        state.status_cache.put(versions, body.clone());
    }
    Ok(json_bytes(body))
}

fn json_bytes(body: Bytes) -> Response {
    let mut response = body.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

async fn one(
    _: RequireViewer,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<ChallengeStatus>, ApiError> {
    let entry = state
        .store
        .get(&name)
        .ok_or_else(|| ApiError::NotFound(format!("challenge {name:?} not found")))?;
    Ok(Json(view(&entry, state.status.get(&name))))
}

fn parse_selector(s: &str) -> Result<Vec<(String, String)>, ApiError> {
    s.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|pair| {
            pair.split_once('=')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .ok_or_else(|| {
                    ApiError::BadRequest(format!("labelSelector: {pair:?} is not key=value"))
                })
        })
        .collect()
}
