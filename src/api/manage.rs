//! The manage namespace (author): create, replace, read and purge API-owned manifests, and the
//! lifecycle actions. A write is acknowledged only once the API store has it on disk.

use std::path::Path as FsPath;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Json;
use schemars::JsonSchema;

use super::openapi::{Api, Op};
use super::{ApiError, AppState, Items};
use crate::auth::RequireAuthor;
use crate::desired::Entry;
use crate::manifest::{self, raw, DocOutcome};
use crate::model::{Challenge, ImageSource};
use crate::source::api_store::{Precondition, StoreError, Tags};
use crate::tasks::Task;

pub fn routes() -> Api {
    Api::new("manage")
        .route(
            "/api/v1/manage/challenges",
            get(list).post(create),
            [
                Op::get("Every manifest with its resourceVersion")
                    .role("author")
                    .json::<Items<raw::Manifest>>(200),
                Op::post("Create a challenge from a YAML or JSON manifest")
                    .role("author")
                    .body::<raw::Manifest>(true)
                    .example(EXAMPLE)
                    .json::<raw::Manifest>(201)
                    .errors(&[409, 422]),
            ],
        )
        .route(
            "/api/v1/manage/challenges/{name}",
            get(one).put(put).delete(purge),
            [
                Op::get("One manifest; ETag is its resourceVersion")
                    .role("author")
                    .json::<raw::Manifest>(200)
                    .errors(&[404, 409]),
                Op::put("Create or replace (If-Match, If-None-Match: * for create-only)")
                    .role("author")
                    .body::<raw::Manifest>(true)
                    .example(EXAMPLE)
                    .header("If-Match", IF_MATCH)
                    .header("If-None-Match", IF_NONE_MATCH)
                    .json::<raw::Manifest>(200)
                    .json::<raw::Manifest>(201)
                    .errors(&[409, 412, 422]),
                Op::delete("Purge an API-owned challenge and its containers")
                    .role("author")
                    .header("If-Match", IF_MATCH)
                    .header("If-None-Match", IF_NONE_MATCH)
                    .json::<Accepted>(202)
                    .errors(&[404, 409, 412]),
            ],
        )
        .route(
            "/api/v1/manage/challenges/{name}/{action}",
            post(action),
            [Op::post("deploy, undeploy or redeploy: 202 with a task")
                .role("author")
                .json::<Accepted>(202)
                .errors(&[404])],
        )
}

/// A manifest the API accepts, as the document's example body.
const EXAMPLE: &str = r#"{"apiVersion": "beast/v1", "kind": "Challenge",
  "metadata": {"name": "api-example", "labels": {"category": "misc"}},
  "spec": {"description": "Made through the API.", "category": "misc", "points": 100,
           "flag": "flag{example}", "image": "beast-examples/busybox:1",
           "command": ["sleep", "3600"]}}"#;

const IF_MATCH: &str = "Entity tags (resourceVersions, `\"12\"`) or `*`; 412 unless one is current";
const IF_NONE_MATCH: &str =
    "`*` (412 if the challenge exists) or entity tags (412 if one is current)";

/// The answer to an accepted lifecycle request.
#[derive(serde::Serialize, JsonSchema)]
struct Accepted {
    task: Task,
}

/// The manifest of an entry with its resourceVersion.
fn served(entry: &Entry) -> Option<raw::Manifest> {
    let mut m = entry.raw.as_deref()?.clone();
    m.metadata.resource_version = Some(entry.resource_version.to_string());
    Some(m)
}

fn with_etag(status: StatusCode, manifest: raw::Manifest, version: u64) -> Response {
    let mut response = (status, Json(manifest)).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("\"{version}\"")) {
        response.headers_mut().insert(header::ETAG, v);
    }
    response
}

async fn list(_: RequireAuthor, State(state): State<AppState>) -> Json<Items<raw::Manifest>> {
    let items = state.store.snapshot().iter().filter_map(served).collect();
    Json(Items { items })
}

async fn one(
    _: RequireAuthor,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let entry = state.store.get(&name).ok_or_else(|| not_found(&name))?;
    let manifest = served(&entry).ok_or_else(|| {
        ApiError::Conflict(format!("challenge {name:?} has no valid manifest yet"))
    })?;
    Ok(with_etag(StatusCode::OK, manifest, entry.resource_version))
}

async fn create(
    _: RequireAuthor,
    State(state): State<AppState>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let (challenge, manifest) = parse_body(&state.api_dir, &body)?;
    check_policy(&state, &challenge)?;
    let name = challenge.name.clone();
    refuse_dir_owned(&state, &name)?;
    let store = state.api_store.clone();
    let (n, m) = (name.clone(), manifest.clone());
    let version = blocking(move || store.create(&n, m))
        .await?
        .map_err(|e| match e {
            StoreError::Conflict { .. } => ApiError::Conflict(format!(
                "challenge {name:?} already exists; use PUT to replace it"
            )),
            other => store_error(&name, other),
        })?;
    apply(&state, challenge, manifest.clone(), version)?;
    Ok(with_etag(
        StatusCode::CREATED,
        served_from(manifest, version),
        version,
    ))
}

