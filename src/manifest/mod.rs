//! Manifest files: finding them, parsing `beast/v1 Challenge` documents and validating them into
//! `model::Challenge`s, with errors that name the file, line, column and field path.
//!
//! This module owns the YAML contract (SPEC §1) and nothing downstream of it: it never talks to the
//! engine, never stores state, and never puts a flag value in an error. `raw` mirrors the YAML,
//! `validate` checks meaning, `locate` places errors in the file.

pub mod locate;
pub mod raw;
pub mod validate;

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::model::Challenge;
use locate::{DocIndex, Pos};
use validate::FieldError;

/// Files larger than this are refused unread.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;
/// `$id` of the JSON schema in `manifests/challenge.schema.json`.
pub const SCHEMA_ID: &str = "https://beast.invalid/schemas/beast-v1-challenge.schema.json";

/// One problem in one manifest file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestError {
    /// How the file is named in messages (a path, or e.g. "request body").
    pub file: String,
    /// 1-based, absolute in the file.
    pub line: Option<usize>,
    /// 1-based.
    pub col: Option<usize>,
    /// Field path such as `spec.ports[0].port`; empty when the error is about the whole file or
    /// document.
    pub path: String,
    pub message: String,
}

impl ManifestError {
    fn file(file: &str, message: impl Into<String>) -> ManifestError {
        ManifestError {
            file: file.to_string(),
            line: None,
            col: None,
            path: String::new(),
            message: message.into(),
        }
    }
}

/// `file:line:col: path: message`, leaving out what is unknown (`file: message`).
impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(col) = self.col {
                write!(f, ":{col}")?;
            }
        }
        if !self.path.is_empty() {
            write!(f, ": {}", self.path)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ManifestError {}

/// What became of one YAML document of a file.
#[derive(Debug, Clone, PartialEq)]
// Few of these exist at a time; matching on an unboxed challenge keeps callers simple.
#[allow(clippy::large_enum_variant)]
pub enum DocOutcome {
    Valid {
        challenge: Challenge,
        /// The document as written (for serving it back), flag included.
        raw: Box<raw::Manifest>,
        /// Line where the document's content starts.
        line: usize,
    },
    Invalid {
        /// `metadata.name` when it could be read, so the error can be attributed to a challenge.
        name: Option<String>,
        line: usize,
        errors: Vec<ManifestError>,
    },
}

impl DocOutcome {
    /// The challenge's name, valid or not, when known.
    pub fn name(&self) -> Option<&str> {
        match self {
            DocOutcome::Valid { challenge, .. } => Some(&challenge.name),
            DocOutcome::Invalid { name, .. } => name.as_deref(),
        }
    }

    /// Line where the document's content starts.
    pub fn line(&self) -> usize {
        match self {
            DocOutcome::Valid { line, .. } | DocOutcome::Invalid { line, .. } => *line,
        }
    }
}

/// Every non-empty document of one file.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedFile {
    pub file: String,
    pub docs: Vec<DocOutcome>,
}

impl ParsedFile {
    /// All errors of all documents, in file order.
    pub fn errors(&self) -> impl Iterator<Item = &ManifestError> {
        self.docs.iter().flat_map(|doc| match doc {
            DocOutcome::Invalid { errors, .. } => errors.as_slice(),
            DocOutcome::Valid { .. } => &[],
        })
    }

    /// The valid challenges, in file order.
    pub fn challenges(&self) -> impl Iterator<Item = &Challenge> {
        self.docs.iter().filter_map(|doc| match doc {
            DocOutcome::Valid { challenge, .. } => Some(challenge),
            DocOutcome::Invalid { .. } => None,
        })
    }

    /// Whether every document is valid.
    pub fn is_valid(&self) -> bool {
        self.errors().next().is_none()
    }

    fn whole_file_error(file: &str, error: ManifestError, name: Option<String>) -> ParsedFile {
        ParsedFile {
            file: file.to_string(),
            docs: vec![DocOutcome::Invalid {
                name,
                line: error.line.unwrap_or(1),
                errors: vec![error],
            }],
        }
    }
}

