//! A tiny in-process stand-in for the beast API (the routes of `docs/api.md` the client uses,
//! with canned answers) and the tests that run the client verbs against it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use futures::StreamExt;
use serde_json::{json, Value};

use super::render::tests::sample_status;
use super::verbs::{self, Action, LogsQuery};
use super::{Client, ClientError, EXIT_FAILED, EXIT_OK};
use crate::cli::OutputFormat;

/// What the fake server saw and keeps.
#[derive(Default)]
struct Seen {
    /// (name, content type, body) of every PUT.
    puts: Vec<(String, String, String)>,
    /// Stored manifests with their resourceVersion.
    store: BTreeMap<String, (String, u64)>,
    /// How often each task was looked at.
    polls: BTreeMap<String, u32>,
    queries: Vec<String>,
}

#[derive(Clone)]
struct Fake {
    seen: Arc<Mutex<Seen>>,
    token: Option<&'static str>,
}

fn error(status: StatusCode, code: &str, message: &str, details: &[&str]) -> Response {
    let mut body = json!({"error": {"code": code, "message": message}});
    if !details.is_empty() {
        body["error"]["details"] = json!(details);
    }
    (status, Json(body)).into_response()
}

async fn auth(State(fake): State<Fake>, request: Request, next: Next) -> Response {
    let Some(token) = fake.token else {
        return next.run(request).await;
    };
    let given = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok());
    if given == Some(&format!("Bearer {token}")) {
        next.run(request).await
    } else {
        error(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "missing or invalid bearer token",
            &[],
        )
    }
}

fn manifest_json(yaml: &str, rv: u64) -> Value {
    let mut value: Value = serde_yaml::from_str(yaml).unwrap();
    value["metadata"]["resourceVersion"] = json!(rv.to_string());
    value
}

async fn put_challenge(
    State(fake): State<Fake>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body = String::from_utf8(body.to_vec()).unwrap();
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let mut seen = fake.seen.lock().unwrap();
    seen.puts.push((name.clone(), content_type, body.clone()));
    if name == "refused" {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            "request body:9:5: spec.build.context: no such directory",
            &[
                "request body:9:5: spec.build.context: no such directory",
                "request body:12:7: spec.attachments[0]: no such file",
            ],
        );
    }
    let (status, rv) = match seen.store.get(&name) {
        None => (StatusCode::CREATED, 1),
        Some((old, rv)) if *old == body => (StatusCode::OK, *rv),
        Some((_, rv)) => (StatusCode::OK, rv + 1),
    };
    seen.store.insert(name, (body.clone(), rv));
    (status, Json(manifest_json(&body, rv))).into_response()
}

async fn get_challenge(State(fake): State<Fake>, Path(name): Path<String>) -> Response {
    let seen = fake.seen.lock().unwrap();
    match seen.store.get(&name) {
        Some((body, rv)) => Json(manifest_json(body, *rv)).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("challenge {name:?} not found"),
            &[],
        ),
    }
}

async fn list_status(
    State(fake): State<Fake>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Json<Value> {
    fake.seen.lock().unwrap().queries.push(format!("{q:?}"));
    Json(json!({"items": [sample_status()]}))
}

async fn one_status(Path(name): Path<String>) -> Response {
    if name == "echo-tcp" {
        Json(sample_status()).into_response()
    } else if name == "proxied" {
        (StatusCode::BAD_GATEWAY, "<html>bad gateway</html>\n").into_response()
    } else {
        error(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("challenge {name:?} not found"),
            &[],
        )
    }
}

fn task(id: &str, name: &str, action: &str, state: &str, message: &str) -> Value {
    json!({"id": id, "challenge": name, "action": action, "state": state, "message": message,
           "createdAt": "2025-01-01T00:00:00Z"})
}

async fn act(Path((name, action)): Path<(String, String)>) -> Response {
    let id = format!("t-{name}");
    (
        StatusCode::ACCEPTED,
        Json(json!({"task": task(&id, &name, &action, "queued", "")})),
    )
        .into_response()
}

async fn delete(Path(name): Path<String>) -> Response {
    let id = format!("t-{name}");
    (
        StatusCode::ACCEPTED,
        Json(json!({"task": task(&id, &name, "delete", "queued", "")})),
    )
        .into_response()
}

/// `t-broken` fails, `t-stuck` stays queued, every other task runs once and then succeeds.
async fn get_task(State(fake): State<Fake>, Path(id): Path<String>) -> Json<Value> {
    let mut seen = fake.seen.lock().unwrap();
    let polls = seen.polls.entry(id.clone()).or_default();
    *polls += 1;
    let name = id.trim_start_matches("t-");
    let state = match (name, *polls) {
        ("stuck", _) => ("queued", ""),
        (_, 1) => ("running", ""),
        ("broken", _) => ("failed", "image example/nope:1 not found"),
        _ => ("succeeded", "1 container(s) running"),
    };
    Json(task(&id, name, "deploy", state.0, state.1))
}

/// Echoes the query; with `follow=true`, a chunked stream that trickles three lines and ends.
async fn logs(Path(name): Path<String>, Query(q): Query<BTreeMap<String, String>>) -> Response {
    if q.get("follow").map(String::as_str) == Some("true") {
        let chunks = futures::stream::iter(1..=3).then(|i| async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            Ok::<_, std::io::Error>(format!("tick {i}\n"))
        });
        return axum::body::Body::from_stream(chunks).into_response();
    }
    format!("{name} {q:?}\nline 2\n").into_response()
}

