//! The web pages (SPEC §10): `/` the organisers' dashboard and `/play` the players' page.
//!
//! The pages are static files embedded in the binary (`include_str!`): plain HTML, one stylesheet
//! and a little vanilla JavaScript, no build step and no third-party asset. They hold no data and
//! no secret: the scripts read everything from the API with the token the user pastes (kept in the
//! browser's session storage), so serving them needs no authentication. Every response carries
//! strict security headers ([`SECURITY_HEADERS`]): no inline script, no framing, no sniffing.
//! This module must not read state or talk to the engine; it only serves bytes.

use axum::http::{header, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

/// One embedded file and the path it is served at.
pub struct Asset {
    pub path: &'static str,
    pub content_type: &'static str,
    pub body: &'static str,
}

const HTML: &str = "text/html; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const SVG: &str = "image/svg+xml";

/// Every file the pages are made of.
pub const ASSETS: &[Asset] = &[
    Asset {
        path: "/",
        content_type: HTML,
        body: include_str!("assets/index.html"),
    },
    Asset {
        path: "/play",
        content_type: HTML,
        body: include_str!("assets/play.html"),
    },
    Asset {
        path: "/ui/app.css",
        content_type: CSS,
        body: include_str!("assets/app.css"),
    },
    Asset {
        path: "/ui/common.js",
        content_type: JS,
        body: include_str!("assets/common.js"),
    },
    Asset {
        path: "/ui/dash.js",
        content_type: JS,
        body: include_str!("assets/dash.js"),
    },
    Asset {
        path: "/ui/play.js",
        content_type: JS,
        body: include_str!("assets/play.js"),
    },
    Asset {
        path: "/ui/icon.svg",
        content_type: SVG,
        body: include_str!("assets/icon.svg"),
    },
];

/// The Content-Security-Policy of the pages: scripts, styles, images and API calls from this
/// origin only; no inline script or style, no plugin, no framing, no form posts elsewhere.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The headers every page and asset is served with.
pub const SECURITY_HEADERS: &[(&str, &str)] = &[
    ("content-security-policy", CSP),
    ("x-frame-options", "DENY"),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("cross-origin-opener-policy", "same-origin"),
    ("cross-origin-resource-policy", "same-origin"),
    (
        "permissions-policy",
        "camera=(), microphone=(), geolocation=(), payment=()",
    ),
    // The files change with the binary; revalidating is cheap on the operator's own host.
    ("cache-control", "no-cache"),
];

/// The routes of the pages, to merge into the API router (any state: they read none).
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    ASSETS.iter().fold(Router::new(), |router, asset| {
        router.route(asset.path, get(move || async move { serve(asset) }))
    })
}

/// One asset with its content type and the security headers.
pub fn serve(asset: &'static Asset) -> Response {
    let mut response = asset.body.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    for (name, value) in SECURITY_HEADERS {
        headers.insert(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    response
}

/// The pages' total weight in bytes.
pub fn total_size() -> usize {
    ASSETS.iter().map(|a| a.body.len()).sum()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;

    #[test]
    fn the_pages_weigh_under_100_kib_in_all() {
        let total = total_size();
        assert!(total < 100 * 1024, "the pages weigh {total} bytes");
    }

    #[test]
    fn no_page_carries_inline_script_or_style_or_a_foreign_asset() {
        for asset in ASSETS.iter().filter(|a| a.content_type == HTML) {
            let body = asset.body;
            for bad in [
                "<style",
                " style=",
                "onclick",
                "onload",
                "javascript:",
                "http://",
                "https://",
            ] {
                assert!(!body.contains(bad), "{} contains {bad:?}", asset.path);
            }
            for (i, _) in body.match_indices("<script") {
                let tag = &body[i..body[i..].find('>').map_or(body.len(), |e| i + e)];
                assert!(
                    tag.contains("src=\"/ui/"),
                    "{}: inline script {tag}",
                    asset.path
                );
            }
        }
        for asset in ASSETS.iter().filter(|a| a.content_type == JS) {
            assert!(
                !asset.body.contains("innerHTML") && !asset.body.contains("eval("),
                "{} must insert text with textContent only",
                asset.path
            );
        }
    }

    #[tokio::test]
    async fn every_page_and_asset_is_served_with_the_security_headers() {
        let app = crate::api::router(crate::api::AppState::for_tests(
            crate::auth::Auth::disabled(),
        ));
        for asset in ASSETS {
            let response = app
                .clone()
                .oneshot(Request::get(asset.path).body(Body::empty()).unwrap())
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::OK, "{}", asset.path);
            let headers = response.headers();
            assert_eq!(headers[header::CONTENT_TYPE], asset.content_type);
            for (name, value) in SECURITY_HEADERS {
                assert_eq!(headers[*name], *value, "{} {name}", asset.path);
            }
            let csp = headers["content-security-policy"].to_str().unwrap();
            assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe"));
            assert!(csp.contains("frame-ancestors 'none'"));
        }
    }

    #[tokio::test]
    async fn the_pages_need_no_token_even_with_auth_on() {
        let keys = crate::auth::Keys::new(b"web-tests-secret-0123456789-0123456789").unwrap();
        let app = crate::api::router(crate::api::AppState::for_tests(crate::auth::Auth::enabled(
            keys,
        )));
        let response = app
            .oneshot(Request::get("/play").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
}