/// Parses and validates every document of `text`.
///
/// `display` is how the file is named in messages (e.g. its path relative to the watched dir's
/// parent, or "request body"); `manifest_dir` is the folder relative paths resolve against; `root`
/// is the watched directory nothing may escape.
pub fn parse_str(text: &str, display: &str, manifest_dir: &Path, root: &Path) -> ParsedFile {
    if text.len() as u64 > MAX_FILE_BYTES {
        return ParsedFile::whole_file_error(display, too_large(display), None);
    }
    let indexes = locate::index(text);

    // Pass 1: the whole stream as plain YAML values. A syntax error (or an alias bomb hitting
    // serde_yaml's limits) makes the whole file invalid; the iterator repeats the error forever,
    // so stop at the first one.
    let mut values = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(text) {
        match serde_yaml::Value::deserialize(doc) {
            Ok(value) => values.push(value),
            Err(e) => {
                let error = syntax_error(display, &e);
                // The name can still be attributed when the file has one document that was
                // indexed up to its name before the error.
                let name = match indexes.as_slice() {
                    [only] => only.scalar("metadata.name").map(str::to_string),
                    _ => None,
                };
                return ParsedFile::whole_file_error(display, error, name);
            }
        }
    }

    // Pass 2: each non-empty document into the raw manifest, then validated.
    let ctx = validate::Context { manifest_dir, root };
    let mut docs = Vec::new();
    for (i, (doc, value)) in serde_yaml::Deserializer::from_str(text)
        .zip(&values)
        .enumerate()
    {
        if value.is_null() {
            continue;
        }
        let index = indexes.get(i);
        let line = index.map_or(1, |d| d.line);
        let name = value
            .get("metadata")
            .and_then(|m| m.get("name"))
            .and_then(|n| n.as_str())
            .map(str::to_string);
        let flag = value
            .get("spec")
            .and_then(|s| s.get("flag"))
            .and_then(scalar_text);
        let place = |e: FieldError| place(display, index, e);
        let outcome = if !value.is_mapping() {
            let found = match value {
                serde_yaml::Value::Sequence(_) => "a list",
                serde_yaml::Value::Tagged(_) => "a tagged value",
                _ => "a scalar",
            };
            DocOutcome::Invalid {
                name: None,
                line,
                errors: vec![place(FieldError {
                    path: String::new(),
                    message: format!(
                        "a document must be a mapping (a beast/v1 Challenge), found {found}"
                    ),
                })],
            }
        } else {
            match raw::Manifest::deserialize(doc) {
                Err(e) => {
                    let error = serde_error(display, &e, index);
                    DocOutcome::Invalid {
                        name,
                        line,
                        errors: vec![error],
                    }
                }
                Ok(manifest) => {
                    let nulls = validate::null_strings(value);
                    match validate::validate(&manifest, &ctx) {
                        Ok(challenge) if nulls.is_empty() => DocOutcome::Valid {
                            challenge,
                            raw: Box::new(manifest),
                            line,
                        },
                        result => {
                            let mut errors: Vec<ManifestError> =
                                nulls.into_iter().map(place).collect();
                            errors.extend(result.err().unwrap_or_default().into_iter().map(place));
                            DocOutcome::Invalid { name, line, errors }
                        }
                    }
                }
            }
        };
        docs.push(redact(outcome, flag.as_deref()));
    }
    ParsedFile {
        file: display.to_string(),
        docs,
    }
}

/// Reads and parses one manifest file. `root` is the watched directory nothing may escape;
/// `display` names the file in messages. A file that cannot be read is an `Err`; one that is too
/// large or not UTF-8 is an invalid document, like any other content problem.
pub fn load_file(path: &Path, root: &Path, display: &str) -> Result<ParsedFile, ManifestError> {
    let cannot = |e: std::io::Error| ManifestError::file(display, format!("cannot read: {e}"));
    let file = std::fs::File::open(path).map_err(cannot)?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(cannot)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Ok(ParsedFile::whole_file_error(
            display,
            too_large(display),
            None,
        ));
    }
    let text = match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(e) => {
            let error = ManifestError::file(
                display,
                format!("not valid UTF-8 (at byte {})", e.utf8_error().valid_up_to()),
            );
            return Ok(ParsedFile::whole_file_error(display, error, None));
        }
    };
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    Ok(parse_str(&text, display, dir, root))
}

/// Every `*.yaml` / `*.yml` file under `root`, recursively, sorted. Dot-files and dot-directories
/// (`.git`) are skipped. Symlinked directories are not followed: whatever they lead to inside the
/// root is walked under its real path anyway, and outside it they could loop or pull in files
/// nobody watches. Symlinked files are read. Any directory that cannot be read is an error, so a
/// caller never mistakes an unreadable tree for an empty one.
pub fn discover(root: &Path) -> Result<Vec<PathBuf>, ManifestError> {
    let shown = root.display().to_string();
    let real_root = root
        .canonicalize()
        .map_err(|e| ManifestError::file(&shown, format!("cannot read directory: {e}")))?;
    if !real_root.is_dir() {
        return Err(ManifestError::file(&shown, "not a directory"));
    }
    let mut found = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let cannot = |e: std::io::Error| {
            ManifestError::file(
                &dir.display().to_string(),
                format!("cannot read directory: {e}"),
            )
        };
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            // Removed while we walked: nothing there any more.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && dir != root => continue,
            Err(e) => return Err(cannot(e)),
        };
        for entry in entries {
            let entry = entry.map_err(cannot)?;
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let path = entry.path();
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                pending.push(path);
            } else if is_manifest_name(&path) && path.is_file() {
                found.push(path);
            }
        }
    }
    found.sort();
    Ok(found)
}

