//! Router tests of the instances namespace and the flag lookup: player scoping, the statuses of
//! every refusal, and no flag in any player's answer (no engine: phases are set by hand).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

use super::{router, AppState};
use crate::auth::{mint, mint_for_team, Auth, Keys, Role};
use crate::instances::{Instances, RateLimit};
use crate::manifest::{self, DocOutcome};
use crate::model::instance_key;
use crate::status::Phase;

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

/// `web`: one per team, two in all, one renewal, a dynamic flag. `many`: loose limits.
/// `plain`: not per-team.
const MANIFESTS: &str = "apiVersion: beast/v1\nkind: Challenge\nmetadata: {name: web}\nspec:\n  image: img\n  ports: [{port: 80}]\n  instances:\n    perTeam: true\n    ttl: 10m\n    maxRenewals: 1\n    maxPerTeam: 1\n    maxTotal: 2\n    flag: {template: 'flag{w_{random}}', env: FLAG}\n---\napiVersion: beast/v1\nkind: Challenge\nmetadata: {name: many}\nspec:\n  image: img\n  instances:\n    perTeam: true\n    ttl: 10m\n    maxPerTeam: 10\n    maxTotal: 50\n---\napiVersion: beast/v1\nkind: Challenge\nmetadata: {name: plain}\nspec:\n  image: img\n";

struct Fixture {
    app: Router,
    state: AppState,
    instances: Arc<Instances>,
}

fn fixture(rate: RateLimit) -> Fixture {
    let mut state = AppState::for_tests(Auth::enabled(Keys::new(SECRET).unwrap()));
    let dir = std::path::Path::new("/");
    for doc in manifest::parse_str(MANIFESTS, "test", dir, dir).docs {
        match doc {
            DocOutcome::Valid { challenge, raw, .. } => {
                state.store.apply_api(challenge, *raw, 1).unwrap();
            }
            DocOutcome::Invalid { errors, .. } => panic!("{errors:?}"),
        }
    }
    let instances = Arc::new(
        Instances::open(
            &state.api_dir,
            state.store.clone(),
            state.status.clone(),
            rate,
        )
        .unwrap(),
    );
    state.instances = Some(instances.clone());
    Fixture {
        app: router(state.clone()),
        state,
        instances,
    }
}

fn loose() -> RateLimit {
    "100/1s".parse().unwrap()
}

fn token(role: Role) -> String {
    let keys = Keys::new(SECRET).unwrap();
    mint(&keys, role, "test", Duration::from_secs(600)).unwrap()
}

fn player(team: &str) -> String {
    let keys = Keys::new(SECRET).unwrap();
    mint_for_team(
        &keys,
        Role::Player,
        team,
        Some(team),
        Duration::from_secs(600),
    )
    .unwrap()
}

struct Reply {
    status: StatusCode,
    retry_after: Option<String>,
    json: Value,
    text: String,
}

async fn send(app: &Router, method: &str, uri: &str, token: &str, body: &str) -> Reply {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Body::from(body.to_string()))
        .unwrap();
    let response = app.clone().oneshot(req).await.unwrap();
    let status = response.status();
    let retry_after = response
        .headers()
        .get(header::RETRY_AFTER)
        .map(|v| v.to_str().unwrap().to_string());
    if response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v == "text/event-stream")
    {
        return Reply {
            status,
            retry_after,
            json: Value::Null,
            text: String::new(),
        };
    }
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Reply {
        status,
        retry_after,
        json,
        text,
    }
}

/// Every flag issued so far (read from the instances' desired state, as the reconciler does).
fn flags(f: &Fixture) -> Vec<String> {
    f.instances
        .entries()
        .iter()
        .filter_map(|e| e.spec.as_ref()?.team.as_ref()?.flag.clone())
        .collect()
}

fn assert_no_flag(f: &Fixture, reply: &Reply) {
    for flag in flags(f) {
        assert!(!reply.text.contains(&flag), "flag in {}", reply.text);
    }
    assert!(!reply.text.contains("flag{"), "{}", reply.text);
}

