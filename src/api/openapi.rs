//! The OpenAPI document, generated from the same calls that register the routes: a namespace
//! adds a route and its documentation ([`Op`]: summary, role, responses with the Rust types the
//! handler serialises, request body, query and header parameters) in one [`Api::route`] call, so
//! the two cannot drift. Schemas come from `schemars` derives on those types; this module is the
//! one place that turns them into the document.

use axum::http::StatusCode;
use axum::routing::MethodRouter;
use axum::Router;
use schemars::generate::{Contract, SchemaSettings};
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde_json::{json, Map, Value};

use super::AppState;

/// Makes the schema of a type, registering what it refers to in the generator.
pub type SchemaFn = fn(&mut SchemaGenerator) -> Schema;

fn schema_of<T: JsonSchema>(generator: &mut SchemaGenerator) -> Schema {
    generator.subschema_for::<T>()
}

/// What a response carries.
#[derive(Clone, Copy)]
pub enum Content {
    /// `application/json` of a type.
    Json(SchemaFn),
    /// Text of this media type.
    Text(&'static str),
    /// A file of any media type.
    File,
    /// No body (204, 304).
    Empty,
}

/// One documented response.
#[derive(Clone, Copy)]
pub struct Reply {
    pub status: u16,
    pub content: Content,
}

/// One documented operation: built with [`Op::get`] and friends, completed by [`Api::route`].
#[derive(Clone)]
pub struct Op {
    pub method: &'static str,
    /// Filled in by [`Api::route`].
    pub path: &'static str,
    pub summary: &'static str,
    /// The least role that may call it; `None` for open routes.
    pub role: Option<&'static str>,
    /// Filled in by [`Api::route`].
    pub tag: &'static str,
    /// The success responses.
    pub replies: Vec<Reply>,
    /// Error statuses this operation answers besides the ones every operation may.
    pub errors: Vec<u16>,
    /// A JSON request body and whether it is required.
    pub body: Option<(SchemaFn, bool)>,
    /// An example request body (JSON text).
    pub example: Option<&'static str>,
    /// A type whose fields are the query parameters.
    pub query: Option<SchemaFn>,
    /// Request headers it reads: (name, description).
    pub headers: Vec<(&'static str, &'static str)>,
}

impl Op {
    fn new(method: &'static str, summary: &'static str) -> Op {
        Op {
            method,
            path: "",
            summary,
            role: None,
            tag: "",
            replies: Vec::new(),
            errors: Vec::new(),
            body: None,
            example: None,
            query: None,
            headers: Vec::new(),
        }
    }

    pub fn get(summary: &'static str) -> Op {
        Op::new("GET", summary)
    }

    pub fn post(summary: &'static str) -> Op {
        Op::new("POST", summary)
    }

    pub fn put(summary: &'static str) -> Op {
        Op::new("PUT", summary)
    }

    pub fn delete(summary: &'static str) -> Op {
        Op::new("DELETE", summary)
    }

    /// Needs a bearer token of at least `role`.
    pub fn role(mut self, role: &'static str) -> Op {
        self.role = Some(role);
        self
    }

    /// Answers `status` with `T` as JSON.
    pub fn json<T: JsonSchema>(self, status: u16) -> Op {
        self.reply(status, Content::Json(schema_of::<T>))
    }

    /// Answers `status` with `content`.
    pub fn reply(mut self, status: u16, content: Content) -> Op {
        self.replies.push(Reply { status, content });
        self
    }

    /// Takes `T` as a JSON body (`required`: an empty body is refused).
    pub fn body<T: JsonSchema>(mut self, required: bool) -> Op {
        self.body = Some((schema_of::<T>, required));
        self
    }

    /// An example of the request body, as JSON text.
    pub fn example(mut self, json: &'static str) -> Op {
        self.example = Some(json);
        self
    }

    /// Reads the fields of `T` from the query string.
    pub fn query<T: JsonSchema>(mut self) -> Op {
        self.query = Some(schema_of::<T>);
        self
    }

    /// Reads the request header `name`.
    pub fn header(mut self, name: &'static str, description: &'static str) -> Op {
        self.headers.push((name, description));
        self
    }

    /// May also answer these error statuses.
    pub fn errors(mut self, statuses: &[u16]) -> Op {
        self.errors.extend_from_slice(statuses);
        self
    }
}

/// A router that records what it routes.
pub struct Api {
    router: Router<AppState>,
    docs: Vec<Op>,
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

    /// Adds `path` served by `handler`, documented by one [`Op`] per method.
    pub fn route(
        mut self,
        path: &'static str,
        handler: MethodRouter<AppState>,
        ops: impl IntoIterator<Item = Op>,
    ) -> Api {
        self.router = self.router.route(path, handler);
        for mut op in ops {
            op.path = path;
            op.tag = self.tag;
            self.docs.push(op);
        }
        self
    }

    pub fn merge(mut self, other: Api) -> Api {
        self.router = self.router.merge(other.router);
        self.docs.extend(other.docs);
        self
    }

    pub fn finish(self) -> (Router<AppState>, Vec<Op>) {
        (self.router, self.docs)
    }
}

/// The schema of every error body: `{"error": {"code", "message", "details"?}}`, plus the live
/// `instance` of a 409 at an instance limit.
fn error_schema() -> Value {
    json!({
        "type": "object",
        "required": ["error"],
        "properties": {"error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "details": {"type": "array", "items": {"type": "string"}}
            }
        },
        "instance": {"type": "object",
                     "description": "the team's live instance (409 at spec.instances.maxPerTeam)"}}
    })
}

