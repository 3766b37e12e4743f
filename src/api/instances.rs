//! The instances namespace (SPEC §8): per-team instances as a CTF platform or a player asks for
//! them, and the flag lookup of the manage namespace (flag-sharing detection).
//!
//! Who acts for which team: a player for the team of its token only (naming another team is
//! 403); an author or admin for any team named with `?team=`; a viewer may read (list, and get
//! with `?team=`) but never create, renew or delete. The rules and limits themselves live in
//! [`crate::instances`]; this module maps them to HTTP. No response here ever carries a flag
//! ([`InstanceView`] has none) and nothing here logs one.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Json;
use schemars::JsonSchema;
use serde::Deserialize;

use super::openapi::{Api, Op};
use super::{ApiError, AppState, Items};
use crate::auth::{Claims, RequireAuthor, RequirePlayer, Role};
use crate::instances::{check_team, FlagOwner, InstanceError, InstanceView, Instances};
use crate::status::Phase;

/// How long a create waits for the instance to run before answering 202 instead of 201.
pub const CREATE_WAIT: Duration = Duration::from_secs(15);
/// How often a create looks at the instance's phase while it waits.
const CREATE_POLL: Duration = Duration::from_millis(100);

pub fn routes() -> Api {
    Api::new("instances")
        .route(
            "/api/v1/instances",
            get(list),
            [
                Op::get("Live instances: a player's team's; all for others (?team=, ?challenge=)")
                    .role("player")
                    .query::<ListQuery>()
                    .json::<Items<InstanceView>>(200)
                    .errors(&[404]),
            ],
        )
        .route(
            "/api/v1/instances/{challenge}",
            get(one).post(create).delete(remove),
            [
                Op::get("The team's newest instance of a challenge")
                    .role("player")
                    .query::<TeamQuery>()
                    .json::<InstanceView>(200)
                    .errors(&[404]),
                Op::post("Start an instance for the team: 201 once it runs, 202 while it starts")
                    .role("player")
                    .query::<TeamQuery>()
                    .json::<InstanceView>(201)
                    .json::<InstanceView>(202)
                    .errors(&[404, 409, 429, 503]),
                Op::delete("Remove the team's instance: its containers and network go")
                    .role("player")
                    .query::<TeamQuery>()
                    .json::<InstanceView>(202)
                    .errors(&[404, 503]),
            ],
        )
        .route(
            "/api/v1/instances/{challenge}/renew",
            post(renew),
            [
                Op::post("Set the instance's expiry to now + ttl (up to maxRenewals)")
                    .role("player")
                    .query::<TeamQuery>()
                    .json::<InstanceView>(200)
                    .errors(&[404, 409, 503]),
            ],
        )
        .merge(
            Api::new("manage").route(
                "/api/v1/manage/flags/lookup",
                post(lookup),
                [
                    Op::post("Who a dynamic flag was issued to (live or expired instances)")
                        .role("author")
                        .body::<LookupRequest>(true)
                        .example(r#"{"flag": "flag{ret2win_0123456789abcdef}"}"#)
                        .json::<FlagOwner>(200)
                        .errors(&[404]),
                ],
            ),
        )
}

/// Filters of `GET /api/v1/instances`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
struct ListQuery {
    /// Only this team's (a player may only name its own).
    team: Option<String>,
    /// Only this challenge's.
    challenge: Option<String>,
}

/// The team an author or admin acts for.
#[derive(Debug, Default, Deserialize, JsonSchema)]
struct TeamQuery {
    /// Required for an author or admin; a player's token names its team (naming another is 403).
    team: Option<String>,
}

/// The body of a flag lookup.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct LookupRequest {
    /// A flag as a team submitted it (surrounding whitespace is ignored).
    flag: String,
}

/// Why an instances request failed: an API error, or a refusal of the instances service.
enum Failure {
    Api(ApiError),
    Instance(InstanceError),
}

impl From<ApiError> for Failure {
    fn from(e: ApiError) -> Failure {
        Failure::Api(e)
    }
}

impl From<InstanceError> for Failure {
    fn from(e: InstanceError) -> Failure {
        Failure::Instance(e)
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        match self {
            Failure::Api(e) => e.into_response(),
            Failure::Instance(e) => refusal(e),
        }
    }
}

/// The answer to a refused instance request; a 409 at maxPerTeam also carries the live instance.
fn refusal(error: InstanceError) -> Response {
    let message = error.to_string();
    let live = match &error {
        InstanceError::AtMaxPerTeam { live, .. } => Some(live.clone()),
        _ => None,
    };
    let api = match (error.status(), error.retry_after()) {
        (_, Some(retry_after)) => ApiError::TooManyRequests {
            message,
            retry_after,
        },
        (404, _) => ApiError::NotFound(message),
        (409, _) => ApiError::Conflict(message),
        (400, _) => ApiError::BadRequest(message),
        _ => {
            tracing::error!(%error, "the instance book cannot be written");
            ApiError::Unavailable("the instance book cannot be written; try again".to_string())
        }
    };
    match live {
        Some(live) => {
            let body = serde_json::json!({
                "error": {"code": "Conflict", "message": api.to_string()},
                "instance": live,
            });
            (StatusCode::CONFLICT, Json(body)).into_response()
        }
        None => api.into_response(),
    }
}