async fn put(
    _: RequireAuthor,
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let (challenge, manifest) = parse_body(&state.api_dir, &body)?;
    check_policy(&state, &challenge)?;
    if challenge.name != name {
        return Err(ApiError::BadRequest(format!(
            "metadata.name {:?} does not match the URL's {name:?}",
            challenge.name
        )));
    }
    refuse_dir_owned(&state, &name)?;
    let precondition = precondition(&headers, manifest.metadata.resource_version.as_deref())?;
    let existed = state.api_store.get(&name).is_some();
    let store = state.api_store.clone();
    let (n, m) = (name.clone(), manifest.clone());
    let version = blocking(move || store.put_if(&n, m, &precondition))
        .await?
        .map_err(|e| store_error(&name, e))?;
    apply(&state, challenge, manifest.clone(), version)?;
    let status = if existed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok(with_etag(status, served_from(manifest, version), version))
}

async fn purge(
    _: RequireAuthor,
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let entry = state.store.get(&name).ok_or_else(|| not_found(&name))?;
    if let Some(file) = entry.file() {
        return Err(owned_by(&name, file));
    }
    let precondition = precondition(&headers, None)?;
    let store = state.api_store.clone();
    let n = name.clone();
    blocking(move || {
        store.delete_if(&n, &precondition)?;
        store.forget_lifecycle(&n)
    })
    .await?
    .map_err(|e| store_error(&name, e))?;
    state.store.remove_api(&name);
    state.store.set_deployed(&name, true);
    Ok(accepted(&state, &name, "delete"))
}

