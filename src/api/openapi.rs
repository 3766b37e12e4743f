//! The OpenAPI document, generated from the same calls that register the routes: a namespace
//! adds a route and its documentation in one [`Api::route`] call, so the two cannot drift.

use axum::routing::MethodRouter;
use axum::Router;
use serde_json::{json, Map, Value};

use super::AppState;

/// One documented operation.
#[derive(Debug, Clone, PartialEq)]
pub struct Doc {
    pub method: &'static str,
    pub path: &'static str,
    pub summary: &'static str,
    /// The least role that may call it; `None` for open routes.
    pub role: Option<&'static str>,
    pub tag: &'static str,
}

/// A router that records what it routes.
pub struct Api {
    router: Router<AppState>,
    docs: Vec<Doc>,
    tag: &'static str,
}

impl Api {
    /// Routes of one namespace (`tag` in the document).
    pub fn new(tag: &'static str) -> Api {
        Api {
            router: Router::new(),
            docs: Vec::new(),
            tag,
        }
    }

    /// Adds `path` served by `handler`, documented by `(method, summary, role)` per method.
    pub fn route(
        mut self,
        path: &'static str,
        handler: MethodRouter<AppState>,
        ops: &[(&'static str, &'static str, Option<&'static str>)],
    ) -> Api {
        self.router = self.router.route(path, handler);
        for (method, summary, role) in ops {
            self.docs.push(Doc {
                method,
                path,
                summary,
                role: *role,
                tag: self.tag,
            });
        }
        self
    }

    pub fn merge(mut self, other: Api) -> Api {
        self.router = self.router.merge(other.router);
        self.docs.extend(other.docs);
        self
    }

    pub fn finish(self) -> (Router<AppState>, Vec<Doc>) {
        (self.router, self.docs)
    }
}

/// The OpenAPI 3.0 document of `docs`.
pub fn document(docs: &[Doc]) -> Value {
    let mut paths = Map::new();
    for d in docs {
        let params: Vec<Value> = d
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
            .map(|name| name.trim_start_matches('*'))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        let mut op = json!({
            "tags": [d.tag],
            "summary": d.summary,
            "operationId": format!("{}{}", d.method.to_lowercase(), d.path.replace(['/', '{', '}', '-', '.'], "_")),
            "parameters": params,
            "responses": {
                "200": {"description": "OK"},
                "default": {"description": "Error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
            }
        });
        if let Some(role) = d.role {
            op["security"] = json!([{"bearer": []}]);
            op["x-beast-role"] = json!(role);
        }
        let path = d.path.replace("{*", "{");
        let entry = paths.entry(path).or_insert_with(|| json!({}));
        entry[d.method.to_lowercase()] = op;
    }
    json!({
        "openapi": "3.0.3",
        "info": {"title": "beast API", "version": env!("CARGO_PKG_VERSION"),
                 "description": "A reconciliation operator for Docker that hosts CTF challenges."},
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
            "schemas": {"Error": {"type": "object", "properties": {"error": {"type": "object",
                "properties": {"code": {"type": "string"}, "message": {"type": "string"},
                               "details": {"type": "array", "items": {"type": "string"}}},
                "required": ["code", "message"]}}}}
        }
    })
}