fn is_manifest_name(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml")
    )
}

/// The JSON schema of a manifest (draft-07, which yaml-language-server reads), with `$id` and
/// `title`. `manifests/challenge.schema.json` is this, pretty-printed.
pub fn json_schema() -> serde_json::Value {
    let generator = schemars::generate::SchemaSettings::draft07().into_generator();
    let mut value = generator.into_root_schema_for::<raw::Manifest>().to_value();
    drop_null(&mut value);
    if let Some(object) = value.as_object_mut() {
        object.insert("$id".to_string(), SCHEMA_ID.into());
        object.insert("title".to_string(), "beast/v1 Challenge".into());
        // Defaulted in `raw` only so that validation can report them with everything else.
        object.insert(
            "required".to_string(),
            serde_json::json!(["apiVersion", "kind", "metadata", "spec"]),
        );
        if let Some(properties) = object.get_mut("properties").and_then(|p| p.as_object_mut()) {
            for field in ["metadata", "spec"] {
                if let Some(property) = properties.get_mut(field).and_then(|p| p.as_object_mut()) {
                    property.remove("default");
                }
            }
        }
    }
    value
}

/// Removes the `null` alternative schemars gives every `Option`: an editor should not suggest
/// `image: null`, which validation refuses anyway.
fn drop_null(value: &mut serde_json::Value) {
    use serde_json::Value;
    let is_null = |v: &Value| v.get("type").and_then(Value::as_str) == Some("null");
    match value {
        Value::Object(object) => {
            if let Some(Value::Array(types)) = object.get_mut("type") {
                types.retain(|t| t != "null");
                if let [only] = types.as_slice() {
                    let only = only.clone();
                    object.insert("type".to_string(), only);
                }
            }
            if let Some(Value::Array(options)) = object.get("anyOf") {
                if let [a, b] = options.as_slice() {
                    let kept = if is_null(b) {
                        Some(a)
                    } else if is_null(a) {
                        Some(b)
                    } else {
                        None
                    };
                    if let Some(Value::Object(kept)) = kept.cloned() {
                        object.remove("anyOf");
                        object.extend(kept);
                    }
                }
            }
            object.values_mut().for_each(drop_null);
        }
        Value::Array(items) => items.iter_mut().for_each(drop_null),
        _ => {}
    }
}

/// For `beast validate PATH...`: parses every given file, and every manifest under every given
/// directory. Also reports a `metadata.name` defined more than once across all of them, naming
/// both places. The second list holds errors that belong to no parsed file (unreadable paths,
/// duplicates).
///
/// A directory is its own watched root. A file given directly is checked with the current
/// directory as its root when it lies inside it, else with its own folder.
pub fn validate_paths(paths: &[PathBuf]) -> (Vec<ParsedFile>, Vec<ManifestError>) {
    let cwd = std::env::current_dir()
        .ok()
        .and_then(|d| d.canonicalize().ok());
    let mut files = Vec::new();
    let mut errors = Vec::new();
    let mut seen: HashSet<PathBuf> = HashSet::new();
    let mut load = |path: &Path, root: &Path, errors: &mut Vec<ManifestError>| {
        if let Ok(real) = path.canonicalize() {
            if !seen.insert(real) {
                return; // named twice (e.g. a file and its directory)
            }
        }
        match load_file(path, root, &path.display().to_string()) {
            Ok(parsed) => files.push(parsed),
            Err(e) => errors.push(e),
        }
    };
    for path in paths {
        match std::fs::metadata(path) {
            Err(e) => errors.push(ManifestError::file(
                &path.display().to_string(),
                format!("cannot read: {e}"),
            )),
            Ok(meta) if meta.is_dir() => match discover(path) {
                Ok(found) => found.iter().for_each(|file| load(file, path, &mut errors)),
                Err(e) => errors.push(e),
            },
            Ok(_) => {
                let folder = match path.parent() {
                    Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
                    _ => PathBuf::from("."),
                };
                let root = match (&cwd, path.canonicalize()) {
                    (Some(cwd), Ok(real)) if real.starts_with(cwd) => cwd.clone(),
                    _ => folder,
                };
                load(path, &root, &mut errors);
            }
        }
    }
    errors.extend(duplicate_names(&files));
    (files, errors)
}

/// An error for every document whose name an earlier document (in any file) already took.
fn duplicate_names(files: &[ParsedFile]) -> Vec<ManifestError> {
    let mut first: BTreeMap<&str, (&str, usize)> = BTreeMap::new();
    let mut errors = Vec::new();
    for file in files {
        for doc in &file.docs {
            let Some(name) = doc.name() else { continue };
            match first.get(name) {
                Some((other, line)) => errors.push(ManifestError {
                    file: file.file.clone(),
                    line: Some(doc.line()),
                    col: None,
                    path: "metadata.name".to_string(),
                    message: format!("duplicate name \"{name}\": also defined at {other}:{line}"),
                }),
                None => {
                    first.insert(name, (&file.file, doc.line()));
                }
            }
        }
    }
    errors
}

