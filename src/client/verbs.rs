//! One function per client verb. Each writes what the user sees to the `Write`rs it is given
//! (so tests can read it) and returns the exit code, or the [`ClientError`] that stopped it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::StreamExt;
use reqwest::{Method, RequestBuilder, StatusCode};
use serde::Deserialize;
use serde_json::Value;

use super::render::{self, ChallengeView};
use super::{Client, ClientError, EXIT_FAILED, EXIT_OK};
use crate::cli::OutputFormat;
use crate::manifest;

/// First pause between two looks at a task; doubles up to [`POLL_MAX`].
const POLL_FIRST: Duration = Duration::from_millis(100);
const POLL_MAX: Duration = Duration::from_secs(1);

/// One valid document of a local manifest file, ready to send.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalDoc {
    pub name: String,
    /// The document alone, as YAML.
    pub yaml: String,
}

/// `apply -f PATH...`: validates every document locally (errors with `file:line:col`), then
/// sends each valid one with `PUT /api/v1/manage/challenges/{name}`. Goes on past a refused
/// document; stops when the server is unreachable or refuses the token.
pub async fn apply(
    client: &Client,
    paths: &[PathBuf],
    format: OutputFormat,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<u8, ClientError> {
    let mut failed = false;
    let mut answers = Vec::new();
    for path in paths {
        let (docs, errors) = local_documents(path);
        for error in &errors {
            writeln!(err, "error: {error}")?;
        }
        failed |= !errors.is_empty();
        for doc in docs {
            match put(client, &doc).await {
                Ok((verb, manifest)) => {
                    if format == OutputFormat::Table {
                        writeln!(out, "challenge/{} {verb}", doc.name)?;
                    }
                    answers.push(manifest);
                }
                Err(e @ (ClientError::Unreachable { .. } | ClientError::Unauthorized { .. })) => {
                    return Err(e)
                }
                Err(e) => {
                    writeln!(err, "error: challenge/{}: {e}", doc.name)?;
                    failed = true;
                }
            }
        }
    }
    let printed = match answers.len() {
        1 => answers.pop().unwrap_or_default(),
        _ => serde_json::json!({ "items": answers }),
    };
    if let Some(text) = render::structured(&printed, format)? {
        out.write_all(text.as_bytes())?;
    }
    Ok(if failed { EXIT_FAILED } else { EXIT_OK })
}

/// The valid documents under `path` (a file, or a directory walked like the server walks it)
/// and the messages of everything that is not.
pub fn local_documents(path: &Path) -> (Vec<LocalDoc>, Vec<String>) {
    let (files, root) = if path.is_dir() {
        match manifest::discover(path) {
            Ok(files) if files.is_empty() => {
                return (
                    Vec::new(),
                    vec![format!("{}: no *.yaml or *.yml files", path.display())],
                )
            }
            Ok(files) => (files, path.to_path_buf()),
            Err(e) => return (Vec::new(), vec![e.to_string()]),
        }
    } else {
        (vec![path.to_path_buf()], folder_of(path))
    };
    let mut docs = Vec::new();
    let mut errors = Vec::new();
    for file in files {
        let (mut d, mut e) = file_documents(&file, &root);
        docs.append(&mut d);
        errors.append(&mut e);
    }
    if docs.is_empty() && errors.is_empty() {
        errors.push(format!("{}: no challenge documents", path.display()));
    }
    (docs, errors)
}

/// The folder a file's relative paths resolve against.
fn folder_of(file: &Path) -> PathBuf {
    match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Validates one file with the server's own rules and splits it into documents.
fn file_documents(file: &Path, root: &Path) -> (Vec<LocalDoc>, Vec<String>) {
    let display = file.display().to_string();
    let parsed = match manifest::load_file(file, root, &display) {
        Ok(parsed) => parsed,
        Err(e) => return (Vec::new(), vec![e.to_string()]),
    };
    let errors: Vec<String> = parsed.errors().map(ToString::to_string).collect();
    // load_file accepted the file as UTF-8 and under the size limit, so it reads again.
    let values = std::fs::read_to_string(file)
        .map_err(|e| e.to_string())
        .and_then(|text| split(&text).map_err(|e| e.to_string()));
    let values = match values {
        Ok(values) if values.len() == parsed.docs.len() => values,
        // A syntax error: parse_str reported it as the file's only document.
        _ => return (Vec::new(), errors),
    };
    let mut docs = Vec::new();
    for (outcome, value) in parsed.docs.iter().zip(values) {
        let manifest::DocOutcome::Valid { challenge, .. } = outcome else {
            continue;
        };
        match serde_yaml::to_string(&value) {
            Ok(yaml) => docs.push(LocalDoc {
                name: challenge.name.clone(),
                yaml,
            }),
            Err(e) => return (Vec::new(), vec![format!("{display}: {e}")]),
        }
    }
    (docs, errors)
}

/// The non-empty documents of a YAML stream, as parse_str counts them.
fn split(text: &str) -> Result<Vec<serde_yaml::Value>, serde_yaml::Error> {
    let mut values = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(text) {
        let value = serde_yaml::Value::deserialize(doc)?;
        if !value.is_null() {
            values.push(value);
        }
    }
    Ok(values)
}

/// Sends one document; says whether it was `created`, `configured` or `unchanged` (the server
/// kept its resourceVersion).
async fn put(client: &Client, doc: &LocalDoc) -> Result<(&'static str, Value), ClientError> {
    let path = format!("/api/v1/manage/challenges/{}", segment(&doc.name));
    let before = match client.get_json(&path).await {
        Ok(old) => resource_version(&old),
        Err(e @ ClientError::Unreachable { .. }) => return Err(e),
        Err(_) => None,
    };
    let request = client
        .request(Method::PUT, &path)
        .header(reqwest::header::CONTENT_TYPE, "application/yaml")
        .body(doc.yaml.clone());
    let (status, manifest) = client.send_json(request).await?;
    let verb = if status == StatusCode::CREATED {
        "created"
    } else if before.is_some() && before == resource_version(&manifest) {
        "unchanged"
    } else {
        "configured"
    };
    Ok((verb, manifest))
}

fn resource_version(manifest: &Value) -> Option<String> {
    manifest
        .pointer("/metadata/resourceVersion")
        .map(|rv| match rv {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
}

/// `name` as one URL path segment.
pub fn segment(name: &str) -> String {
    let mut encoded = String::new();
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

/// `get [NAME] [-l k=v]`: the status table, or the server's JSON / YAML.
pub async fn get(
    client: &Client,
    name: Option<&str>,
    selector: Option<&str>,
    format: OutputFormat,
    out: &mut dyn Write,
) -> Result<u8, ClientError> {
    let value = match name {
        Some(name) => {
            let path = format!("/api/v1/status/challenges/{}", segment(name));
            client.get_json(&path).await?
        }
        None => {
            let mut request = client.request(Method::GET, "/api/v1/status/challenges");
            if let Some(selector) = selector {
                request = request.query(&[("labelSelector", selector)]);
            }
            client.send_json(request).await?.1
        }
    };
    if let Some(text) = render::structured(&value, format)? {
        out.write_all(text.as_bytes())?;
        return Ok(EXIT_OK);
    }
    let items: Vec<ChallengeView> = match name {
        Some(_) => vec![render::decode(&value, "a challenge status")?],
        None => render::decode(
            value.get("items").unwrap_or(&Value::Null),
            "a list of challenge statuses",
        )?,
    };
    if items.is_empty() {
        writeln!(out, "No challenges found.")?;
    } else {
        out.write_all(render::challenges_table(&items).as_bytes())?;
    }
    Ok(EXIT_OK)
}

/// `describe NAME`: status and manifest. The table format hides the flag; JSON / YAML print
/// `{"status", "manifest"}` as the server answered them.
pub async fn describe(
    client: &Client,
    name: &str,
    format: OutputFormat,
    out: &mut dyn Write,
) -> Result<u8, ClientError> {
    let status = client
        .get_json(&format!("/api/v1/status/challenges/{}", segment(name)))
        .await?;
    let manifest = match client
        .get_json(&format!("/api/v1/manage/challenges/{}", segment(name)))
        .await
    {
        Ok(manifest) => Ok(manifest),
        Err(e @ ClientError::Unreachable { .. }) => return Err(e),
        Err(e) => Err(e.to_string()),
    };
    let both = serde_json::json!({
        "status": status,
        "manifest": manifest.as_ref().ok(),
    });
    if let Some(text) = render::structured(&both, format)? {
        out.write_all(text.as_bytes())?;
        return Ok(EXIT_OK);
    }
    let view: ChallengeView = render::decode(&status, "a challenge status")?;
    let page = render::describe(&view, manifest.as_ref().map_err(Clone::clone));
    out.write_all(page.as_bytes())?;
    Ok(EXIT_OK)
}

/// A verb that answers with a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Delete,
    Deploy,
    Undeploy,
    Redeploy,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Delete => "delete",
            Action::Deploy => "deploy",
            Action::Undeploy => "undeploy",
            Action::Redeploy => "redeploy",
        }
    }

    fn request(self, client: &Client, name: &str) -> RequestBuilder {
        let path = format!("/api/v1/manage/challenges/{}", segment(name));
        match self {
            Action::Delete => client.request(Method::DELETE, &path),
            other => client.request(Method::POST, &format!("{path}/{}", other.as_str())),
        }
    }
}

/// A task as the server reports it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct TaskView {
    pub id: String,
    pub challenge: String,
    pub action: String,
    pub state: String,
    pub message: String,
}

impl TaskView {
    fn finished(&self) -> bool {
        matches!(self.state.as_str(), "succeeded" | "failed")
    }
}

/// `delete|deploy|undeploy|redeploy NAME`: queues the task and, given a timeout, waits until
/// it succeeds (exit 0) or fails or times out (an error, exit 1).
pub async fn action(
    client: &Client,
    action: Action,
    name: &str,
    wait: Option<Duration>,
    format: OutputFormat,
    out: &mut dyn Write,
) -> Result<u8, ClientError> {
    let (_, body) = client.send_json(action.request(client, name)).await?;
    let task_value = body.get("task").cloned().unwrap_or(body);
    let task: TaskView = render::decode(&task_value, "a task")?;
    let table = format == OutputFormat::Table;
    if task.id.is_empty() {
        // No task to follow: the server did it at once.
        if table {
            writeln!(out, "{} {name}: done", action.as_str())?;
        }
        return Ok(EXIT_OK);
    }
    if table {
        writeln!(
            out,
            "task {} {}: {} {name}",
            task.id,
            task.state,
            action.as_str()
        )?;
    }
    let (last, value) = match wait {
        Some(timeout) => wait_for(client, task, task_value, timeout).await?,
        None => (task, task_value),
    };
    if let Some(text) = render::structured(&value, format)? {
        out.write_all(text.as_bytes())?;
    }
    match last.state.as_str() {
        "failed" => Err(ClientError::TaskFailed {
            id: last.id,
            message: render_message(&last.message),
        }),
        "succeeded" if table => {
            let detail = if last.message.is_empty() {
                String::new()
            } else {
                format!(": {}", last.message)
            };
            writeln!(out, "task {} succeeded{detail}", last.id)?;
            Ok(EXIT_OK)
        }
        _ => Ok(EXIT_OK),
    }
}

fn render_message(message: &str) -> String {
    if message.is_empty() {
        "no message".into()
    } else {
        message.to_string()
    }
}

/// Polls `GET /api/v1/status/tasks/{id}` until the task finishes or `timeout` passes.
async fn wait_for(
    client: &Client,
    mut task: TaskView,
    mut value: Value,
    timeout: Duration,
) -> Result<(TaskView, Value), ClientError> {
    let started = Instant::now();
    let mut pause = POLL_FIRST;
    let path = format!("/api/v1/status/tasks/{}", segment(&task.id));
    while !task.finished() {
        if started.elapsed() >= timeout {
            return Err(ClientError::TaskTimeout {
                id: task.id,
                state: task.state,
                after: humantime::format_duration(timeout).to_string(),
            });
        }
        tokio::time::sleep(pause.min(timeout.saturating_sub(started.elapsed()))).await;
        pause = (pause * 2).min(POLL_MAX);
        value = client.get_json(&path).await?;
        let value = value.get("task").unwrap_or(&value);
        task = render::decode(value, "a task")?;
    }
    let value = value.get("task").cloned().unwrap_or(value);
    Ok((task, value))
}

/// What `logs` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogsQuery {
    pub tail: u64,
    pub follow: bool,
    pub replica: Option<u32>,
    /// The last image build's output instead of the containers'.
    pub build: bool,
}

