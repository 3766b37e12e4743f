//! The notification namespace: the server-sent-events feed and webhook subscriptions.
//!
//! Handlers translate HTTP to [`crate::notify`] calls and back; the feed, its resume rules and
//! delivery live there.

use crate::auth::{RequireAdmin, RequireViewer};
use std::convert::Infallible;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::{delete, get};
use axum::Json;
use futures::Stream;
use schemars::JsonSchema;
use serde::Deserialize;

use super::openapi::{Api, Content, Op};
use super::{ApiError, AppState, Items};
use crate::notify::sse::{self, Filter, Start};
use crate::notify::{NewWebhook, NotifyError, WebhookView};

pub fn routes() -> Api {
    Api::new("notification")
        .route(
            "/api/v1/notification/events",
            get(events),
            [
                Op::get("Server-sent events of status changes, heals and task results")
                    .role("viewer")
                    .query::<EventsQuery>()
                    .header("Last-Event-ID", "Resume after this notification id")
                    .reply(200, Content::Text("text/event-stream")),
            ],
        )
        .route(
            "/api/v1/notification/webhooks",
            get(list).post(create),
            [
                Op::get("List webhook subscriptions")
                    .role("admin")
                    .json::<Items<WebhookView>>(200),
                Op::post("Subscribe a Slack- or Discord-compatible webhook")
                    .role("admin")
                    .body::<NewWebhook>(true)
                    .json::<WebhookView>(201),
            ],
        )
        .route(
            "/api/v1/notification/webhooks/{id}",
            delete(remove),
            [Op::delete("Remove a webhook subscription")
                .role("admin")
                .reply(204, Content::Empty)
                .errors(&[404])],
        )
}

#[derive(Debug, Deserialize, JsonSchema)]
struct EventsQuery {
    /// `heal,task`: only these kinds.
    kind: Option<String>,
    /// `echo,web`: only these challenges.
    challenge: Option<String>,
    /// For clients that cannot set the `Last-Event-ID` header; the header wins.
    #[serde(rename = "lastEventId")]
    last_event_id: Option<String>,
}

async fn events(
    _: RequireViewer,
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<EventsQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let filter = Filter::parse(q.kind.as_deref(), q.challenge.as_deref())?;
    let header = headers.get("last-event-id").and_then(|v| v.to_str().ok());
    let start = Start::parse(header.or(q.last_event_id.as_deref()));
    let keep_alive = KeepAlive::new().interval(state.notifier.keep_alive());
    Ok(Sse::new(sse::events(&state.notifier, start, filter)).keep_alive(keep_alive))
}

async fn list(_: RequireAdmin, State(state): State<AppState>) -> Json<Items<WebhookView>> {
    Json(Items {
        items: state.webhooks.list(),
    })
}

async fn create(
    _: RequireAdmin,
    State(state): State<AppState>,
    body: Bytes,
) -> Result<(StatusCode, Json<WebhookView>), ApiError> {
    let request: NewWebhook = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("request body: {e}")))?;
    let view = state.webhooks.create(request).await?;
    Ok((StatusCode::CREATED, Json(view)))
}

async fn remove(
    _: RequireAdmin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if state.webhooks.delete(&id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound(format!("webhook {id:?} not found")))
    }
}