/// Errors any route may answer: a request the router refuses before the handler (a bad query or
/// header), a request that took too long, a body over the limit, an internal failure (a wrong
/// method is not listed: it is no operation).
const ALWAYS: [u16; 4] = [400, 408, 413, 500];

/// Schema generation for responses (what handlers serialise) and for inputs (what they
/// deserialise; inlined, so one type may differ between the two without a name clash).
struct Schemas {
    out: SchemaGenerator,
    input: SchemaGenerator,
}

impl Schemas {
    fn new() -> Schemas {
        let settings = SchemaSettings::openapi3().with(|s| s.meta_schema = None);
        Schemas {
            out: settings
                .clone()
                .with(|s| s.contract = Contract::Serialize)
                .into_generator(),
            input: settings
                .with(|s| {
                    s.contract = Contract::Deserialize;
                    s.inline_subschemas = true;
                })
                .into_generator(),
        }
    }

    fn output(&mut self, f: SchemaFn) -> Value {
        transformed(&mut self.out, f)
    }

    fn input(&mut self, f: SchemaFn) -> Value {
        transformed(&mut self.input, f)
    }
}

/// `f`'s schema with the generator's transforms applied (definitions get theirs when taken).
fn transformed(generator: &mut SchemaGenerator, f: SchemaFn) -> Value {
    let mut schema = f(generator);
    for transform in generator.transforms_mut() {
        transform.transform(&mut schema);
    }
    schema.to_value()
}

fn reason(status: u16) -> &'static str {
    StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Response")
}

/// The OpenAPI 3.0 document of `docs`.
pub fn document(docs: &[Op]) -> Value {
    let mut schemas = Schemas::new();
    let mut paths = Map::new();
    for d in docs {
        let mut params: Vec<Value> = d
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
            .map(|name| name.trim_start_matches('*'))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        if let Some(query) = d.query {
            params.extend(query_params(&schemas.input(query)));
        }
        for (name, description) in &d.headers {
            params.push(json!({"name": name, "in": "header", "required": false,
                               "description": description, "schema": {"type": "string"}}));
        }
        let mut responses = Map::new();
        for reply in &d.replies {
            let content = match reply.content {
                Content::Json(f) => json!({"application/json": {"schema": schemas.output(f)}}),
                Content::Text(mime) => json!({mime: {"schema": {"type": "string"}}}),
                Content::File => json!({"*/*": {"schema": {"type": "string", "format": "binary"}}}),
                Content::Empty => Value::Null,
            };
            let mut response = json!({"description": reason(reply.status)});
            if !content.is_null() {
                response["content"] = content;
            }
            responses.insert(reply.status.to_string(), response);
        }
        let mut errors: Vec<u16> = ALWAYS.to_vec();
        if d.role.is_some() {
            errors.extend([401, 403]);
        }
        errors.extend(&d.errors);
        for status in errors {
            responses.entry(status.to_string()).or_insert_with(|| {
                json!({"description": reason(status),
                       "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}})
            });
        }
        let mut op = json!({
            "tags": [d.tag],
            "summary": d.summary,
            "operationId": format!("{}{}", d.method.to_lowercase(), d.path.replace(['/', '{', '}', '-', '.', '*'], "_")),
            "parameters": params,
            "responses": responses,
        });
        if let Some((body, required)) = d.body {
            let mut media = json!({"schema": schemas.input(body)});
            if let Some(example) = d
                .example
                .and_then(|e| serde_json::from_str::<Value>(e).ok())
            {
                media["example"] = example;
            }
            op["requestBody"] =
                json!({"required": required, "content": {"application/json": media}});
        }
        if let Some(role) = d.role {
            op["security"] = json!([{"bearer": []}]);
            op["x-beast-role"] = json!(role);
        }
        let path = d.path.replace("{*", "{");
        let entry = paths.entry(path).or_insert_with(|| json!({}));
        entry[d.method.to_lowercase()] = op;
    }
    let mut components = schemas.out.take_definitions(true);
    components.insert("Error".to_string(), error_schema());
    json!({
        "openapi": "3.0.3",
        "info": {"title": "beast API", "version": env!("CARGO_PKG_VERSION"),
                 "description": "A reconciliation operator for Docker that hosts CTF challenges."},
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
            "schemas": components
        }
    })
}

/// One query parameter per property of an (inlined) object schema.
fn query_params(schema: &Value) -> Vec<Value> {
    let required: Vec<&str> = schema["required"]
        .as_array()
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let Some(properties) = schema["properties"].as_object() else {
        return Vec::new();
    };
    properties
        .iter()
        .map(|(name, property)| {
            let mut property = property.clone();
            let fields = property.as_object_mut();
            // Absent is how a query string says "none".
            let description = fields.and_then(|p| {
                p.remove("nullable");
                p.remove("description")
            });
            let mut param = json!({"name": name, "in": "query",
                                   "required": required.contains(&name.as_str()),
                                   "schema": property});
            if let Some(d) = description {
                param["description"] = d;
            }
            param
        })
        .collect()
}
