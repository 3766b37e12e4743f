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
