//! The info namespace (any token, players included): what players may see of deployed challenges — description,
//! category, points, tags, hints, connection details and attachments (download URL, size,
//! sha256). Never the flag, the env or the image.

use std::path::{Path, PathBuf};

use axum::extract::{Path as UrlPath, State};
use axum::routing::get;
use axum::Json;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use schemars::JsonSchema;
use serde::Serialize;

use super::digest;
use super::openapi::{Api, Content, Op};
use super::{ApiError, AppState, Items};
use crate::auth::RequirePlayer;
use crate::desired::Entry;
use crate::model::Attachment;

pub fn routes() -> Api {
    Api::new("info")
        .route(
            "/api/v1/info/challenges",
            get(list),
            [Op::get("Player-safe view of deployed challenges")
                .role("player")
                .json::<Items<Info>>(200)],
        )
        .route(
            "/api/v1/info/challenges/{name}",
            get(one),
            [Op::get("Player-safe view of one challenge")
                .role("player")
                .json::<Info>(200)
                .errors(&[404])],
        )
        .route(
            "/api/v1/info/challenges/{name}/attachments/{*file}",
            get(attachment),
            [Op::get("Download an attachment (ETag, content type)")
                .role("player")
                .header(
                    "If-None-Match",
                    "The ETag of a copy the client holds: 304 if current",
                )
                .reply(200, Content::File)
                .reply(304, Content::Empty)
                .errors(&[404])],
        )
}

/// One way in for players.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Connection {
    pub replica: u32,
    pub port: u16,
    pub host_port: u16,
    pub protocol: String,
}

/// The player-safe view of a challenge.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Info {
    pub name: String,
    pub description: String,
    pub category: String,
    pub points: Option<u32>,
    pub tags: Vec<String>,
    pub hints: Vec<String>,
    pub connection: Vec<Connection>,
    pub attachments: Vec<AttachmentInfo>,
    /// Per-team: each team starts its own copy (`POST /api/v1/instances/{name}`); the
    /// connection is then the instance's.
    #[serde(rename = "perTeam")]
    pub per_team: bool,
    /// An instance's lifetime before renewals, in seconds (per-team challenges only).
    #[serde(rename = "instanceTtlSeconds", skip_serializing_if = "Option::is_none")]
    pub instance_ttl_seconds: Option<u64>,
}

/// One file offered to players. When the file cannot be served right now (missing, unreadable,
/// outside the manifest's folder), it is still listed, so the platform sees what the challenge
/// promises, with `available: false` and no size or digest; its URL then answers 404.
#[derive(Debug, Serialize, JsonSchema)]
pub struct AttachmentInfo {
    /// The path as written in the manifest.
    pub name: String,
    /// The download route on this server (path only, percent-encoded).
    pub url: String,
    /// Bytes; `null` when unavailable.
    pub size: Option<u64>,
    /// Hex sha256 of the content; `null` when unavailable.
    pub sha256: Option<String>,
    /// Whether the URL serves the file now.
    pub available: bool,
}

/// What may appear unencoded in a URL path segment (RFC 3986 unreserved characters).
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The download URL of attachment `file` of challenge `name`.
fn attachment_url(name: &str, file: &str) -> String {
    let file: Vec<String> = file
        .split('/')
        .map(|seg| utf8_percent_encode(seg, SEGMENT).to_string())
        .collect();
    format!(
        "/api/v1/info/challenges/{}/attachments/{}",
        utf8_percent_encode(name, SEGMENT),
        file.join("/")
    )
}

/// The listing of `entry`'s attachment `a` (blocking: stats, and hashes a changed file).
fn attachment_info(entry: &Entry, a: &Attachment) -> AttachmentInfo {
    let digest = resolve_inside(&a.path, folder_of(entry).as_deref())
        .and_then(|real| digest::digest(&real).map_err(|e| e.to_string()));
    if let Err(why) = &digest {
        tracing::debug!(challenge = %entry.name, file = %a.name, %why, "attachment unavailable");
    }
    let digest = digest.ok();
    AttachmentInfo {
        name: a.name.clone(),
        url: attachment_url(&entry.name, &a.name),
        available: digest.is_some(),
        size: digest.as_ref().map(|d| d.size),
        sha256: digest.map(|d| d.sha256),
    }
}

/// The folder of the manifest file of `entry`, inside which its attachments must resolve.
fn folder_of(entry: &Entry) -> Option<PathBuf> {
    entry
        .file()
        .and_then(|f| Path::new(f).parent().map(Path::to_path_buf))
}