/// The instances service, or 404 when this beast runs none.
fn enabled(state: &AppState) -> Result<Arc<Instances>, ApiError> {
    state
        .instances
        .clone()
        .ok_or_else(|| ApiError::NotFound("per-team instances are not enabled".to_string()))
}

/// The team `caller` acts for: a player's own, or the `?team=` of anyone else. A viewer may
/// only read.
fn acting_team(caller: &Claims, asked: Option<String>, write: bool) -> Result<String, ApiError> {
    if caller.role == Role::Player {
        let own = caller
            .team
            .clone()
            .ok_or_else(|| ApiError::Forbidden("a player token without a team".to_string()))?;
        return match asked {
            Some(other) if other != own => Err(ApiError::Forbidden(
                "a player acts for its own team only".to_string(),
            )),
            _ => Ok(own),
        };
    }
    if write && caller.role < Role::Author {
        return Err(ApiError::Forbidden(format!(
            "a {} may read instances; creating, renewing and deleting need the author role \
             (or a player token of the team)",
            caller.role
        )));
    }
    let team = asked.ok_or_else(|| {
        ApiError::BadRequest(format!(
            "a {} token acts for a team: add ?team=NAME",
            caller.role
        ))
    })?;
    check_team(&team).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    Ok(team)
}

/// Runs book work (it fsyncs) off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, InstanceError> + Send + 'static,
) -> Result<T, Failure> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::Internal(format!("instances task failed: {e}")))?
        .map_err(Failure::from)
}

async fn list(
    RequirePlayer(caller): RequirePlayer,
    State(state): State<AppState>,
    Query(query): Query<ListQuery>,
) -> Result<Json<Items<InstanceView>>, Failure> {
    let instances = enabled(&state)?;
    let team = if caller.role == Role::Player {
        Some(acting_team(&caller, query.team, false)?)
    } else {
        query.team
    };
    let items = instances.list(team.as_deref(), query.challenge.as_deref());
    Ok(Json(Items { items }))
}

async fn one(
    RequirePlayer(caller): RequirePlayer,
    State(state): State<AppState>,
    Path(challenge): Path<String>,
    Query(query): Query<TeamQuery>,
) -> Result<Json<InstanceView>, Failure> {
    let instances = enabled(&state)?;
    let team = acting_team(&caller, query.team, false)?;
    Ok(Json(instances.get(&challenge, &team)?))
}

async fn create(
    RequirePlayer(caller): RequirePlayer,
    State(state): State<AppState>,
    Path(challenge): Path<String>,
    Query(query): Query<TeamQuery>,
) -> Result<Response, Failure> {
    let instances = enabled(&state)?;
    let team = acting_team(&caller, query.team, true)?;
    let view = {
        let (instances, challenge, team) = (instances.clone(), challenge.clone(), team.clone());
        blocking(move || instances.create(&challenge, &team)).await?
    };
    let view = until_running(&instances, view, CREATE_WAIT).await;
    let status = if view.phase == Phase::Running {
        StatusCode::CREATED
    } else {
        StatusCode::ACCEPTED
    };
    Ok((status, Json(view)).into_response())
}

/// The instance's view once it runs, or as it is when `wait` has passed or it is gone.
async fn until_running(
    instances: &Instances,
    mut view: InstanceView,
    wait: Duration,
) -> InstanceView {
    let deadline = tokio::time::Instant::now() + wait;
    while view.phase != Phase::Running && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(CREATE_POLL).await;
        let now = instances
            .list(Some(&view.team), Some(&view.challenge))
            .into_iter()
            .find(|v| v.id == view.id);
        match now {
            Some(now) => view = now,
            None => break,
        }
    }
    view
}

async fn renew(
    RequirePlayer(caller): RequirePlayer,
    State(state): State<AppState>,
    Path(challenge): Path<String>,
    Query(query): Query<TeamQuery>,
) -> Result<Json<InstanceView>, Failure> {
    let instances = enabled(&state)?;
    let team = acting_team(&caller, query.team, true)?;
    Ok(Json(
        blocking(move || instances.renew(&challenge, &team)).await?,
    ))
}

async fn remove(
    RequirePlayer(caller): RequirePlayer,
    State(state): State<AppState>,
    Path(challenge): Path<String>,
    Query(query): Query<TeamQuery>,
) -> Result<Response, Failure> {
    let instances = enabled(&state)?;
    let team = acting_team(&caller, query.team, true)?;
    let view = blocking(move || instances.delete(&challenge, &team)).await?;
    Ok((StatusCode::ACCEPTED, Json(view)).into_response())
}

async fn lookup(
    RequireAuthor(_): RequireAuthor,
    State(state): State<AppState>,
    body: Bytes,
) -> Result<Json<FlagOwner>, Failure> {
    let instances = enabled(&state)?;
    let request: LookupRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("request body: {e}")))?;
    // The flag is never echoed: neither in the answer nor in a log.
    instances.lookup(&request.flag).map(Json).ok_or_else(|| {
        ApiError::NotFound("no dynamic flag like this one was ever issued".to_string()).into()
    })
}
