//! The info namespace (viewer): what players may see of deployed challenges — description,
//! category, points, tags, hints, connection details and attachment names. Never the flag, the
//! env or the image.

use axum::extract::{Path, State};
use axum::routing::get;
use axum::Json;
use serde::Serialize;

use super::openapi::Api;
use super::{ApiError, AppState};
use crate::auth::RequireViewer;
use crate::desired::Entry;

pub fn routes() -> Api {
    Api::new("info")
        .route(
            "/api/v1/info/challenges",
            get(list),
            &[(
                "GET",
                "Player-safe view of deployed challenges",
                Some("viewer"),
            )],
        )
        .route(
            "/api/v1/info/challenges/{name}",
            get(one),
            &[("GET", "Player-safe view of one challenge", Some("viewer"))],
        )
        .route(
            "/api/v1/info/challenges/{name}/attachments/{*file}",
            get(attachment),
            &[(
                "GET",
                "Download an attachment (ETag, content type)",
                Some("viewer"),
            )],
        )
}

/// One way in for players.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Connection {
    pub replica: u32,
    pub port: u16,
    pub host_port: u16,
    pub protocol: String,
}

/// The player-safe view of a challenge.
#[derive(Debug, Serialize)]
pub struct Info {
    pub name: String,
    pub description: String,
    pub category: String,
    pub points: Option<u32>,
    pub tags: Vec<String>,
    pub hints: Vec<String>,
    pub connection: Vec<Connection>,
    pub attachments: Vec<String>,
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
            .map(|a| a.name.clone())
            .collect(),
    })
}

async fn list(_: RequireViewer, State(state): State<AppState>) -> Json<serde_json::Value> {
    let items: Vec<Info> = state
        .store
        .snapshot()
        .iter()
        .filter_map(|e| info(&state, e))
        .collect();
    Json(serde_json::json!({ "items": items }))
}

async fn one(
    _: RequireViewer,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Info>, ApiError> {
    state
        .store
        .get(&name)
        .and_then(|e| info(&state, &e))
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("challenge {name:?} not found")))
}

/// A player's download of one attachment: only files the manifest lists are served (so no
/// path can reach anything else), re-checked on disk against the manifest's folder.
async fn attachment(
    _: RequireViewer,
    State(state): State<AppState>,
    Path((name, file)): Path<(String, String)>,
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
    let folder = entry.file().and_then(|f| {
        std::path::Path::new(f)
            .parent()
            .map(std::path::Path::to_path_buf)
    });
    let bytes = tokio::task::spawn_blocking(move || read_inside(&path, folder.as_deref()))
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

/// Reads `path` if, after resolving symlinks, it is a regular file inside `folder` (when known).
fn read_inside(
    path: &std::path::Path,
    folder: Option<&std::path::Path>,
) -> Result<Vec<u8>, String> {
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
    std::fs::read(&real).map_err(|e| e.to_string())
}