fn info(state: &AppState, entry: &Entry) -> Option<Info> {
    let challenge = entry.spec.as_deref()?;
    if !entry.deployed {
        return None;
    }
    let connection = state
        .status
        .get(&entry.name)
        .map(|s| s.containers)
        .unwrap_or_default()
        .into_iter()
        .filter(|c| c.state == "running")
        .flat_map(|c| {
            c.ports.into_iter().map(move |p| Connection {
                replica: c.replica,
                port: p.port,
                host_port: p.host_port,
                protocol: p.protocol.to_string(),
            })
        })
        .collect();
    Some(Info {
        name: challenge.name.clone(),
        description: challenge.info.description.clone(),
        category: challenge.info.category.clone(),
        points: challenge.info.points,
        tags: challenge.info.tags.clone(),
        hints: challenge.info.hints.clone(),
        connection,
        attachments: challenge
            .attachments
            .iter()
            .map(|a| attachment_info(entry, a))
            .collect(),
        per_team: challenge.per_team(),
        instance_ttl_seconds: challenge
            .instances
            .as_ref()
            .filter(|i| i.per_team)
            .map(|i| i.ttl.as_secs()),
    })
}

async fn list(
    _: RequirePlayer,
    State(state): State<AppState>,
) -> Result<Json<Items<Info>>, ApiError> {
    let items = blocking(move || {
        state
            .store
            .snapshot()
            .iter()
            .filter_map(|e| info(&state, e))
            .collect()
    })
    .await?;
    Ok(Json(Items { items }))
}

async fn one(
    _: RequirePlayer,
    State(state): State<AppState>,
    UrlPath(name): UrlPath<String>,
) -> Result<Json<Info>, ApiError> {
    let found = {
        let name = name.clone();
        blocking(move || state.store.get(&name).and_then(|e| info(&state, &e))).await?
    };
    found
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("challenge {name:?} not found")))
}

/// Runs file-system work (stat, hashing) off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::Internal(format!("info task failed: {e}")))
}

/// A player's download of one attachment: only files the manifest lists are served (so no
/// path can reach anything else), re-checked on disk against the manifest's folder.
async fn attachment(
    _: RequirePlayer,
    State(state): State<AppState>,
    UrlPath((name, file)): UrlPath<(String, String)>,
    headers: axum::http::HeaderMap,
) -> Result<axum::response::Response, ApiError> {
    use axum::http::{header, HeaderValue, StatusCode};
    use axum::response::IntoResponse;

    let not_found = || ApiError::NotFound(format!("challenge {name:?} has no attachment {file:?}"));
    let entry = state
        .store
        .get(&name)
        .filter(|e| e.deployed)
        .ok_or_else(not_found)?;
    let challenge = entry.spec.as_deref().ok_or_else(not_found)?;
    let wanted = file.trim_start_matches('/');
    let attachment = challenge
        .attachments
        .iter()
        .find(|a| a.name == wanted)
        .ok_or_else(not_found)?;
    let path = attachment.path.clone();
    let folder = folder_of(&entry);
    let bytes = tokio::task::spawn_blocking(move || {
        let real = resolve_inside(&path, folder.as_deref())?;
        std::fs::read(&real).map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?
    .map_err(|why| {
        tracing::warn!(challenge = %name, file = %wanted, %why, "attachment not served");
        not_found()
    })?;
    use sha2::Digest;
    let etag = format!("\"{}\"", hex::encode(&sha2::Sha256::digest(&bytes)[..16]));
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag))
    {
        return Ok(StatusCode::NOT_MODIFIED.into_response());
    }
    let mime = mime_guess::from_path(wanted).first_or_octet_stream();
    let download = wanted.rsplit('/').next().unwrap_or(wanted).replace('"', "");
    let mut response = bytes.into_response();
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(mime.as_ref()) {
        h.insert(header::CONTENT_TYPE, v);
    }
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{download}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(response)
}

/// `path` with symlinks resolved, if that is a regular file inside `folder` (when known).
fn resolve_inside(path: &Path, folder: Option<&Path>) -> Result<PathBuf, String> {
    let real = std::fs::canonicalize(path).map_err(|e| e.to_string())?;
    if let Some(folder) = folder {
        let folder = std::fs::canonicalize(folder).map_err(|e| e.to_string())?;
        if !real.starts_with(&folder) {
            return Err(format!(
                "{} is outside {}",
                real.display(),
                folder.display()
            ));
        }
    }
    if !real.is_file() {
        return Err("not a regular file".to_string());
    }
    Ok(real)
}