#[tokio::test(start_paused = true)]
async fn a_player_sees_and_acts_on_its_own_team_only() {
    let f = fixture(loose());
    let (a, b) = (player("team-a"), player("team-b"));
    let admin = token(Role::Admin);
    let r = send(&f.app, "POST", "/api/v1/instances/web", &a, "").await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    assert_eq!(r.json["team"], "team-a");
    assert_eq!(r.json["phase"], "Pending");
    assert_no_flag(&f, &r);
    let r = send(
        &f.app,
        "POST",
        "/api/v1/instances/web?team=team-b",
        &admin,
        "",
    )
    .await;
    assert_eq!(r.json["team"], "team-b", "{}", r.text);
    assert_eq!(flags(&f).len(), 2);

    // The list: a player sees its team's only; naming another team is 403.
    let r = send(&f.app, "GET", "/api/v1/instances", &a, "").await;
    assert_eq!(r.status, StatusCode::OK);
    let items = r.json["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["team"], "team-a");
    assert_no_flag(&f, &r);
    for uri in [
        "/api/v1/instances?team=team-b",
        "/api/v1/instances/web?team=team-b",
    ] {
        let r = send(&f.app, "GET", uri, &a, "").await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{uri}");
    }
    for (method, uri) in [
        ("POST", "/api/v1/instances/web/renew?team=team-b"),
        ("DELETE", "/api/v1/instances/web?team=team-b"),
    ] {
        let r = send(&f.app, method, uri, &a, "").await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{method} {uri}");
    }
    // Its own, by path alone or naming itself.
    for uri in ["/api/v1/instances/web", "/api/v1/instances/web?team=team-a"] {
        let r = send(&f.app, "GET", uri, &a, "").await;
        assert_eq!(r.status, StatusCode::OK, "{uri}");
        assert_eq!(r.json["team"], "team-a");
        assert_no_flag(&f, &r);
    }
    let r = send(&f.app, "GET", "/api/v1/instances/web", &b, "").await;
    assert_eq!(r.json["team"], "team-b");

    // Admin: all, with filters.
    let r = send(&f.app, "GET", "/api/v1/instances", &admin, "").await;
    assert_eq!(r.json["items"].as_array().unwrap().len(), 2);
    let r = send(
        &f.app,
        "GET",
        "/api/v1/instances?team=team-b&challenge=web",
        &admin,
        "",
    )
    .await;
    assert_eq!(r.json["items"].as_array().unwrap().len(), 1);
    let r = send(
        &f.app,
        "GET",
        "/api/v1/instances?challenge=many",
        &admin,
        "",
    )
    .await;
    assert_eq!(r.json["items"], Value::Array(Vec::new()));
    // A viewer may read all, but not act.
    let viewer = token(Role::Viewer);
    let r = send(&f.app, "GET", "/api/v1/instances", &viewer, "").await;
    assert_eq!(r.json["items"].as_array().unwrap().len(), 2);
    let r = send(&f.app, "POST", "/api/v1/instances/many?team=x", &viewer, "").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn a_player_reaches_info_and_nothing_else() {
    let f = fixture(loose());
    let a = player("team-a");
    for uri in ["/api/v1/info/challenges", "/api/v1/info/challenges/web"] {
        let r = send(&f.app, "GET", uri, &a, "").await;
        assert_eq!(r.status, StatusCode::OK, "{uri}: {}", r.text);
    }
    // An attachment route answers (404: web has none), not 403.
    let r = send(
        &f.app,
        "GET",
        "/api/v1/info/challenges/web/attachments/x",
        &a,
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
    for (method, uri) in [
        ("GET", "/api/v1/status/challenges"),
        ("GET", "/api/v1/status/challenges/web"),
        ("GET", "/api/v1/status/challenges/web/logs"),
        ("GET", "/api/v1/status/tasks/1"),
        ("GET", "/api/v1/manage/challenges"),
        ("GET", "/api/v1/manage/challenges/web"),
        ("POST", "/api/v1/manage/challenges/web/deploy"),
        ("GET", "/api/v1/notification/events"),
        ("GET", "/api/v1/notification/webhooks"),
        ("POST", "/api/v1/manage/flags/lookup"),
    ] {
        let r = send(&f.app, method, uri, &a, r#"{"flag": "x"}"#).await;
        assert_eq!(
            r.status,
            StatusCode::FORBIDDEN,
            "{method} {uri}: {}",
            r.text
        );
    }
}

#[tokio::test(start_paused = true)]
async fn create_answers_201_once_the_instance_runs() {
    let f = fixture(loose());
    // The reconciler's part, by hand: every instance runs a moment after it is asked for.
    let (instances, status) = (f.instances.clone(), f.state.status.clone());
    let runner = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(300)).await;
            for v in instances.list(None, None) {
                status.update(&instance_key(&v.challenge, &v.id), |s| {
                    s.phase = Phase::Running
                });
            }
        }
    });
    let r = send(&f.app, "POST", "/api/v1/instances/web", &player("t"), "").await;
    runner.abort();
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.json["phase"], "Running");
    assert_eq!(r.json["renewals"], 0);
    assert!(r.json["expiresAt"].as_str().unwrap().ends_with('Z'));
}

