//! The HTTP side of the client: one [`Client`] per command, sending requests to the v1 API with
//! the bearer token and turning every failure into a [`ClientError`]: a connection failure into
//! `Unreachable`, a 401 into `Unauthorized`, any other non-2xx into `Api` from the server's
//! `{"error": {"code", "message", "details"?}}` body.

use std::time::Duration;

use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::Deserialize;
use serde_json::Value;

use super::ClientError;

/// How long a request (other than a log stream) may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How a message starts when the error body was not beast's (it names the status itself).
pub const FOREIGN: &str = "the server answered ";
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A connection to one beast server.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    /// Base URL without a trailing slash, e.g. `http://127.0.0.1:5005`.
    server: String,
    token: Option<String>,
}

/// The server's error body.
#[derive(Debug, Deserialize)]
struct ErrorBody {
    error: ErrorFields,
}

#[derive(Debug, Deserialize)]
struct ErrorFields {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    details: Vec<String>,
}

impl Client {
    /// A client for `server` (`http://host:port`; a bare `host:port` means http). An empty token
    /// counts as none.
    pub fn new(server: &str, token: Option<&str>) -> Result<Client, ClientError> {
        let server = normalize_server(server)?;
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("beast/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ClientError::Decode {
                what: "building the HTTP client".into(),
                reason: e.to_string(),
            })?;
        Ok(Client {
            http,
            server,
            token: token.filter(|t| !t.trim().is_empty()).map(str::to_string),
        })
    }

    /// The base URL requests go to.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// A request to `path` (starting with `/`), with the token.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let builder = self.http.request(method, format!("{}{path}", self.server));
        match &self.token {
            Some(token) => builder.bearer_auth(token),
            None => builder,
        }
    }

    /// Sends `request` and returns the response if its status is 2xx. No overall timeout: a log
    /// stream may stay open for as long as the user wants.
    pub async fn send_streaming(&self, request: RequestBuilder) -> Result<Response, ClientError> {
        let response = request.send().await.map_err(|e| self.transport(e))?;
        if response.status().is_success() {
            Ok(response)
        } else {
            Err(error_from(response).await)
        }
    }

    /// Sends `request` and reads a JSON answer (`null` for an empty body), with its status.
    pub async fn send_json(
        &self,
        request: RequestBuilder,
    ) -> Result<(StatusCode, Value), ClientError> {
        let response = self
            .send_streaming(request.timeout(REQUEST_TIMEOUT))
            .await?;
        let status = response.status();
        let what = format!("{} {}", status.as_u16(), response.url().path());
        let bytes = response.bytes().await.map_err(|e| self.transport(e))?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok((status, Value::Null));
        }
        let value = serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode {
            what,
            reason: e.to_string(),
        })?;
        Ok((status, value))
    }

    /// `GET path` as JSON.
    pub async fn get_json(&self, path: &str) -> Result<Value, ClientError> {
        Ok(self.send_json(self.request(Method::GET, path)).await?.1)
    }

    /// A failure before any status arrived.
    fn transport(&self, source: reqwest::Error) -> ClientError {
        if source.is_connect() || source.is_timeout() || source.is_request() {
            ClientError::Unreachable {
                server: self.server.clone(),
                source,
            }
        } else {
            ClientError::Decode {
                what: format!("reading from {}", self.server),
                reason: cause(&source),
            }
        }
    }
}

/// `http://host:port` without a trailing slash; a bare `host:port` gets `http://`.
fn normalize_server(server: &str) -> Result<String, ClientError> {
    let trimmed = server.trim().trim_end_matches('/');
    let url = if trimmed.contains("://") {
        trimmed.to_string()
    } else {
        format!("http://{trimmed}")
    };
    match reqwest::Url::parse(&url) {
        Ok(parsed) if matches!(parsed.scheme(), "http" | "https") && parsed.has_host() => Ok(url),
        _ => Err(ClientError::BadServer(server.to_string())),
    }
}

/// The error a non-2xx response stands for.
async fn error_from(response: Response) -> ClientError {
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    let (code, message, details) = match serde_json::from_str::<ErrorBody>(&text) {
        Ok(body) => (body.error.code, body.error.message, body.error.details),
        // Not beast's error body (a proxy, another program on the port): say what came back.
        Err(_) => {
            let line = first_line(&text);
            let message = if line.is_empty() {
                format!("{FOREIGN}{status}")
            } else {
                format!("{FOREIGN}{status}: {line}")
            };
            (String::new(), message, Vec::new())
        }
    };
    let code = if code.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("Error")
            .replace(' ', "")
    } else {
        code
    };
    let message = if message.is_empty() {
        status.to_string()
    } else {
        message
    };
    if status == StatusCode::UNAUTHORIZED {
        return ClientError::Unauthorized { message };
    }
    ClientError::Api {
        status: status.as_u16(),
        code,
        message,
        details,
    }
}

/// The first line of a non-JSON error body, cut to a readable length.
fn first_line(text: &str) -> String {
    text.lines()
        .next()
        .unwrap_or("")
        .chars()
        .take(200)
        .collect()
}

/// The innermost reason of a transport error, in words: `connection refused`, `timed out`, or
/// the deepest error's own message.
pub fn cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut deepest = error;
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            match io.kind() {
                std::io::ErrorKind::ConnectionRefused => return "connection refused".into(),
                std::io::ErrorKind::TimedOut => return "timed out".into(),
                _ => {}
            }
        }
        deepest = e;
        current = e.source();
    }
    if let Some(reqwest) = error.downcast_ref::<reqwest::Error>() {
        if reqwest.is_timeout() {
            return "timed out".into();
        }
    }
    deepest.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_are_normalized() {
        let ok = |s: &str| normalize_server(s).unwrap_or_else(|e| panic!("{s}: {e}"));
        assert_eq!(ok("http://127.0.0.1:5005/"), "http://127.0.0.1:5005");
        assert_eq!(ok("127.0.0.1:5005"), "http://127.0.0.1:5005");
        assert_eq!(ok("https://beast.example"), "https://beast.example");
        assert!(normalize_server("ftp://x").is_err());
        assert!(normalize_server("").is_err());
    }

    #[test]
    fn empty_tokens_are_no_tokens() {
        let client = Client::new("http://x", Some("  ")).unwrap_or_else(|e| panic!("{e}"));
        assert!(client.token.is_none());
    }
}