impl From<NotifyError> for ApiError {
    fn from(err: NotifyError) -> ApiError {
        match err {
            NotifyError::Invalid(message) => ApiError::BadRequest(message),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::time::Duration;

    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use serde_json::{json, Value};
    use tower::ServiceExt;

    use crate::api::{router, AppState};
    use crate::auth::Auth;
    use crate::notify::{Delivery, Kind, Notifier, NotifierConfig, Webhooks};

    fn state(keep_alive: Duration) -> AppState {
        let webhooks = Webhooks::in_memory(Delivery::default()).unwrap();
        let config = NotifierConfig {
            keep_alive,
            ..NotifierConfig::default()
        };
        let mut state = AppState::for_tests(Auth::disabled());
        state.notifier = Notifier::new(config, Some(webhooks.clone()));
        state.webhooks = webhooks;
        state
    }

    fn get(uri: &str) -> Request<Body> {
        Request::get(uri).body(Body::empty()).unwrap()
    }

    fn post_json(uri: &str, body: &str) -> Request<Body> {
        Request::post(uri)
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
            .unwrap()
    }

    /// Reads an SSE body until it contains `needle`; panics after 2 s.
    async fn read_until(body: &mut Body, needle: &str) -> String {
        let mut text = String::new();
        let read = tokio::time::timeout(Duration::from_secs(2), async {
            while !text.contains(needle) {
                let frame = body.frame().await.expect("stream ended").unwrap();
                if let Ok(data) = frame.into_data() {
                    text.push_str(std::str::from_utf8(&data).unwrap());
                }
            }
        })
        .await;
        assert!(read.is_ok(), "no {needle:?} in {text:?}");
        text
    }

    async fn json_body(response: axum::response::Response) -> Value {
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn live_events_have_id_event_and_data_lines() {
        let state = state(Duration::from_secs(15));
        let response = router(state.clone())
            .oneshot(get("/api/v1/notification/events"))
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        state.notifier.publish(
            Kind::Heal,
            "echo",
            "beast_echo_1 exited".into(),
            json!({"exitCode": 137}),
        );
        let mut body = response.into_body();
        let text = read_until(&mut body, "\n\n").await;
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines.contains(&"id: 1"), "{text}");
        assert!(lines.contains(&"event: heal"), "{text}");
        let data = lines.iter().find_map(|l| l.strip_prefix("data: ")).unwrap();
        let note: Value = serde_json::from_str(data).unwrap();
        assert_eq!(note["id"], 1);
        assert_eq!(note["kind"], "heal");
        assert_eq!(note["challenge"], "echo");
        assert_eq!(note["data"]["exitCode"], 137);
    }

    #[tokio::test]
    async fn last_event_id_replays_only_newer_notifications() {
        let state = state(Duration::from_secs(15));
        for i in 1..=3 {
            state
                .notifier
                .publish(Kind::Status, "echo", format!("m{i}"), json!({}));
        }
        let request = Request::get("/api/v1/notification/events")
            .header("last-event-id", "1")
            .body(Body::empty())
            .unwrap();
        let response = router(state.clone()).oneshot(request).await.unwrap();
        let mut body = response.into_body();
        let text = read_until(&mut body, "id: 3\n").await;
        assert!(text.contains("id: 2\n"));
        assert!(!text.contains("id: 1\n"), "{text}");
        assert!(!text.contains("event: reset"), "{text}");
        // The query form, for clients that cannot set headers.
        let response = router(state)
            .oneshot(get("/api/v1/notification/events?lastEventId=2"))
            .await
            .unwrap();
        let mut body = response.into_body();
        let text = read_until(&mut body, "id: 3\n").await;
        assert!(!text.contains("id: 2\n"), "{text}");
    }

    #[tokio::test]
    async fn an_id_from_another_process_gets_a_reset_first() {
        let state = state(Duration::from_secs(15));
        state
            .notifier
            .publish(Kind::Task, "echo", "done".into(), json!({}));
        let response = router(state)
            .oneshot(get("/api/v1/notification/events?lastEventId=900"))
            .await
            .unwrap();
        let mut body = response.into_body();
        let text = read_until(&mut body, "id: 1\n").await;
        let reset = text.find("event: reset").expect("no reset");
        assert!(reset < text.find("id: 1\n").unwrap(), "{text}");
    }

    #[tokio::test]
    async fn filters_select_kinds_and_challenges() {
        let state = state(Duration::from_secs(15));
        let n = &state.notifier;
        n.publish(Kind::Heal, "echo", "1".into(), json!({}));
        n.publish(Kind::Task, "web", "2".into(), json!({}));
        n.publish(Kind::Task, "echo", "3".into(), json!({}));
        n.publish(Kind::Status, "echo", "4".into(), json!({}));
        let response = router(state.clone())
            .oneshot(get(
                "/api/v1/notification/events?kind=task,heal&challenge=echo&lastEventId=0",
            ))
            .await
            .unwrap();
        let mut body = response.into_body();
        state
            .notifier
            .publish(Kind::Heal, "echo", "5".into(), json!({}));
        let text = read_until(&mut body, "id: 5\n").await;
        let ids: Vec<&str> = text.lines().filter(|l| l.starts_with("id: ")).collect();
        assert_eq!(ids, vec!["id: 1", "id: 3", "id: 5"]);
    }

    #[tokio::test]
    async fn an_unknown_kind_filter_is_a_json_400() {
        let response = router(state(Duration::from_secs(15)))
            .oneshot(get("/api/v1/notification/events?kind=heal,explosion"))
            .await
            .unwrap();
        assert_eq!(response.status(), 400);
        assert_eq!(json_body(response).await["error"]["code"], "BadRequest");
    }

    #[tokio::test]
    async fn idle_streams_get_keep_alive_comments() {
        // Kept alive: a feed ends when the last Notifier is gone.
        let state = state(Duration::from_millis(50));
        let response = router(state.clone())
            .oneshot(get("/api/v1/notification/events"))
            .await
            .unwrap();
        let mut body = response.into_body();
        read_until(&mut body, ":\n\n").await;
    }

    #[tokio::test]
    async fn webhooks_are_created_listed_and_deleted() {
        let app = router(state(Duration::from_secs(15)));
        let response = app
            .clone()
            .oneshot(post_json(
                "/api/v1/notification/webhooks",
                r#"{"url": "https://hooks.slack.com/services/T/B/x", "kinds": ["heal"]}"#,
            ))
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        let created = json_body(response).await;
        let id = created["id"].as_str().unwrap().to_string();
        assert!(id.starts_with("wh-"));
        assert_eq!(created["url"], "https://hooks.slack.com/services/T/B/x");
        assert_eq!(created["kinds"], json!(["heal"]));
        assert_eq!(created["challenges"], json!([]));

        let list = json_body(
            app.clone()
                .oneshot(get("/api/v1/notification/webhooks"))
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(list["items"].as_array().unwrap().len(), 1);
        assert_eq!(list["items"][0]["id"], id.as_str());
        assert_eq!(
            list["items"][0]["stats"],
            json!({"delivered": 0, "failed": 0, "dropped": 0, "lastError": null})
        );

        let uri = format!("/api/v1/notification/webhooks/{id}");
        let delete = || Request::delete(&uri).body(Body::empty()).unwrap();
        assert_eq!(app.clone().oneshot(delete()).await.unwrap().status(), 204);
        let again = app.clone().oneshot(delete()).await.unwrap();
        assert_eq!(again.status(), 404);
        assert_eq!(json_body(again).await["error"]["code"], "NotFound");
        let list = json_body(
            app.oneshot(get("/api/v1/notification/webhooks"))
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(list, json!({"items": []}));
    }

    #[tokio::test]
    async fn bad_webhook_requests_are_json_400s() {
        let app = router(state(Duration::from_secs(15)));
        for body in [
            r#"{"url": "ftp://example.com/x"}"#,
            r#"{"url": "https://"}"#,
            r#"{"url": "not a url"}"#,
            r#"{"url": "https://example.com", "kinds": ["explosion"]}"#,
            r#"{"url": "https://example.com", "colour": "red"}"#,
            r#"{"kinds": ["heal"]}"#,
            r#"{"url": "#,
        ] {
            let response = app
                .clone()
                .oneshot(post_json("/api/v1/notification/webhooks", body))
                .await
                .unwrap();
            assert_eq!(response.status(), 400, "{body}");
            let error = json_body(response).await;
            assert_eq!(error["error"]["code"], "BadRequest", "{body}");
        }
    }
}