fn too_large(display: &str) -> ManifestError {
    ManifestError::file(
        display,
        format!("file is larger than {} KiB", MAX_FILE_BYTES / 1024),
    )
}

/// Text of a scalar YAML value (a flag may be written unquoted as a number).
fn scalar_text(value: &serde_yaml::Value) -> Option<String> {
    match value {
        serde_yaml::Value::String(s) => Some(s.clone()),
        serde_yaml::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Gives a field error its position: the key of the field, or its nearest written ancestor, or
/// (when the position index could not read that far, e.g. text yaml-rust2 rejects but serde_yaml
/// accepts) the start of the document: every field error points somewhere.
fn place(file: &str, index: Option<&DocIndex>, e: FieldError) -> ManifestError {
    let pos = index.and_then(|i| i.locate(&e.path)).unwrap_or(Pos {
        line: index.map_or(1, |i| i.line.max(1)),
        col: 1,
    });
    ManifestError {
        file: file.to_string(),
        line: Some(pos.line),
        col: Some(pos.col),
        path: e.path,
        message: e.message,
    }
}

/// Turns a serde_yaml error into a `ManifestError` with a full field path. serde_yaml's message is
/// `[container path: ]message[ at line L column C]`; for unknown and missing fields the path is
/// completed with the field's name.
fn serde_error(file: &str, e: &serde_yaml::Error, index: Option<&DocIndex>) -> ManifestError {
    let location = e.location().map(|l| Pos {
        line: l.line(),
        col: l.column(),
    });
    let mut text = e.to_string();
    if let Some(loc) = location {
        let suffix = format!(" at line {} column {}", loc.line, loc.col);
        if let Some(stripped) = text.strip_suffix(&suffix) {
            text = stripped.to_string();
        }
    }
    let (container, message) = match text.split_once(": ") {
        Some((prefix, rest)) if !prefix.is_empty() && !prefix.contains(char::is_whitespace) => {
            (prefix.to_string(), rest.to_string())
        }
        _ => (String::new(), text),
    };
    let backticked = |head: &str| {
        message
            .strip_prefix(head)
            .and_then(|rest| rest.split('`').next())
            .map(str::to_string)
    };
    let (path, message, pos) = if let Some(field) = backticked("unknown field `") {
        let path = locate::join_key(&container, &field);
        let message = match did_you_mean(&field, &message) {
            Some(guess) => format!("unknown field `{field}`, did you mean `{guess}`?"),
            None => message,
        };
        // serde_yaml points at the offending key already.
        (path, message, location)
    } else if let Some(field) = backticked("missing field `") {
        let path = locate::join_key(&container, &field);
        let pos = index.and_then(|i| i.locate(&path)).or(location);
        (path, "required".to_string(), pos)
    } else {
        let pos = index
            .filter(|_| !container.is_empty())
            .and_then(|i| i.locate(&container))
            .or(location);
        (container, humanize(&message), pos)
    };
    ManifestError {
        file: file.to_string(),
        line: pos.map(|p| p.line),
        col: pos.map(|p| p.col),
        path,
        message,
    }
}

/// A YAML syntax error (or a limit serde_yaml enforces), placed where serde_yaml says.
fn syntax_error(file: &str, e: &serde_yaml::Error) -> ManifestError {
    let location = e.location();
    let mut message = e.to_string();
    if let Some(l) = &location {
        message = message.replacen(
            &format!(" at line {} column {}", l.line(), l.column()),
            "",
            1,
        );
    }
    ManifestError {
        file: file.to_string(),
        line: location.as_ref().map(|l| l.line()),
        col: location.as_ref().map(|l| l.column()),
        path: String::new(),
        message: format!("invalid YAML: {message}"),
    }
}

/// serde's type names in plain words.
fn humanize(message: &str) -> String {
    let mut out = message.to_string();
    for (from, to) in [
        ("expected i64", "expected an integer"),
        ("expected u64", "expected an integer"),
        ("expected f64", "expected a number"),
        ("expected a sequence", "expected a list"),
        ("expected a map", "expected a mapping"),
    ] {
        out = out.replace(from, to);
    }
    if let Some(i) = out.find("expected struct ") {
        out.truncate(i);
        out.push_str("expected a mapping");
    }
    out
}

/// The closest of the `expected ...` field names in a serde unknown-field message, if close.
fn did_you_mean(field: &str, message: &str) -> Option<String> {
    let (_, expected) = message.split_once("expected")?;
    expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(|candidate| {
            (
                edit_distance(&field.to_lowercase(), &candidate.to_lowercase()),
                candidate,
            )
        })
        .filter(|(distance, _)| *distance <= 2)
        .min()
        .map(|(_, candidate)| candidate.to_string())
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let next = (row[j + 1] + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

/// Replaces the flag value wherever it appears in a document's error messages (it never should;
/// this makes sure).
fn redact(outcome: DocOutcome, flag: Option<&str>) -> DocOutcome {
    let Some(flag) = flag.filter(|f| f.len() >= 4) else {
        return outcome;
    };
    match outcome {
        DocOutcome::Invalid { name, line, errors } => DocOutcome::Invalid {
            name,
            line,
            errors: errors
                .into_iter()
                .map(|mut e| {
                    e.message = e.message.replace(flag, "<redacted>");
                    e
                })
                .collect(),
        },
        valid => valid,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::model::{ImageSource, Probe, Protocol};

    const FULL: &str = r#"apiVersion: beast/v1
kind: Challenge
metadata:
  name: echo-tcp
  labels:
    category: misc
spec:
  description: Talk to the echo server
  category: misc
  points: 100
  tags:
  - warmup
  hints:
  - it echoes
  flag: flag{echo_echo}
  image: example/echo:1
  command:
  - nc
  - -ll
  - -p
  - '1337'
  - -e
  - cat
  workingDir: /srv
  env:
    MODE: echo
  ports:
  - port: 1337
    hostPort: 31337
    protocol: tcp
  resources:
    cpus: 0.5
    memory: 128Mi
    pids: 128
  healthcheck:
    tcp:
      port: 1337
    interval: 10s
    timeout: 2s
    retries: 3
    startPeriod: 5s
  replicas: 1
  attachments:
  - public/handout.tar.gz
"#;

    fn parse(text: &str) -> ParsedFile {
        parse_str(
            text,
            "challenges/echo/challenge.yaml",
            Path::new("/w/challenges/echo"),
            Path::new("/w/challenges"),
        )
    }

    fn messages(file: &ParsedFile) -> Vec<String> {
        file.errors().map(ToString::to_string).collect()
    }

    #[test]
    fn full_manifest_round_trips() {
        let raw: raw::Manifest = serde_yaml::from_str(FULL).unwrap();
        assert_eq!(serde_yaml::to_string(&raw).unwrap(), FULL);
        let file = parse(FULL);
        assert!(file.is_valid(), "{:?}", messages(&file));
        let c = file.challenges().next().unwrap();
        assert_eq!(c.name, "echo-tcp");
        assert_eq!(c.flag.as_deref(), Some("flag{echo_echo}"));
        let run = c.run.as_ref().unwrap();
        assert_eq!(run.source, ImageSource::Image("example/echo:1".into()));
        assert_eq!(run.ports[0].protocol, Protocol::Tcp);
        assert_eq!(
            run.healthcheck.as_ref().unwrap().probe,
            Probe::Tcp { port: 1337 }
        );
        assert_eq!(
            c.attachments[0].path,
            PathBuf::from("/w/challenges/echo/public/handout.tar.gz")
        );
        assert_eq!(file.docs[0].line(), 1);
    }

    #[test]
    fn minimal_manifest_prints_clean() {
        let raw: raw::Manifest =
            serde_yaml::from_str("apiVersion: beast/v1\nkind: Challenge\nmetadata: {name: a}\nspec: {image: x, ports: [{port: 1}]}\n").unwrap();
        assert_eq!(
            serde_yaml::to_string(&raw).unwrap(),
            "apiVersion: beast/v1\nkind: Challenge\nmetadata:\n  name: a\nspec:\n  image: x\n  ports:\n  - port: 1\n"
        );
    }

    #[test]
    fn exact_message_format() {
        // Line 14, the port at column 7 as in SPEC §1's example layout.
        let text = "apiVersion: beast/v1
kind: Challenge
metadata:
  name: echo
spec:
  description: Talk to the echo server
  category: misc
  points: 100
  flag: flag{x}
  image: example/echo:1
  command: [nc, -ll, -p, '1337', -e, cat]
  replicas: 1
  ports:
    - port: 70000
";
        let file = parse(text);
        assert_eq!(
            messages(&file),
            ["challenges/echo/challenge.yaml:14:7: spec.ports[0].port: must be 1-65535"]
        );
        assert!(
            matches!(&file.docs[0], DocOutcome::Invalid { name: Some(n), line: 1, .. } if n == "echo")
        );
    }

    #[test]
    fn display_leaves_out_what_is_unknown() {
        let mut e = ManifestError::file("request body", "file is larger than 1024 KiB");
        assert_eq!(e.to_string(), "request body: file is larger than 1024 KiB");
        e.line = Some(3);
        e.path = "spec".into();
        assert_eq!(
            e.to_string(),
            "request body:3: spec: file is larger than 1024 KiB"
        );
    }

    #[test]
    fn unknown_key_points_at_the_key() {
        let text = "apiVersion: beast/v1\nkind: Challenge\nmetadata: {name: echo}\nspec:\n  image: x\n  portz:\n    - port: 1\n";
        let file = parse(text);
        assert_eq!(
            messages(&file),
            ["challenges/echo/challenge.yaml:6:3: spec.portz: unknown field `portz`, did you mean `ports`?"]
        );
        let text = "apiVersion: beast/v1\nkind: Challenge\nmetadata: {name: echo}\nspec:\n  image: x\n  ports:\n    - port: 1\n      hostport: 2\n";
        let e: Vec<ManifestError> = parse(text).errors().cloned().collect();
        assert_eq!(
            (e[0].line, e[0].col, e[0].path.as_str()),
            (Some(8), Some(7), "spec.ports[0].hostport")
        );
        assert_eq!(
            e[0].message,
            "unknown field `hostport`, did you mean `hostPort`?"
        );
        let text = "apiVersion: beast/v1\nkind: Challenge\nmetadata: {name: echo}\nspec: {image: x}\nstatus: {}\n";
        let e: Vec<ManifestError> = parse(text).errors().cloned().collect();
        assert_eq!(
            (e[0].line, e[0].col, e[0].path.as_str()),
            (Some(5), Some(1), "status")
        );
        assert!(
            e[0].message
                .starts_with("unknown field `status`, expected one of"),
            "{}",
            e[0].message
        );
    }

    #[test]
    fn type_and_missing_field_errors_have_paths() {
        let text = "apiVersion: beast/v1\nkind: Challenge\nmetadata: {name: echo}\nspec:\n  image: x\n  ports:\n    - port: http\n";
        assert_eq!(
            messages(&parse(text)),
            ["challenges/echo/challenge.yaml:7:7: spec.ports[0].port: invalid type: string \"http\", expected an integer"]
        );
        let text = "apiVersion: beast/v1\nkind: Challenge\nmetadata: {name: echo}\nspec:\n  image: x\n  ports:\n    - hostPort: 80\n";
        assert_eq!(
            messages(&parse(text)),
            ["challenges/echo/challenge.yaml:7:7: spec.ports[0].port: required"]
        );
        let text = "apiVersion: beast/v1\nkind: Challenge\nmetadata: {name: echo}\nspec:\n  image: x\n  resources: {memory: 1.5}\n";
        let m = messages(&parse(text));
        assert!(m[0].starts_with("challenges/echo/challenge.yaml:6:15: spec.resources.memory: invalid type: floating point `1.5`"), "{m:?}");
    }

    #[test]
    fn all_validation_errors_are_collected_with_positions() {
        let text = "apiVersion: beast/v1\nkind: Challenge\nmetadata:\n  name: Echo\nspec:\n  image: x\n  replicas: 100\n  env: {A: ~}\n";
        assert_eq!(
            messages(&parse(text)),
            [
                "challenges/echo/challenge.yaml:8:9: spec.env.A: must be a string, found null (write \"\" for an empty string)",
                "challenges/echo/challenge.yaml:4:3: metadata.name: \"Echo\" is not a DNS label: use lowercase letters, digits and '-', starting and ending with a letter or digit",
                "challenges/echo/challenge.yaml:7:3: spec.replicas: must be 0-64",
            ]
        );
        // A missing field points at its nearest written ancestor.
        let text =
            "apiVersion: beast/v1\nkind: Challenge\nmetadata:\n  labels: {}\nspec: {image: x}\n";
        assert_eq!(
            messages(&parse(text)),
            ["challenges/echo/challenge.yaml:3:1: metadata.name: required"]
        );
    }

    #[test]
    fn multi_document_lines_are_absolute() {
        let text = "\
# two challenges
apiVersion: beast/v1
kind: Challenge
metadata: {name: one}
spec: {image: x}
---

---
apiVersion: beast/v1
kind: Challenge
metadata: {name: two}
spec:
  image: x
  ports:
  - port: 0
...
";
        let file = parse(text);
        assert_eq!(file.docs.len(), 2, "the empty document is skipped");
        assert!(matches!(&file.docs[0], DocOutcome::Valid { line: 2, .. }));
        assert!(
            matches!(&file.docs[1], DocOutcome::Invalid { name: Some(n), line: 9, .. } if n == "two")
        );
        assert_eq!(
            messages(&file),
            ["challenges/echo/challenge.yaml:15:5: spec.ports[0].port: must be 1-65535"]
        );
        assert_eq!(file.challenges().count(), 1);
    }

    #[test]
    fn a_document_that_is_not_a_mapping() {
        let file = parse("- a\n- b\n---\napiVersion: beast/v1\nkind: Challenge\nmetadata: {name: ok}\nspec: {image: x}\n");
        assert_eq!(
            messages(&file),
            ["challenges/echo/challenge.yaml:1:1: a document must be a mapping (a beast/v1 Challenge), found a list"]
        );
        assert_eq!(file.challenges().count(), 1);
        assert!(parse("").docs.is_empty());
        assert!(parse("# nothing\n---\n").docs.is_empty());
    }

    #[test]
    fn syntax_error_invalidates_the_whole_file() {
        let text = "apiVersion: beast/v1\nkind: Challenge\nmetadata: {name: fine}\nspec: {image: x}\n---\nmetadata:\n  name: broken\nspec: [1\n";
        let file = parse(text);
        assert_eq!(file.docs.len(), 1);
        let DocOutcome::Invalid { errors, name, .. } = &file.docs[0] else {
            panic!()
        };
        assert_eq!(name, &None);
        assert_eq!((errors[0].line, errors[0].col), (Some(9), Some(1)));
        assert!(
            errors[0]
                .message
                .starts_with("invalid YAML: did not find expected ',' or ']'"),
            "{}",
            errors[0].message
        );
        // One document: the name is still recovered.
        let file = parse("metadata:\n  name: broken\nspec: [1\n");
        assert_eq!(file.docs[0].name(), Some("broken"));
    }

    #[test]
    fn alias_bombs_and_huge_files_are_refused() {
        let mut bomb = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 0..9 {
            let prev = if i == 0 {
                "a".to_string()
            } else {
                format!("l{}", i - 1)
            };
            bomb.push_str(&format!("l{i}: &l{i} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"));
        }
        let file = parse(&bomb);
        let m = messages(&file);
        assert_eq!(m.len(), 1);
        assert!(m[0].contains("repetition limit exceeded"), "{m:?}");

        let huge = format!("# {}\n", "x".repeat(MAX_FILE_BYTES as usize));
        assert_eq!(
            messages(&parse(&huge)),
            ["challenges/echo/challenge.yaml: file is larger than 1024 KiB"]
        );
    }

    #[test]
    fn errors_never_contain_the_flag() {
        let text = "apiVersion: beast/v1\nkind: Challenge\nmetadata: {name: echo}\nspec:\n  image: x\n  flag: flag{s3cret}\n  points: flag{s3cret}\n";
        let m = messages(&parse(text));
        assert_eq!(m.len(), 1);
        assert!(!m[0].contains("s3cret"), "{m:?}");
        assert!(m[0].contains("<redacted>"), "{m:?}");
    }

    #[test]
    fn static_challenge() {
        let file = parse("apiVersion: beast/v1\nkind: Challenge\nmetadata: {name: crypto-1}\nspec:\n  points: 50\n  attachments: [public/output.txt]\n");
        let c = file.challenges().next().unwrap();
        assert_eq!(c.run, None);
        assert_eq!(c.attachments[0].name, "public/output.txt");
        let file = parse("apiVersion: beast/v1\nkind: Challenge\nmetadata: {name: crypto-1}\nspec:\n  attachments: [../../secret]\n");
        assert_eq!(
            messages(&file),
            ["challenges/echo/challenge.yaml:5:17: spec.attachments[0]: \"../../secret\" escapes the manifest's folder"]
        );
    }

    #[test]
    fn path_escape_from_a_file_on_disk() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("challenges");
        std::fs::create_dir_all(root.join("web")).unwrap();
        let file = root.join("web/challenge.yaml");
        std::fs::write(&file, "apiVersion: beast/v1\nkind: Challenge\nmetadata: {name: web}\nspec:\n  build:\n    context: ../..\n").unwrap();
        let parsed = load_file(&file, &root, "challenges/web/challenge.yaml").unwrap();
        assert_eq!(
            messages(&parsed),
            ["challenges/web/challenge.yaml:6:5: spec.build.context: \"../..\" escapes the watched directory"]
        );
        std::fs::write(&file, "apiVersion: beast/v1\nkind: Challenge\nmetadata: {name: web}\nspec:\n  build: {context: ..}\n").unwrap();
        let parsed = load_file(&file, &root, "x").unwrap();
        let ImageSource::Build(b) = &parsed
            .challenges()
            .next()
            .unwrap()
            .run
            .as_ref()
            .unwrap()
            .source
        else {
            panic!()
        };
        assert_eq!(b.context, root.canonicalize().unwrap());
    }

    #[test]
    fn load_file_errors() {
        let tmp = tempfile::tempdir().unwrap();
        let e =
            load_file(&tmp.path().join("missing.yaml"), tmp.path(), "missing.yaml").unwrap_err();
        assert!(
            e.to_string().starts_with("missing.yaml: cannot read: "),
            "{e}"
        );
        let bad = tmp.path().join("bad.yaml");
        std::fs::write(&bad, b"a: \xff\n").unwrap();
        let parsed = load_file(&bad, tmp.path(), "bad.yaml").unwrap();
        assert_eq!(messages(&parsed), ["bad.yaml: not valid UTF-8 (at byte 3)"]);
        std::fs::write(&bad, vec![b'#'; MAX_FILE_BYTES as usize + 1]).unwrap();
        assert_eq!(
            messages(&load_file(&bad, tmp.path(), "bad.yaml").unwrap()),
            ["bad.yaml: file is larger than 1024 KiB"]
        );
    }

    #[test]
    fn discover_walks_sorted_and_skips_dot_entries() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        for dir in ["b", "a/deep", ".git", "a/.hidden"] {
            std::fs::create_dir_all(root.join(dir)).unwrap();
        }
        for file in [
            "b/challenge.yaml",
            "a/deep/x.yml",
            "a/readme.md",
            ".git/c.yaml",
            "a/.hidden/d.yaml",
            "a/.e.yaml",
            "top.yaml",
        ] {
            std::fs::write(root.join(file), "").unwrap();
        }
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("o.yaml"), "").unwrap();
        #[cfg(unix)]
        for (target, link) in [
            (root.to_path_buf(), "a/loop"),
            (root.join("b"), "linked"),
            (root.join(".git"), "git-link"),
            (outside.path().to_path_buf(), "out-link"),
            (root.join("top.yaml"), "b/file-link.yaml"), // a linked file is read
        ] {
            std::os::unix::fs::symlink(target, root.join(link)).unwrap();
        }
        let found: Vec<String> = discover(root)
            .unwrap()
            .iter()
            .map(|p| p.strip_prefix(root).unwrap().to_string_lossy().into_owned())
            .collect();
        let expected: &[&str] = if cfg!(unix) {
            &[
                "a/deep/x.yml",
                "b/challenge.yaml",
                "b/file-link.yaml",
                "top.yaml",
            ]
        } else {
            &["a/deep/x.yml", "b/challenge.yaml", "top.yaml"]
        };
        assert_eq!(found, expected);
        assert!(found.windows(2).all(|w| w[0] <= w[1]));
        assert!(discover(&root.join("nope")).is_err());
        assert!(discover(&root.join("top.yaml")).is_err());
    }

    #[test]
    fn validate_paths_reports_duplicate_names_naming_both_files() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("challenges");
        std::fs::create_dir_all(dir.join("a")).unwrap();
        std::fs::create_dir_all(dir.join("b")).unwrap();
        let doc =
            "apiVersion: beast/v1\nkind: Challenge\nmetadata: {name: same}\nspec: {image: x}\n";
        std::fs::write(dir.join("a/c.yaml"), doc).unwrap();
        std::fs::write(dir.join("b/c.yaml"), format!("# dup\n{doc}")).unwrap();
        let (files, errors) =
            validate_paths(&[dir.clone(), dir.join("a/c.yaml"), tmp.path().join("nope")]);
        assert_eq!(files.len(), 2, "a file named twice is read once");
        assert!(files.iter().all(ParsedFile::is_valid));
        let shown: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(shown.len(), 2, "{shown:?}");
        assert!(shown[0].contains("nope: cannot read"), "{shown:?}");
        let a = dir.join("a/c.yaml").display().to_string();
        let b = dir.join("b/c.yaml").display().to_string();
        assert_eq!(
            shown[1],
            format!("{b}:2: metadata.name: duplicate name \"same\": also defined at {a}:1")
        );
    }

    #[test]
    fn schema_file_is_current() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/challenge.schema.json");
        let expected = format!(
            "{}\n",
            serde_json::to_string_pretty(&json_schema()).unwrap()
        );
        if std::env::var_os("BEAST_UPDATE_SCHEMA").is_some() {
            std::fs::write(&path, &expected).unwrap();
            return;
        }
        let current = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            current == expected,
            "{} is stale: regenerate it with `BEAST_UPDATE_SCHEMA=1 cargo test --lib schema`",
            path.display()
        );
    }

    #[test]
    fn schema_describes_the_manifest() {
        let schema = json_schema();
        assert_eq!(schema["$id"], SCHEMA_ID);
        assert_eq!(schema["additionalProperties"], false);
        let required = schema["required"].as_array().unwrap();
        for field in ["apiVersion", "kind", "metadata", "spec"] {
            assert!(required.iter().any(|r| r == field), "{field}");
        }
        let spec = serde_json::to_string(&schema).unwrap();
        for field in ["hostPort", "startPeriod", "workingDir", "attachments", "Mi"] {
            assert!(spec.contains(field), "{field}");
        }
    }

    #[test]
    fn shipped_manifests_validate() {
        for dir in ["manifests", "examples"] {
            let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
            if !dir.is_dir() {
                continue;
            }
            let (files, errors) = validate_paths(&[dir]);
            let all: Vec<String> = files
                .iter()
                .flat_map(messages)
                .chain(errors.iter().map(ToString::to_string))
                .collect();
            assert!(all.is_empty(), "{all:#?}");
        }
    }
}

#[cfg(test)]
mod proptests;
