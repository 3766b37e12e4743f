//! The API client verbs of the command line (SPEC §4): `apply`, `get`, `describe`, `delete`,
//! `deploy`, `undeploy`, `redeploy` and `logs`, plus `instances ...` and `flags lookup`
//! (SPEC §8), speaking the v1 HTTP API of `docs/api.md`.
//!
//! [`http`] sends requests and turns failures into [`ClientError`]s; [`verbs`] does one verb each,
//! writing to any `Write`; [`render`] turns the server's JSON into tables and describe pages.
//! The `pub async fn`s here are what `main` calls: they print errors and pick the exit code
//! (0 ok, 1 refused or failed, 3 unreachable; clap uses 2 for usage errors).

pub mod http;
pub mod instances;
pub mod render;
pub mod verbs;

#[cfg(test)]
mod testserver;

use std::io::Write;
use std::process::ExitCode;

use crate::cli::{
    ActionArgs, ApplyArgs, ClientArgs, FlagsVerb, GetArgs, InstancesVerb, LogsArgs, NameArgs,
};
pub use http::Client;
pub use verbs::Action;

/// Exit code of a verb that did what it was asked.
pub const EXIT_OK: u8 = 0;
/// Exit code when the server refused a request, a manifest is invalid or a task failed.
pub const EXIT_FAILED: u8 = 1;
/// Exit code when the server cannot be reached.
pub const EXIT_UNREACHABLE: u8 = 3;

/// Why a client verb failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "cannot reach the beast server at {server} ({}); is 'beast run' running? \
         set --server or BEAST_SERVER",
        http::cause(.source)
    )]
    Unreachable {
        server: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{}", api_text(*.status, .code, .message, .details))]
    Api {
        status: u16,
        code: String,
        message: String,
        details: Vec<String>,
    },
    #[error(
        "unauthorized ({message}): pass a token with --token or BEAST_TOKEN \
         (an admin mints one with 'beast token --role author')"
    )]
    Unauthorized { message: String },
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("unexpected answer from the server ({what}): {reason}")]
    Decode { what: String, reason: String },
    #[error("--server {0:?} is not a usable URL")]
    BadServer(String),
    #[error("task {id} failed: {message}")]
    TaskFailed { id: String, message: String },
    #[error("task {id} did not finish within {after}; it is still {state}")]
    TaskTimeout {
        id: String,
        state: String,
        after: String,
    },
}

impl ClientError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            ClientError::Unreachable { .. } => EXIT_UNREACHABLE,
            _ => EXIT_FAILED,
        }
    }
}

/// `message (422 Invalid)` and then every detail the message does not already say, one a line.
fn api_text(status: u16, code: &str, message: &str, details: &[String]) -> String {
    let mut text = if message.starts_with(http::FOREIGN) {
        message.to_string()
    } else {
        format!("{message} ({status} {code})")
    };
    for detail in details.iter().filter(|d| d.as_str() != message) {
        text.push_str("\n  ");
        text.push_str(detail);
    }
    text
}

/// Prints `error: ...` for a failed verb and returns its exit code.
pub fn report(result: Result<u8, ClientError>) -> ExitCode {
    match result {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            let _ = writeln!(std::io::stderr(), "error: {err}");
            ExitCode::from(err.exit_code())
        }
    }
}

fn connect(args: &ClientArgs) -> Result<Client, ClientError> {
    Client::new(&args.server, args.token.as_deref())
}

/// `beast apply -f PATH...`.
pub async fn apply(args: ApplyArgs) -> ExitCode {
    let run = async {
        let client = connect(&args.client)?;
        let mut out = std::io::stdout();
        let mut err = std::io::stderr();
        verbs::apply(&client, &args.paths, args.client.output, &mut out, &mut err).await
    };
    report(run.await)
}

/// `beast get [NAME]`.
pub async fn get(args: GetArgs) -> ExitCode {
    let run = async {
        let client = connect(&args.client)?;
        let mut out = std::io::stdout();
        verbs::get(
            &client,
            args.name.as_deref(),
            args.selector.as_deref(),
            args.client.output,
            &mut out,
        )
        .await
    };
    report(run.await)
}