/// Serves the fake API on 127.0.0.1:0; returns a client for it and what it saw.
async fn serve(token: Option<&'static str>) -> (String, Arc<Mutex<Seen>>) {
    let fake = Fake {
        seen: Arc::default(),
        token,
    };
    let app = Router::new()
        .route(
            "/api/v1/manage/challenges/{name}",
            put(put_challenge).get(get_challenge).delete(delete),
        )
        .route("/api/v1/manage/challenges/{name}/{action}", post(act))
        .route("/api/v1/status/challenges", get(list_status))
        .route("/api/v1/status/challenges/{name}", get(one_status))
        .route("/api/v1/status/challenges/{name}/logs", get(logs))
        .route("/api/v1/status/tasks/{id}", get(get_task))
        .layer(middleware::from_fn_with_state(fake.clone(), auth))
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), fake.seen)
}

async fn client(token: Option<&'static str>) -> (Client, Arc<Mutex<Seen>>) {
    let (server, seen) = serve(token).await;
    (Client::new(&server, token).unwrap(), seen)
}

fn text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap()
}

const ONE: &str = "apiVersion: beast/v1\nkind: Challenge\nmetadata: {name: one}\n\
                   spec: {image: 'x:1', flag: 'flag{one}'}\n";
const TWO: &str = "apiVersion: beast/v1\nkind: Challenge\nmetadata: {name: two}\n\
                   spec: {image: 'x:1', replicas: 2}\n";

#[tokio::test]
async fn apply_sends_each_document_of_a_directory() {
    let (client, seen) = client(None).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("both.yaml"), format!("{ONE}---\n{TWO}")).unwrap();
    let paths = [dir.path().to_path_buf()];
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = verbs::apply(&client, &paths, OutputFormat::Table, &mut out, &mut err)
        .await
        .unwrap();
    assert_eq!((code, text(err)), (EXIT_OK, String::new()));
    assert_eq!(text(out), "challenge/one created\nchallenge/two created\n");
    {
        let seen = seen.lock().unwrap();
        let names: Vec<&str> = seen.puts.iter().map(|p| p.0.as_str()).collect();
        assert_eq!(names, ["one", "two"]);
        assert!(seen.puts.iter().all(|p| p.1 == "application/yaml"));
        let first: Value = serde_yaml::from_str(&seen.puts[0].2).unwrap();
        assert_eq!(first["metadata"]["name"], "one");
        assert_eq!(first["spec"]["flag"], "flag{one}");
        let second: Value = serde_yaml::from_str(&seen.puts[1].2).unwrap();
        assert_eq!(second["spec"]["replicas"], 2);
    }

    // Again, unchanged; then one edited.
    std::fs::write(
        dir.path().join("both.yaml"),
        format!("{ONE}---\n{}", TWO.replace("replicas: 2", "replicas: 3")),
    )
    .unwrap();
    let mut out = Vec::new();
    verbs::apply(
        &client,
        &paths,
        OutputFormat::Table,
        &mut out,
        &mut Vec::new(),
    )
    .await
    .unwrap();
    assert_eq!(
        text(out),
        "challenge/one unchanged\nchallenge/two configured\n"
    );
}