async fn action(
    _: RequireAuthor,
    State(state): State<AppState>,
    Path((name, action)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    if state.store.get(&name).is_none() {
        return Err(not_found(&name));
    }
    match action.as_str() {
        "deploy" | "undeploy" => {
            let deployed = action == "deploy";
            let store = state.api_store.clone();
            let n = name.clone();
            blocking(move || store.set_deployed(&n, deployed))
                .await?
                .map_err(|e| store_error(&name, e))?;
            state.store.set_deployed(&name, deployed);
        }
        "redeploy" => state.control.redeploy(&name),
        other => {
            return Err(ApiError::NotFound(format!(
                "no action {other:?}: use deploy, undeploy or redeploy"
            )))
        }
    }
    Ok(accepted(&state, &name, &action))
}

/// Queues a task for `name` and answers 202 with it.
fn accepted(state: &AppState, name: &str, action: &str) -> Response {
    let task: Task = state.tasks.create(name, action);
    state.control.enqueue(name);
    (StatusCode::ACCEPTED, Json(Accepted { task })).into_response()
}

/// Applies an acknowledged write to the desired state and asks for a reconcile.
fn apply(
    state: &AppState,
    challenge: Challenge,
    manifest: raw::Manifest,
    version: u64,
) -> Result<(), ApiError> {
    let name = challenge.name.clone();
    state
        .store
        .apply_api(challenge, manifest, version)
        .map_err(|file| owned_by(&name, &file))?;
    state.control.enqueue(&name);
    Ok(())
}

fn served_from(mut manifest: raw::Manifest, version: u64) -> raw::Manifest {
    manifest.metadata.resource_version = Some(version.to_string());
    manifest
}

/// Refuses (422) a manifest that asks for more than the operator allows.
fn check_policy(state: &AppState, challenge: &Challenge) -> Result<(), ApiError> {
    let violations = state.store.policy_violations(challenge);
    if violations.is_empty() {
        return Ok(());
    }
    Err(ApiError::invalid(
        violations
            .into_iter()
            .map(|v| format!("request body: {v}"))
            .collect(),
    ))
}

/// Parses a YAML or JSON body holding exactly one manifest.
fn parse_body(api_dir: &FsPath, body: &[u8]) -> Result<(Challenge, raw::Manifest), ApiError> {
    let text = std::str::from_utf8(body)
        .map_err(|_| ApiError::BadRequest("the body is not UTF-8 text".to_string()))?;
    let parsed = manifest::parse_str(text, "request body", api_dir, api_dir);
    let mut docs = parsed.docs.into_iter();
    let (Some(doc), None) = (docs.next(), docs.next()) else {
        return Err(ApiError::BadRequest(
            "the body must hold exactly one manifest".to_string(),
        ));
    };
    match doc {
        DocOutcome::Invalid { errors, .. } => Err(ApiError::invalid(
            errors.iter().map(ToString::to_string).collect(),
        )),
        DocOutcome::Valid { challenge, raw, .. } => {
            if matches!(
                challenge.run.as_ref().map(|r| &r.source),
                Some(ImageSource::Build(_))
            ) {
                return Err(ApiError::invalid(vec![
                    "request body: spec.build: building from source needs a watched manifest directory; use spec.image".to_string(),
                ]));
            }
            if let Some(i) = challenge
                .services
                .iter()
                .position(|s| matches!(s.run.source, ImageSource::Build(_)))
            {
                return Err(ApiError::invalid(vec![format!(
                    "request body: spec.services[{i}].build: building from source needs a watched manifest directory; use image"
                )]));
            }
            if !challenge.attachments.is_empty() {
                return Err(ApiError::invalid(vec![
                    "request body: spec.attachments: attachments need a watched manifest directory"
                        .to_string(),
                ]));
            }
            Ok((challenge, *raw))
        }
    }
}

/// The write's precondition (RFC 9110 §13.1): `If-Match` and `If-None-Match` (each `*` or a list
/// of entity tags; `W/"12"` and a bare `12` are read as `"12"`), or, without `If-Match`, the
/// body's `metadata.resourceVersion`. A tag that is no current resourceVersion simply does not
/// match (412 from the store); only a header that is not text, or a body version that is not a
/// number, is a 400.
fn precondition(headers: &HeaderMap, from_body: Option<&str>) -> Result<Precondition, ApiError> {
    let if_match = match conditional(headers, header::IF_MATCH)? {
        Some(tags) => Some(tags),
        None => match from_body {
            Some(v) => Some(Tags::Versions(vec![v.trim().parse().map_err(|_| {
                ApiError::BadRequest(format!(
                    "metadata.resourceVersion {v:?} is not a resourceVersion"
                ))
            })?])),
            None => None,
        },
    };
    Ok(Precondition {
        if_match,
        if_none_match: conditional(headers, header::IF_NONE_MATCH)?,
    })
}

/// The tags of every `name` header (a list may be split over several), `None` when absent.
///
/// Hand-parsed rather than with the `headers` crate: its `IfMatch` compares strongly and refuses
/// unquoted tags, while this API has always read `W/"12"` and `12` as version 12.
fn conditional(headers: &HeaderMap, name: header::HeaderName) -> Result<Option<Tags>, ApiError> {
    let mut values = headers.get_all(&name).iter().peekable();
    if values.peek().is_none() {
        return Ok(None);
    }
    let mut versions = Vec::new();
    for value in values {
        let text = value
            .to_str()
            .map_err(|_| ApiError::BadRequest(format!("{name} is not text")))?;
        for tag in entity_tags(text) {
            if tag == "*" {
                return Ok(Some(Tags::Any));
            }
            versions.extend(tag.parse::<u64>().ok());
        }
    }
    Ok(Some(Tags::Versions(versions)))
}

/// The opaque parts of a comma-separated list of entity tags (`"a", W/"b", c`); a quoted tag may
/// hold commas.
fn entity_tags(text: &str) -> Vec<&str> {
    let mut tags = Vec::new();
    let mut rest = text;
    loop {
        rest = rest.trim_start_matches(|c: char| c == ',' || c.is_ascii_whitespace());
        if rest.is_empty() {
            return tags;
        }
        rest = rest.strip_prefix("W/").unwrap_or(rest);
        let (tag, after) = match rest.strip_prefix('"') {
            Some(quoted) => quoted.split_once('"').unwrap_or((quoted, "")),
            None => rest.split_once(',').unwrap_or((rest, "")),
        };
        tags.push(tag.trim());
        rest = after;
    }
}

fn refuse_dir_owned(state: &AppState, name: &str) -> Result<(), ApiError> {
    match state.store.get(name).as_ref().and_then(Entry::file) {
        Some(file) => Err(owned_by(name, file)),
        None => Ok(()),
    }
}

fn owned_by(name: &str, file: &str) -> ApiError {
    ApiError::Conflict(format!(
        "challenge {name:?} is owned by the watched file {file}; change the file instead"
    ))
}

fn not_found(name: &str) -> ApiError {
    ApiError::NotFound(format!("challenge {name:?} not found"))
}

fn store_error(name: &str, err: StoreError) -> ApiError {
    match err {
        StoreError::Conflict { current: Some(v) } => ApiError::PreconditionFailed(format!(
            "challenge {name:?} is at resourceVersion {v}, which the request's If-Match, \
             If-None-Match or metadata.resourceVersion does not allow; fetch it again and retry"
        )),
        StoreError::Conflict { current: None } => ApiError::PreconditionFailed(format!(
            "challenge {name:?} does not exist in the API store, which the request's If-Match \
             or metadata.resourceVersion requires"
        )),
        other => ApiError::Internal(other.to_string()),
    }
}

/// Runs the store's blocking, fsyncing I/O off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::Internal(format!("store task failed: {e}")))
}