#[tokio::test(start_paused = true)]
async fn the_limits_answer_409_and_429_with_retry_after() {
    let f = fixture(loose());
    let admin = token(Role::Admin);
    let a = player("team-a");
    let first = send(&f.app, "POST", "/api/v1/instances/web", &a, "").await;
    // maxPerTeam: 409 naming the live instance, which is in the body too.
    let r = send(&f.app, "POST", "/api/v1/instances/web", &a, "").await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(r.json["error"]["code"], "Conflict");
    let id = first.json["id"].as_str().unwrap();
    assert!(
        r.json["error"]["message"].as_str().unwrap().contains(id),
        "{}",
        r.text
    );
    assert_eq!(r.json["instance"]["id"], id);
    assert_no_flag(&f, &r);
    // maxTotal (2): 429 with Retry-After in whole seconds.
    send(
        &f.app,
        "POST",
        "/api/v1/instances/web?team=team-b",
        &admin,
        "",
    )
    .await;
    let r = send(
        &f.app,
        "POST",
        "/api/v1/instances/web?team=team-c",
        &admin,
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.text);
    assert_eq!(r.json["error"]["code"], "TooManyRequests");
    let wait: u64 = r.retry_after.unwrap().parse().unwrap();
    assert!((1..=600).contains(&wait), "{wait}");
    // Renew once, then 409 out of renewals.
    let r = send(&f.app, "POST", "/api/v1/instances/web/renew", &a, "").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["renewals"], 1);
    let r = send(&f.app, "POST", "/api/v1/instances/web/renew", &a, "").await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    // Delete: 202 with the view; then it is gone and the slot is free.
    let r = send(&f.app, "DELETE", "/api/v1/instances/web", &a, "").await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    assert_eq!(r.json["id"], id);
    let r = send(&f.app, "GET", "/api/v1/instances/web", &a, "").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = send(&f.app, "DELETE", "/api/v1/instances/web", &a, "").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = send(&f.app, "POST", "/api/v1/instances/web", &a, "").await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
}

#[tokio::test(start_paused = true)]
async fn creating_too_fast_is_429() {
    let f = fixture("2/1h".parse().unwrap());
    let a = player("team-a");
    for _ in 0..2 {
        let r = send(&f.app, "POST", "/api/v1/instances/many", &a, "").await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    }
    let r = send(&f.app, "POST", "/api/v1/instances/many", &a, "").await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.text);
    let wait: u64 = r.retry_after.unwrap().parse().unwrap();
    assert!(wait >= 60, "{wait}");
    // Another team has its own allowance.
    let r = send(
        &f.app,
        "POST",
        "/api/v1/instances/many",
        &player("team-b"),
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
}

#[tokio::test(start_paused = true)]
async fn unknown_not_per_team_no_team_and_disabled() {
    let f = fixture(loose());
    let a = player("team-a");
    for uri in ["/api/v1/instances/nope", "/api/v1/instances/plain"] {
        let r = send(&f.app, "POST", uri, &a, "").await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{uri}");
        assert_eq!(r.json["error"]["code"], "NotFound");
    }
    let r = send(&f.app, "GET", "/api/v1/instances/web", &a, "").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // Author and admin name the team.
    let author = token(Role::Author);
    let r = send(&f.app, "POST", "/api/v1/instances/web", &author, "").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert!(r.json["error"]["message"]
        .as_str()
        .unwrap()
        .contains("?team="));
    let r = send(
        &f.app,
        "POST",
        "/api/v1/instances/web?team=team-x",
        &author,
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    assert_eq!(r.json["team"], "team-x");
    // A beast without instances answers 404 on every instances route.
    let app = router(AppState::for_tests(Auth::enabled(
        Keys::new(SECRET).unwrap(),
    )));
    for (method, uri) in [
        ("GET", "/api/v1/instances"),
        ("POST", "/api/v1/instances/web"),
        ("POST", "/api/v1/manage/flags/lookup"),
    ] {
        let r = send(&app, method, uri, &token(Role::Admin), r#"{"flag": "x"}"#).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{method} {uri}");
        assert_eq!(
            r.json["error"]["message"],
            "per-team instances are not enabled"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn flag_lookup_finds_the_team_for_authors_only() {
    let f = fixture(loose());
    let a = player("team-a");
    let created = send(&f.app, "POST", "/api/v1/instances/web", &a, "").await;
    let flag = flags(&f).pop().unwrap();
    assert!(
        flag.starts_with("flag{w_") && flag.len() == "flag{w_}".len() + 16,
        "{flag}"
    );
    let body = serde_json::json!({ "flag": format!(" {flag}\n") }).to_string();
    let author = token(Role::Author);
    let r = send(
        &f.app,
        "POST",
        "/api/v1/manage/flags/lookup",
        &author,
        &body,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["team"], "team-a");
    assert_eq!(r.json["challenge"], "web");
    assert_eq!(r.json["instance"], created.json["id"]);
    // Still found once the instance is gone.
    send(&f.app, "DELETE", "/api/v1/instances/web", &a, "").await;
    let r = send(
        &f.app,
        "POST",
        "/api/v1/manage/flags/lookup",
        &author,
        &body,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    // Unknown: 404 without echoing it; a player or viewer: 403; a bad body: 400.
    let r = send(
        &f.app,
        "POST",
        "/api/v1/manage/flags/lookup",
        &author,
        r#"{"flag": "flag{guess}"}"#,
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(!r.text.contains("guess"), "{}", r.text);
    for t in [a, token(Role::Viewer)] {
        let r = send(&f.app, "POST", "/api/v1/manage/flags/lookup", &t, &body).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
    }
    for bad in ["", "{", r#"{"flg": "x"}"#] {
        let r = send(&f.app, "POST", "/api/v1/manage/flags/lookup", &author, bad).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}");
    }
}
