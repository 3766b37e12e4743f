//! Router tests of the manage namespace, the OpenAPI document and the hardening layers,
//! through `tower::ServiceExt::oneshot` (no engine).

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

use super::{api, router, AppState, MAX_BODY};
use crate::auth::{mint, Auth, Keys, Role};
use crate::desired::{Claim, DirSnapshot};
use crate::model::Challenge;

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

fn state() -> AppState {
    AppState::for_tests(Auth::enabled(Keys::new(SECRET).unwrap()))
}

fn token(role: Role) -> String {
    let keys = Keys::new(SECRET).unwrap();
    mint(&keys, role, "test", std::time::Duration::from_secs(600)).unwrap()
}

struct Reply {
    status: StatusCode,
    etag: Option<String>,
    json: Value,
}

async fn send(
    app: &Router,
    method: &str,
    uri: &str,
    role: Option<Role>,
    headers: &[(&str, &str)],
    body: &str,
) -> Reply {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(role) = role {
        req = req.header(header::AUTHORIZATION, format!("Bearer {}", token(role)));
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let response = app
        .clone()
        .oneshot(req.body(Body::from(body.to_string())).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let etag = response
        .headers()
        .get(header::ETAG)
        .map(|v| v.to_str().unwrap().to_string());
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Reply { status, etag, json }
}

fn manifest(name: &str, port: u32) -> String {
    format!("apiVersion: beast/v1\nkind: Challenge\nmetadata:\n  name: {name}\nspec:\n  image: img:1\n  flag: flag{{x}}\n  env: {{SECRET: s3cr3t}}\n  ports:\n    - port: {port}\n")
}

const A: Option<Role> = Some(Role::Author);

#[tokio::test]
async fn put_then_get_serves_the_manifest_with_an_etag() {
    let app = router(state());
    let r = send(
        &app,
        "PUT",
        "/api/v1/manage/challenges/web",
        A,
        &[],
        &manifest("web", 80),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
    let etag = r.etag.clone().unwrap();
    assert_eq!(
        r.json["metadata"]["resourceVersion"],
        etag.trim_matches('"')
    );
    let r = send(&app, "GET", "/api/v1/manage/challenges/web", A, &[], "").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.etag.as_deref(), Some(etag.as_str()));
    assert_eq!(r.json["spec"]["image"], "img:1");
    // A JSON body works the same.
    let json = r#"{"apiVersion":"beast/v1","kind":"Challenge","metadata":{"name":"web"},"spec":{"image":"img:2"}}"#;
    let r = send(
        &app,
        "PUT",
        "/api/v1/manage/challenges/web",
        A,
        &[("content-type", "application/json")],
        json,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    let list = send(&app, "GET", "/api/v1/manage/challenges", A, &[], "").await;
    assert_eq!(list.json["items"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn a_stale_if_match_is_refused() {
    let app = router(state());
    let r = send(
        &app,
        "PUT",
        "/api/v1/manage/challenges/web",
        A,
        &[],
        &manifest("web", 80),
    )
    .await;
    let v1 = r.etag.unwrap();
    let r = send(
        &app,
        "PUT",
        "/api/v1/manage/challenges/web",
        A,
        &[("if-match", &v1)],
        &manifest("web", 81),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    let r = send(
        &app,
        "PUT",
        "/api/v1/manage/challenges/web",
        A,
        &[("if-match", &v1)],
        &manifest("web", 82),
    )
    .await;
    assert_eq!(r.status, StatusCode::PRECONDITION_FAILED, "{}", r.json);
    assert_eq!(r.json["error"]["code"], "PreconditionFailed");
}

/// PUT `web` with `headers`; the status.
async fn put_web(app: &Router, headers: &[(&str, &str)], port: u32) -> Reply {
    send(
        app,
        "PUT",
        "/api/v1/manage/challenges/web",
        A,
        headers,
        &manifest("web", port),
    )
    .await
}

#[tokio::test]
async fn if_match_with_a_tag_that_is_no_version_is_412_not_400() {
    let app = router(state());
    let v = put_web(&app, &[], 80).await.etag.unwrap();
    for tag in [
        r#""abc""#,
        "abc",
        r#""1.5""#,
        r#"W/"x""#,
        r#""""#,
        r#""99999""#,
    ] {
        let r = put_web(&app, &[("if-match", tag)], 81).await;
        assert_eq!(
            r.status,
            StatusCode::PRECONDITION_FAILED,
            "{tag}: {}",
            r.json
        );
        assert_eq!(r.json["error"]["code"], "PreconditionFailed");
        let r = send(
            &app,
            "DELETE",
            "/api/v1/manage/challenges/web",
            A,
            &[("if-match", tag)],
            "",
        )
        .await;
        assert_eq!(
            r.status,
            StatusCode::PRECONDITION_FAILED,
            "{tag}: {}",
            r.json
        );
    }
    // Nothing was changed by the refused requests.
    let r = send(&app, "GET", "/api/v1/manage/challenges/web", A, &[], "").await;
    assert_eq!(r.etag.as_deref(), Some(v.as_str()));
}

#[tokio::test]
async fn if_match_lists_match_when_any_tag_matches() {
    let app = router(state());
    let v = put_web(&app, &[], 80).await.etag.unwrap();
    let list = format!(r#""abc", "1000", {v}"#);
    let r = put_web(&app, &[("if-match", &list)], 81).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    let v = r.etag.unwrap();
    // A list split over two header lines, with a quoted tag holding a comma.
    let r = put_web(
        &app,
        &[("if-match", r#""a,b", "7777""#), ("if-match", &v)],
        82,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    let v = r.etag.unwrap();
    let r = put_web(&app, &[("if-match", r#""1", "2""#)], 83).await;
    assert_eq!(r.status, StatusCode::PRECONDITION_FAILED, "{}", r.json);
    // Weak and unquoted tags compare by their version, as before.
    let weak = format!("W/{v}");
    let r = put_web(&app, &[("if-match", &weak)], 84).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    let bare = r.etag.unwrap().trim_matches('"').to_string();
    let r = put_web(&app, &[("if-match", &bare)], 85).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
}

#[tokio::test]
async fn if_match_star_needs_an_existing_challenge() {
    let app = router(state());
    let r = put_web(&app, &[("if-match", "*")], 80).await;
    assert_eq!(r.status, StatusCode::PRECONDITION_FAILED, "{}", r.json);
    let r = send(&app, "GET", "/api/v1/manage/challenges/web", A, &[], "").await;
    assert_eq!(
        r.status,
        StatusCode::NOT_FOUND,
        "the refused PUT created nothing"
    );
    assert_eq!(put_web(&app, &[], 80).await.status, StatusCode::CREATED);
    let r = put_web(&app, &[("if-match", "*")], 81).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    let r = send(
        &app,
        "DELETE",
        "/api/v1/manage/challenges/web",
        A,
        &[("if-match", "*")],
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.json);
}

#[tokio::test]
async fn if_none_match_star_makes_put_create_only() {
    let app = router(state());
    let r = put_web(&app, &[("if-none-match", "*")], 80).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
    let v = r.etag.unwrap();
    let r = put_web(&app, &[("if-none-match", "*")], 81).await;
    assert_eq!(r.status, StatusCode::PRECONDITION_FAILED, "{}", r.json);
    assert_eq!(r.json["error"]["code"], "PreconditionFailed");
    let r = send(&app, "GET", "/api/v1/manage/challenges/web", A, &[], "").await;
    assert_eq!(r.etag.as_deref(), Some(v.as_str()), "unchanged");
    assert_eq!(r.json["spec"]["ports"][0]["port"], 80);
    // If-None-Match with the current tag refuses too; with another one it passes.
    let r = put_web(&app, &[("if-none-match", &v)], 82).await;
    assert_eq!(r.status, StatusCode::PRECONDITION_FAILED, "{}", r.json);
    let r = put_web(&app, &[("if-none-match", "\"4242\"")], 82).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
}

#[tokio::test]
async fn the_body_resource_version_is_the_if_match_without_the_header() {
    let app = router(state());
    let v = put_web(&app, &[], 80).await.etag.unwrap();
    let with_version = |rv: &str, port: u32| {
        manifest("web", port).replace(
            "  name: web\n",
            &format!("  name: web\n  resourceVersion: \"{rv}\"\n"),
        )
    };
    let uri = "/api/v1/manage/challenges/web";
    let r = send(&app, "PUT", uri, A, &[], &with_version("999", 81)).await;
    assert_eq!(r.status, StatusCode::PRECONDITION_FAILED, "{}", r.json);
    let r = send(&app, "PUT", uri, A, &[], &with_version("abc", 81)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.json);
    let rv = v.trim_matches('"');
    let r = send(&app, "PUT", uri, A, &[], &with_version(rv, 81)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    // The header wins over the body.
    let current = r.etag.unwrap();
    let r = send(
        &app,
        "PUT",
        uri,
        A,
        &[("if-match", &current)],
        &with_version(rv, 82),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
}

#[tokio::test]
async fn a_name_owned_by_a_watched_file_is_409_naming_the_file() {
    let state = state();
    let mut snapshot = DirSnapshot::default();
    snapshot.claims.insert(
        "echo".into(),
        vec![(
            "challenges/echo/challenge.yaml".into(),
            Claim::Valid {
                challenge: Box::new(Challenge::with_image("echo", "x")),
                raw: None,
            },
        )],
    );
    state.store.apply_dir(0, snapshot);
    let app = router(state);
    let r = send(
        &app,
        "PUT",
        "/api/v1/manage/challenges/echo",
        A,
        &[],
        &manifest("echo", 80),
    )
    .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert!(
        r.json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("challenges/echo/challenge.yaml"),
        "{}",
        r.json
    );
    let r = send(&app, "DELETE", "/api/v1/manage/challenges/echo", A, &[], "").await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    // Lifecycle actions work on any challenge.
    let r = send(
        &app,
        "POST",
        "/api/v1/manage/challenges/echo/undeploy",
        A,
        &[],
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.json);
    assert_eq!(r.json["task"]["action"], "undeploy");
    assert_eq!(r.json["task"]["state"], "queued");
    let id = r.json["task"]["id"].as_str().unwrap().to_string();
    let r = send(
        &app,
        "GET",
        &format!("/api/v1/status/tasks/{id}"),
        Some(Role::Viewer),
        &[],
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json["challenge"], "echo");
}

#[tokio::test]
async fn invalid_manifests_are_422_with_body_positions() {
    let app = router(state());
    let r = send(
        &app,
        "PUT",
        "/api/v1/manage/challenges/web",
        A,
        &[],
        &manifest("web", 70000),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.json);
    let msg = r.json["error"]["message"].as_str().unwrap();
    assert!(
        msg.starts_with("request body:10:7: spec.ports[0].port"),
        "{msg}"
    );
    assert!(r.json["error"]["details"].is_array());
    let r = send(
        &app,
        "PUT",
        "/api/v1/manage/challenges/other",
        A,
        &[],
        &manifest("web", 80),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.json);
    let r = send(
        &app,
        "PUT",
        "/api/v1/manage/challenges/web",
        A,
        &[],
        "a: [unclosed",
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.json);
}

#[tokio::test]
async fn roles_guard_manage_and_info_hides_the_flag() {
    let app = router(state());
    let r = send(
        &app,
        "PUT",
        "/api/v1/manage/challenges/web",
        Some(Role::Viewer),
        &[],
        &manifest("web", 80),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = send(
        &app,
        "PUT",
        "/api/v1/manage/challenges/web",
        None,
        &[],
        &manifest("web", 80),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    send(
        &app,
        "PUT",
        "/api/v1/manage/challenges/web",
        A,
        &[],
        &manifest("web", 80),
    )
    .await;
    let r = send(
        &app,
        "GET",
        "/api/v1/info/challenges/web",
        Some(Role::Viewer),
        &[],
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let text = r.json.to_string();
    assert!(
        !text.contains("flag{x}") && !text.contains("s3cr3t"),
        "{text}"
    );
}

#[tokio::test]
async fn an_oversized_body_is_413_in_json() {
    let app = router(state());
    let big = format!("{}\n# {}", manifest("web", 80), "x".repeat(MAX_BODY + 10));
    let r = send(&app, "PUT", "/api/v1/manage/challenges/web", A, &[], &big).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(r.json["error"]["code"], "TooLarge");
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_json() {
    let app = router(state());
    let r = send(&app, "GET", "/nope", None, &[], "").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.json["error"]["code"], "NotFound");
    let r = send(&app, "PATCH", "/api/v1/manage/challenges", A, &[], "").await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.json["error"]["code"], "MethodNotAllowed");
}

#[tokio::test]
async fn every_route_is_in_the_openapi_document_and_answers() {
    let app = router(state());
    let r = send(&app, "GET", "/api/v1/openapi.json", None, &[], "").await;
    assert_eq!(r.status, StatusCode::OK);
    let paths = r.json["paths"].as_object().unwrap();
    let (_, docs) = api().finish();
    assert!(docs.len() >= 20, "{}", docs.len());
    for d in &docs {
        assert!(
            paths[&d.path.replace("{*", "{")]
                .get(d.method.to_lowercase())
                .is_some(),
            "{} {} missing",
            d.method,
            d.path
        );
        // The documented route exists: the router does not answer 404 (no such route) or 405.
        let uri = d
            .path
            .replace("{name}", "nope")
            .replace("{id}", "nope")
            .replace("{action}", "deploy")
            .replace("{challenge}", "nope");
        if d.path.ends_with("/events") {
            // A stream that never ends: look at the head only.
            let req = Request::get(&uri)
                .header(
                    header::AUTHORIZATION,
                    format!("Bearer {}", token(Role::Admin)),
                )
                .body(Body::empty())
                .unwrap();
            let response = app.clone().oneshot(req).await.unwrap();
            assert_eq!(response.status(), StatusCode::OK, "{uri}");
            continue;
        }
        let probe = send(&app, d.method, &uri, Some(Role::Admin), &[], "").await;
        let unrouted = probe.status == StatusCode::METHOD_NOT_ALLOWED
            || (probe.status == StatusCode::NOT_FOUND
                && probe.json["error"]["message"] == "no such route");
        assert!(
            !unrouted,
            "{} {} is documented but not routed ({})",
            d.method, d.path, probe.status
        );
    }
    // SPEC §5's routes are all there.
    for p in [
        "/api/v1/auth/token",
        "/api/v1/manage/challenges",
        "/api/v1/manage/challenges/{name}",
        "/api/v1/status/challenges",
        "/api/v1/status/challenges/{name}",
        "/api/v1/status/tasks/{id}",
        "/api/v1/status/challenges/{name}/logs",
        "/api/v1/info/challenges",
        "/api/v1/info/challenges/{name}",
        "/api/v1/notification/events",
        "/api/v1/instances",
        "/api/v1/instances/{challenge}",
        "/api/v1/instances/{challenge}/renew",
        "/api/v1/manage/flags/lookup",
        "/healthz",
        "/readyz",
        "/metrics",
        "/api/v1/openapi.json",
    ] {
        assert!(paths.contains_key(p), "{p} not documented");
    }
}

#[tokio::test]
async fn metrics_count_requests_by_route() {
    let app = router(state());
    send(
        &app,
        "GET",
        "/api/v1/status/challenges",
        Some(Role::Viewer),
        &[],
        "",
    )
    .await;
    let response = app
        .clone()
        .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let text = String::from_utf8(
        response
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap();
    assert!(
        text.contains("route=\"/api/v1/status/challenges\""),
        "{text}"
    );
}

#[tokio::test]
async fn info_lists_attachments_with_url_size_and_sha256() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("docs");
    std::fs::create_dir_all(folder.join("public")).unwrap();
    std::fs::write(folder.join("public/hand out.txt"), "abc").unwrap();
    let mut challenge = Challenge::with_image("docs", "x");
    for name in ["public/hand out.txt", "public/gone.bin"] {
        challenge.attachments.push(crate::model::Attachment {
            name: name.to_string(),
            path: folder.join(name),
        });
    }
    let state = state();
    let mut snapshot = DirSnapshot::default();
    snapshot.claims.insert(
        "docs".into(),
        vec![(
            folder.join("challenge.yaml").display().to_string(),
            Claim::Valid {
                challenge: Box::new(challenge),
                raw: None,
            },
        )],
    );
    state.store.apply_dir(0, snapshot);
    let app = router(state);
    let viewer = Some(Role::Viewer);
    let r = send(&app, "GET", "/api/v1/info/challenges", viewer, &[], "").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    let attachments = &r.json["items"][0]["attachments"];
    assert_eq!(
        attachments[0],
        serde_json::json!({
            "name": "public/hand out.txt",
            "url": "/api/v1/info/challenges/docs/attachments/public/hand%20out.txt",
            "size": 3,
            "sha256": "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
            "available": true
        })
    );
    // A file that went missing is listed as unavailable, not a 500.
    assert_eq!(
        attachments[1],
        serde_json::json!({
            "name": "public/gone.bin",
            "url": "/api/v1/info/challenges/docs/attachments/public/gone.bin",
            "size": null, "sha256": null, "available": false
        })
    );
    // The URL serves the file.
    let url = attachments[0]["url"].as_str().unwrap().to_string();
    let req = Request::get(&url)
        .header(
            header::AUTHORIZATION,
            format!("Bearer {}", token(Role::Viewer)),
        )
        .body(Body::empty())
        .unwrap();
    let response = app.clone().oneshot(req).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"abc");
    let gone = attachments[1]["url"].as_str().unwrap().to_string();
    let r = send(&app, "GET", &gone, viewer, &[], "").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // A changed file is hashed again.
    std::fs::write(folder.join("public/hand out.txt"), "abcd").unwrap();
    let r = send(&app, "GET", "/api/v1/info/challenges/docs", viewer, &[], "").await;
    assert_eq!(r.json["attachments"][0]["size"], 4);
    assert_eq!(
        r.json["attachments"][0]["sha256"],
        "88d4266fd4e6338d13b845fcf289579d209c897823b9217da3e161936f031589"
    );
}

#[test]
fn every_2xx_of_every_route_has_a_schema_and_every_error_the_error_schema() {
    let (_, docs) = api().finish();
    let doc = super::openapi::document(&docs);
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    let mut checked = 0;
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            let responses = op["responses"].as_object().unwrap();
            assert!(
                responses.keys().any(|s| s.starts_with('2')),
                "{method} {path} documents no 2xx"
            );
            for (status, response) in responses {
                if status == "204" || status == "304" {
                    assert!(
                        response.get("content").is_none(),
                        "{method} {path} {status}"
                    );
                    continue;
                }
                let content = response["content"].as_object();
                let content =
                    content.unwrap_or_else(|| panic!("{method} {path} {status}: no content"));
                for (mime, media) in content {
                    let schema = &media["schema"];
                    assert!(
                        schema.as_object().is_some_and(|s| !s.is_empty()),
                        "{method} {path} {status} {mime}: no schema"
                    );
                    if let Some(target) = schema["$ref"].as_str() {
                        let name = target.trim_start_matches("#/components/schemas/");
                        assert!(schemas.contains_key(name), "{target} is not defined");
                    }
                    // Errors have the error shape; /readyz's 503 is its own readiness body.
                    if (status.starts_with('4') || status.starts_with('5')) && path != "/readyz" {
                        assert_eq!(
                            schema["$ref"], "#/components/schemas/Error",
                            "{method} {path} {status}"
                        );
                    }
                }
                checked += 1;
            }
        }
    }
    assert!(checked > 40, "{checked}");
    // Every $ref anywhere resolves.
    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("$ref") {
                    out.push(r.clone());
                }
                m.values().for_each(|v| refs(v, out));
            }
            Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    refs(&doc, &mut all);
    for r in all {
        let name = r
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("{r}"));
        assert!(schemas.contains_key(name), "{r} dangles");
    }
    // The schemas are those of the types the handlers serialise.
    let status = &schemas["ChallengeStatus"]["properties"];
    assert!(
        status["status"].is_object() && status["generation"].is_object(),
        "{status}"
    );
    let list = &doc["paths"]["/api/v1/status/challenges"]["get"]["responses"]["200"];
    assert_eq!(
        list["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/ChallengeStatusList"
    );
    let info = &doc["paths"]["/api/v1/info/challenges/{name}"]["get"]["responses"]["200"];
    assert_eq!(
        info["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/Info"
    );
    let attachment = &schemas["AttachmentInfo"]["required"];
    for field in ["name", "url", "size", "sha256", "available"] {
        assert!(
            attachment.as_array().unwrap().iter().any(|f| f == field),
            "{attachment}"
        );
    }
}

#[tokio::test]
async fn metrics_are_served_as_openmetrics() {
    let app = router(state());
    let response = app
        .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&body).ends_with("# EOF\n"));
}