#[tokio::test]
async fn apply_goes_on_past_errors_and_exits_1() {
    let (client, seen) = client(None).await;
    let dir = tempfile::tempdir().unwrap();
    let refused = ONE.replace("name: one", "name: refused");
    let invalid = "apiVersion: beast/v1\nkind: Challenge\nmetadata: {name: bad}\nspec: {imag: x}\n";
    std::fs::write(dir.path().join("a.yaml"), &refused).unwrap();
    std::fs::write(dir.path().join("b.yaml"), invalid).unwrap();
    std::fs::write(dir.path().join("c.yaml"), TWO).unwrap();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = verbs::apply(
        &client,
        &[dir.path().to_path_buf()],
        OutputFormat::Json,
        &mut out,
        &mut err,
    )
    .await
    .unwrap();
    assert_eq!(code, EXIT_FAILED);
    let err = text(err);
    assert!(
        err.contains(
            "error: challenge/refused: request body:9:5: spec.build.context: no such directory \
             (422 Invalid)\n  request body:12:7: spec.attachments[0]: no such file\n"
        ),
        "{err}"
    );
    assert!(
        err.contains("b.yaml:4:"),
        "local errors carry file:line:col: {err}"
    );
    assert!(err.contains("imag"), "{err}");
    // The invalid document never left the machine; the valid one after the refused one did.
    let names: Vec<String> = seen
        .lock()
        .unwrap()
        .puts
        .iter()
        .map(|p| p.0.clone())
        .collect();
    assert_eq!(names, ["refused", "two"]);
    let printed: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(printed["metadata"]["name"], "two");
}

#[tokio::test]
async fn get_prints_a_table_or_the_servers_json() {
    let (client, seen) = client(None).await;
    let mut out = Vec::new();
    verbs::get(
        &client,
        None,
        Some("category=misc"),
        OutputFormat::Table,
        &mut out,
    )
    .await
    .unwrap();
    let table = text(out);
    assert!(
        table.starts_with("NAME      PHASE     READY  HEALTHY"),
        "{table}"
    );
    assert!(table.contains("echo-tcp  Degraded  1/2"), "{table}");
    assert!(seen.lock().unwrap().queries[0].contains("\"labelSelector\": \"category=misc\""));

    let mut out = Vec::new();
    verbs::get(
        &client,
        Some("echo-tcp"),
        None,
        OutputFormat::Yaml,
        &mut out,
    )
    .await
    .unwrap();
    let yaml: Value = serde_yaml::from_slice(&out).unwrap();
    assert_eq!(yaml, sample_status());

    let err = verbs::get(
        &client,
        Some("nope"),
        None,
        OutputFormat::Table,
        &mut Vec::new(),
    )
    .await
    .unwrap_err();
    assert_eq!(err.exit_code(), EXIT_FAILED);
    assert_eq!(
        err.to_string(),
        "challenge \"nope\" not found (404 NotFound)"
    );
}

#[tokio::test]
async fn describe_masks_the_flag_but_json_does_not() {
    let (client, _) = client(None).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("echo.yaml");
    std::fs::write(&file, ONE.replace("name: one", "name: echo-tcp")).unwrap();
    verbs::apply(
        &client,
        &[file],
        OutputFormat::Table,
        &mut Vec::new(),
        &mut Vec::new(),
    )
    .await
    .unwrap();
    let mut out = Vec::new();
    verbs::describe(&client, "echo-tcp", OutputFormat::Table, &mut out)
        .await
        .unwrap();
    let page = text(out);
    assert!(
        page.contains("flag: <hidden>") && !page.contains("flag{one}"),
        "{page}"
    );
    assert!(page.contains("Phase:               Degraded"), "{page}");
    let mut out = Vec::new();
    verbs::describe(&client, "echo-tcp", OutputFormat::Json, &mut out)
        .await
        .unwrap();
    let both: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(both["manifest"]["spec"]["flag"], "flag{one}");
    assert_eq!(both["status"]["name"], "echo-tcp");
}