/// `logs NAME [-f]`: copies the log body to `out` as it arrives. A closed pipe
/// (`beast logs x | head`) ends it quietly.
pub async fn logs(
    client: &Client,
    name: &str,
    query: &LogsQuery,
    out: &mut dyn Write,
) -> Result<u8, ClientError> {
    let path = format!("/api/v1/status/challenges/{}/logs", segment(name));
    let mut params = vec![
        ("tail", query.tail.to_string()),
        ("follow", query.follow.to_string()),
    ];
    if let Some(replica) = query.replica {
        params.push(("replica", replica.to_string()));
    }
    if query.build {
        params.push(("build", "true".to_string()));
    }
    let request = client.request(Method::GET, &path).query(&params);
    let response = client.send_streaming(request).await?;
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ClientError::Decode {
            what: "the log stream".into(),
            reason: super::http::cause(&e),
        })?;
        let written = out.write_all(&chunk).and_then(|()| out.flush());
        match written {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(EXIT_OK),
            other => other?,
        }
    }
    Ok(EXIT_OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_one_path_segment() {
        assert_eq!(segment("echo-tcp"), "echo-tcp");
        assert_eq!(segment("a/b?c"), "a%2Fb%3Fc");
    }

    #[test]
    fn local_documents_split_files_and_report_errors_with_positions() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let good = "apiVersion: beast/v1\nkind: Challenge\nmetadata: {name: one}\n\
                    spec: {image: x:1, flag: 'flag{a}'}\n---\n\
                    apiVersion: beast/v1\nkind: Challenge\nmetadata: {name: two}\n\
                    spec: {image: x:1}\n";
        let bad = "apiVersion: beast/v1\nkind: Challenge\nmetadata: {name: three}\nspec:\n  \
                   image: x:1\n  ports:\n    - port: 70000\n";
        std::fs::write(dir.path().join("a.yaml"), good).unwrap_or_else(|e| panic!("{e}"));
        std::fs::create_dir(dir.path().join("sub")).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(dir.path().join("sub/b.yml"), bad).unwrap_or_else(|e| panic!("{e}"));
        std::fs::create_dir(dir.path().join(".git")).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(dir.path().join(".git/c.yaml"), "junk: [").unwrap_or_else(|e| panic!("{e}"));

        let (docs, errors) = local_documents(dir.path());
        let names: Vec<&str> = docs.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["one", "two"]);
        assert!(docs[0].yaml.contains("flag: flag{a}"), "{}", docs[0].yaml);
        assert!(!docs[0].yaml.contains("two"), "{}", docs[0].yaml);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].ends_with("sub/b.yml:7:7: spec.ports[0].port: must be 1-65535"),
            "{errors:?}"
        );
    }

    #[test]
    fn missing_paths_and_syntax_errors_are_reported() {
        let (docs, errors) = local_documents(Path::new("/nonexistent/x.yaml"));
        assert!(docs.is_empty());
        assert!(errors[0].contains("cannot read"), "{errors:?}");
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let file = dir.path().join("x.yaml");
        std::fs::write(&file, "a: [\n").unwrap_or_else(|e| panic!("{e}"));
        let (docs, errors) = local_documents(&file);
        assert!(docs.is_empty());
        assert_eq!(errors.len(), 1, "{errors:?}");
        let (_, errors) = local_documents(dir.path().join("empty").as_path());
        assert_eq!(errors.len(), 1, "{errors:?}");
        let blank = dir.path().join("blank.yaml");
        std::fs::write(&blank, "# nothing\n---\n").unwrap_or_else(|e| panic!("{e}"));
        let (docs, errors) = local_documents(&blank);
        assert!(docs.is_empty());
        assert!(
            errors[0].ends_with("blank.yaml: no challenge documents"),
            "{errors:?}"
        );
    }
}