/// `beast describe NAME`.
pub async fn describe(args: NameArgs) -> ExitCode {
    let run = async {
        let client = connect(&args.client)?;
        verbs::describe(
            &client,
            &args.name,
            args.client.output,
            &mut std::io::stdout(),
        )
        .await
    };
    report(run.await)
}

/// `beast delete|deploy|undeploy|redeploy NAME`.
pub async fn action(action: Action, args: ActionArgs) -> ExitCode {
    let run = async {
        let client = connect(&args.client)?;
        let wait = (!args.no_wait).then(|| args.timeout.into());
        verbs::action(
            &client,
            action,
            &args.name,
            wait,
            args.client.output,
            &mut std::io::stdout(),
        )
        .await
    };
    report(run.await)
}

/// `beast logs NAME [-f]`.
pub async fn logs(args: LogsArgs) -> ExitCode {
    let run = async {
        let client = connect(&args.client)?;
        let query = verbs::LogsQuery {
            tail: args.tail,
            follow: args.follow,
            replica: args.replica,
            build: args.build,
        };
        verbs::logs(&client, &args.name, &query, &mut std::io::stdout()).await
    };
    report(run.await)
}

/// `beast instances list|get|create|renew|delete`.
pub async fn instances(verb: InstancesVerb) -> ExitCode {
    use instances::InstanceVerb;
    let run = async {
        let mut out = std::io::stdout();
        let (verb, args) = match verb {
            InstancesVerb::List(args) => {
                let client = connect(&args.client)?;
                return instances::list(
                    &client,
                    args.team.as_deref(),
                    args.challenge.as_deref(),
                    args.client.output,
                    &mut out,
                )
                .await;
            }
            InstancesVerb::Get(args) => (InstanceVerb::Get, args),
            InstancesVerb::Create(args) => (InstanceVerb::Create, args),
            InstancesVerb::Renew(args) => (InstanceVerb::Renew, args),
            InstancesVerb::Delete(args) => (InstanceVerb::Delete, args),
        };
        let client = connect(&args.client)?;
        instances::act(
            &client,
            verb,
            &args.name,
            args.team.as_deref(),
            args.client.output,
            &mut out,
        )
        .await
    };
    report(run.await)
}

/// `beast flags lookup FLAG`.
pub async fn flags(verb: FlagsVerb) -> ExitCode {
    let FlagsVerb::Lookup(args) = verb;
    let run = async {
        let client = connect(&args.client)?;
        instances::lookup(
            &client,
            &args.flag,
            args.client.output,
            &mut std::io::stdout(),
        )
        .await
    };
    report(run.await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_errors_list_every_detail_once() {
        let err = ClientError::Api {
            status: 422,
            code: "Invalid".into(),
            message: "request body:8:7: spec.ports[0].port: must be 1-65535".into(),
            details: vec![
                "request body:8:7: spec.ports[0].port: must be 1-65535".into(),
                "request body:3:9: metadata.name: required".into(),
            ],
        };
        assert_eq!(
            err.to_string(),
            "request body:8:7: spec.ports[0].port: must be 1-65535 (422 Invalid)\n  \
             request body:3:9: metadata.name: required"
        );
        assert_eq!(err.exit_code(), EXIT_FAILED);
    }

    #[test]
    fn unauthorized_hints_at_the_token() {
        let err = ClientError::Unauthorized {
            message: "missing bearer token".into(),
        };
        let text = err.to_string();
        assert!(text.contains("--token"), "{text}");
        assert!(text.contains("BEAST_TOKEN"), "{text}");
        assert!(text.contains("beast token"), "{text}");
    }

    #[tokio::test]
    async fn an_unreachable_server_says_so_and_exits_3() {
        // A port that was just free: nothing listens there.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or(1);
        let server = format!("http://127.0.0.1:{port}");
        let client = Client::new(&server, None).unwrap_or_else(|e| panic!("{e}"));
        let err = verbs::get(
            &client,
            None,
            None,
            crate::cli::OutputFormat::Table,
            &mut Vec::new(),
        )
        .await
        .err()
        .unwrap_or_else(|| panic!("nothing listens on {server}"));
        assert_eq!(err.exit_code(), EXIT_UNREACHABLE);
        assert_eq!(
            err.to_string(),
            format!(
                "cannot reach the beast server at {server} (connection refused); \
                 is 'beast run' running? set --server or BEAST_SERVER"
            )
        );
    }
}