#[tokio::test]
async fn actions_wait_for_their_task() {
    let (client, seen) = client(None).await;
    let mut out = Vec::new();
    let code = verbs::action(
        &client,
        Action::Redeploy,
        "echo-tcp",
        Some(Duration::from_secs(10)),
        OutputFormat::Table,
        &mut out,
    )
    .await
    .unwrap();
    assert_eq!(code, EXIT_OK);
    assert_eq!(
        text(out),
        "task t-echo-tcp queued: redeploy echo-tcp\n\
         task t-echo-tcp succeeded: 1 container(s) running\n"
    );
    assert_eq!(seen.lock().unwrap().polls["t-echo-tcp"], 2);

    let err = verbs::action(
        &client,
        Action::Deploy,
        "broken",
        Some(Duration::from_secs(10)),
        OutputFormat::Table,
        &mut Vec::new(),
    )
    .await
    .unwrap_err();
    assert_eq!(err.exit_code(), EXIT_FAILED);
    assert_eq!(
        err.to_string(),
        "task t-broken failed: image example/nope:1 not found"
    );

    let err = verbs::action(
        &client,
        Action::Undeploy,
        "stuck",
        Some(Duration::from_millis(300)),
        OutputFormat::Table,
        &mut Vec::new(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ClientError::TaskTimeout { .. }), "{err}");
    assert!(err.to_string().contains("still queued"), "{err}");

    let mut out = Vec::new();
    verbs::action(
        &client,
        Action::Delete,
        "gone",
        None,
        OutputFormat::Json,
        &mut out,
    )
    .await
    .unwrap();
    let task: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(
        (task["action"].as_str(), task["state"].as_str()),
        (Some("delete"), Some("queued"))
    );
    assert!(!seen.lock().unwrap().polls.contains_key("t-gone"));
}

#[tokio::test]
async fn logs_pass_the_query_and_stream_the_body() {
    let (client, _) = client(None).await;
    let mut out = Vec::new();
    let query = LogsQuery {
        tail: 5,
        follow: false,
        replica: Some(2),
        build: false,
    };
    verbs::logs(&client, "echo-tcp", &query, &mut out)
        .await
        .unwrap();
    assert_eq!(
        text(out),
        "echo-tcp {\"follow\": \"false\", \"replica\": \"2\", \"tail\": \"5\"}\nline 2\n"
    );
    let mut out = Vec::new();
    let follow = LogsQuery {
        follow: true,
        ..query
    };
    verbs::logs(&client, "echo-tcp", &follow, &mut out)
        .await
        .unwrap();
    assert_eq!(text(out), "tick 1\ntick 2\ntick 3\n");
}

#[tokio::test]
async fn a_401_hints_at_the_token() {
    let (server, _) = serve(Some("s3cret")).await;
    let anonymous = Client::new(&server, None).unwrap();
    let err = verbs::get(&anonymous, None, None, OutputFormat::Table, &mut Vec::new())
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Unauthorized { .. }), "{err}");
    assert!(err.to_string().contains("BEAST_TOKEN"), "{err}");
    assert_eq!(err.exit_code(), EXIT_FAILED);
    // apply stops at the first 401 instead of repeating it for every document.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.yaml"), format!("{ONE}---\n{TWO}")).unwrap();
    let result = verbs::apply(
        &anonymous,
        &[dir.path().to_path_buf()],
        OutputFormat::Table,
        &mut Vec::new(),
        &mut Vec::new(),
    )
    .await;
    assert!(matches!(result, Err(ClientError::Unauthorized { .. })));

    let with_token = Client::new(&server, Some("s3cret")).unwrap();
    verbs::get(
        &with_token,
        None,
        None,
        OutputFormat::Table,
        &mut Vec::new(),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn a_foreign_error_body_is_shown_as_it_came() {
    let (client, _) = client(None).await;
    let err = verbs::get(
        &client,
        Some("proxied"),
        None,
        OutputFormat::Table,
        &mut Vec::new(),
    )
    .await
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "the server answered 502 Bad Gateway: <html>bad gateway</html>"
    );
    assert_eq!(err.exit_code(), EXIT_FAILED);
    let mut out = Vec::new();
    verbs::get(
        &client,
        Some("echo-tcp"),
        None,
        OutputFormat::Table,
        &mut out,
    )
    .await
    .unwrap();
    assert_eq!(text(out).lines().count(), 2, "a header and one row");
}
