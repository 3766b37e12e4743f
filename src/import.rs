//! `beast import`: converts an sdslabs/beast `beast.toml` into a `beast/v1` `challenge.yaml`
//! (and a `Dockerfile` where the challenge type was built by the original from its fields).
//!
//! This module owns the mapping from the old format to the new one and the files it writes. It
//! builds the manifest from `manifest::raw` types, so what it prints is exactly what `validate`
//! reads, and it validates the result before writing anything. It never talks to the engine, never
//! overwrites a file it did not write itself, and says what it could not carry over (`notes`)
//! instead of dropping it silently. It never puts the flag in a note or an error.
//!
//! The mapping, field by field, is in `docs/import.md`.

mod dockerfile;
mod sidecar;
mod toml_format;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::manifest::{self, raw};
use toml_format::{BeastToml, Extra};

/// The file the original reads in a challenge folder.
pub const BEAST_TOML: &str = "beast.toml";
/// The manifest written beside it.
pub const CHALLENGE_YAML: &str = "challenge.yaml";
/// The Dockerfile written beside it for the types the original built from fields.
pub const DOCKERFILE: &str = "Dockerfile";
/// First line of a manifest written by `beast import`; a file starting with it may be replaced.
pub const YAML_HEADER: &str = "# imported from beast.toml by beast import";
/// First line of a Dockerfile written by `beast import`; a file starting with it may be replaced.
pub const DOCKERFILE_HEADER: &str = "# generated from beast.toml by beast import";
/// The smallest memory limit `beast/v1` accepts, in Mi.
const MIN_MEMORY_MI: i64 = 6;
const MI: i64 = 1 << 20;
/// The container port the original published an `ssh` challenge's first port to.
const SSH_PORT: i64 = 22;
/// Where the original looked for the files it served to players when `static_dir` is not set.
const DEFAULT_STATIC_DIR: &str = "public";
/// The schema's file name, as shipped in beast's `manifests/`.
pub const SCHEMA_FILE: &str = "challenge.schema.json";
/// Keys of the original's `[challenge.metadata]` that `beast/v1` has no place for.
const NO_EQUIVALENT: &[&str] = &[
    "maxAttemptLimit",
    "preReqs",
    "maxPoints",
    "minPoints",
    "additionalLinks",
];

/// Why an import failed. Every variant names the file it is about.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: not valid TOML: {source}", path.display())]
    Toml {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error("{}: {message}", path.display())]
    Unsupported { path: PathBuf, message: String },
    #[error(
        "{}: exists and was not written by beast import; move it away or edit it by hand",
        path.display()
    )]
    WouldOverwrite { path: PathBuf },
    #[error("{}: cannot write: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: cannot print the manifest: {source}", path.display())]
    Yaml {
        path: PathBuf,
        #[source]
        source: serde_yaml::Error,
    },
    #[error("{}: the imported manifest does not validate:\n{errors}", path.display())]
    Invalid { path: PathBuf, errors: String },
}

/// The conversion of one `beast.toml`, before anything is written.
#[derive(Debug, Clone, PartialEq)]
pub struct Imported {
    pub manifest: raw::Manifest,
    /// A generated Dockerfile, for the types the original built from `base_image`, `apt_deps`...
    pub dockerfile: Option<String>,
    /// What was not carried over, or carried over differently (renames, approximations).
    pub notes: Vec<String>,
}

/// What `import` did.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// The manifest as written (or as it would be written), header included.
    pub manifest_yaml: String,
    /// The Dockerfile as written (or as it would be written), when one is generated.
    pub dockerfile: Option<String>,
    pub notes: Vec<String>,
    /// Files written; empty for a dry run.
    pub written: Vec<PathBuf>,
}

/// Converts `beast.toml` text; `folder` is the challenge folder the file lives in (read only to
/// list `static_dir` and to tell a `docker_context` file from a folder).
pub fn convert(toml_text: &str, folder: &Path) -> Result<Imported, ImportError> {
    let path = folder.join(BEAST_TOML);
    let parsed: BeastToml = toml::from_str(toml_text).map_err(|source| ImportError::Toml {
        path: path.clone(),
        source,
    })?;
    Converter {
        path,
        folder,
        notes: Vec::new(),
    }
    .convert(parsed)
}

/// Imports the `beast.toml` at `path` (the file or its folder): writes `challenge.yaml` and, when
/// generated, `Dockerfile` beside it, unless `dry_run`. Refuses to replace files that `beast import`
/// did not write, and fails when the result does not validate.
pub fn import(path: &Path, dry_run: bool) -> Result<Report, ImportError> {
    let file = if path.is_dir() {
        path.join(BEAST_TOML)
    } else {
        path.to_path_buf()
    };
    let folder = match file.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let text = std::fs::read_to_string(&file).map_err(|source| ImportError::Read {
        path: file.clone(),
        source,
    })?;
    let mut imported = convert(&text, &folder)?;
    if schema_path(&folder).is_none() {
        imported.notes.push(format!(
            "no {SCHEMA_FILE} in the folder or above it (up to the git root): no yaml-language-server modeline written; `beast schema > {SCHEMA_FILE}` at the repository root, then import again"
        ));
    }
    let manifest_yaml = render_manifest(&imported.manifest, &file)?;
    let dockerfile = imported.dockerfile.clone();
    validate(&manifest_yaml, &folder, &file)?;

    let yaml_path = folder.join(CHALLENGE_YAML);
    let docker_path = folder.join(DOCKERFILE);
    check_replaceable(&yaml_path, YAML_HEADER)?;
    if dockerfile.is_some() {
        check_replaceable(&docker_path, DOCKERFILE_HEADER)?;
    }
    let mut written = Vec::new();
    if !dry_run {
        if let Some(text) = &dockerfile {
            write(&docker_path, text)?;
            written.push(docker_path);
        }
        write(&yaml_path, &manifest_yaml)?;
        written.push(yaml_path);
    }
    Ok(Report {
        manifest_yaml,
        dockerfile,
        notes: imported.notes,
        written,
    })
}

/// The manifest as YAML, with the header that marks it as imported and, when beast's schema is
/// found in the challenge folder or above it (`schema_path`), the editor's modeline pointing at it.
fn render_manifest(manifest: &raw::Manifest, source: &Path) -> Result<String, ImportError> {
    let body = serde_yaml::to_string(manifest).map_err(|source_err| ImportError::Yaml {
        path: source.to_path_buf(),
        source: source_err,
    })?;
    let folder = source.parent().unwrap_or(Path::new("."));
    let modeline = schema_path(folder)
        .map(|path| format!("# yaml-language-server: $schema={path}\n"))
        .unwrap_or_default();
    Ok(format!(
        "{YAML_HEADER}\n# Remove the line above before editing by hand, or a later import replaces this file.\n\
         {modeline}{body}"
    ))
}

/// The schema beast ships, as a path relative to `folder` (what yaml-language-server resolves a
/// relative `$schema` against): the first `challenge.schema.json` or `manifests/challenge.schema.json`
/// found in `folder` or a folder above it, up to the root of the git repository holding it. Only
/// a file whose `$id` is beast's counts. `None` when there is none (`beast schema` prints it).
pub fn schema_path(folder: &Path) -> Option<String> {
    let start = manifest::validate::normalize(&std::path::absolute(folder).ok()?);
    for (depth, dir) in start.ancestors().enumerate() {
        for candidate in [SCHEMA_FILE.to_string(), format!("manifests/{SCHEMA_FILE}")] {
            if is_beast_schema(&dir.join(&candidate)) {
                return Some(format!("{}{candidate}", "../".repeat(depth)));
            }
        }
        if dir.join(".git").exists() {
            break;
        }
    }
    None
}

fn is_beast_schema(path: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(path) else {
        return false;
    };
    serde_json::from_str::<serde_json::Value>(&text)
        .is_ok_and(|v| v.get("$id").and_then(|id| id.as_str()) == Some(manifest::SCHEMA_ID))
}

/// Runs the manifest through the same validation `beast validate` uses.
fn validate(yaml: &str, folder: &Path, source: &Path) -> Result<(), ImportError> {
    let display = folder.join(CHALLENGE_YAML).display().to_string();
    let parsed = manifest::parse_str(yaml, &display, folder, folder);
    if parsed.is_valid() && parsed.challenges().count() == 1 {
        return Ok(());
    }
    let mut errors = String::new();
    for error in parsed.errors() {
        let _ = writeln!(errors, "  {error}");
    }
    Err(ImportError::Invalid {
        path: source.to_path_buf(),
        errors: errors.trim_end().to_string(),
    })
}

/// A file may be (re)written when it does not exist or starts with our header.
fn check_replaceable(path: &Path, header: &str) -> Result<(), ImportError> {
    match std::fs::read_to_string(path) {
        Ok(text) if text.lines().next() == Some(header) => Ok(()),
        Ok(_) => Err(ImportError::WouldOverwrite {
            path: path.to_path_buf(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        // Exists but unreadable (not UTF-8, a folder, no permission): not ours to replace.
        Err(_) => Err(ImportError::WouldOverwrite {
            path: path.to_path_buf(),
        }),
    }
}

fn write(path: &Path, text: &str) -> Result<(), ImportError> {
    std::fs::write(path, text).map_err(|source| ImportError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// Makes `name` a DNS label: lowercase, anything but `[a-z0-9]` becomes `-`, runs of `-`
/// collapse, no `-` at either end, at most 63 characters. `None` when nothing is left.
pub fn sanitize_name(name: &str) -> Option<String> {
    let mut out = String::new();
    for c in name.trim().chars().flat_map(char::to_lowercase) {
        let c = if c.is_ascii_lowercase() || c.is_ascii_digit() {
            c
        } else {
            '-'
        };
        if !(c == '-' && (out.is_empty() || out.ends_with('-'))) {
            out.push(c);
        }
    }
    out.truncate(63);
    let trimmed = out.trim_end_matches('-');
    (!trimmed.is_empty()).then(|| trimmed.to_string())
}

/// Bytes to a whole number of Mi, rounded up, at least `MIN_MEMORY_MI`.
pub fn memory_quantity(bytes: i64) -> String {
    let mi = (bytes / MI + i64::from(bytes % MI != 0)).max(MIN_MEMORY_MI);
    format!("{mi}Mi")
}

/// How the original ran the challenge, decided from its type and env.
#[derive(Debug, Clone, PartialEq)]
enum Kind {
    /// Files only, no container.
    Static,
    /// The challenge's own Dockerfile: `spec.build` points at it.
    OwnDockerfile { context: String, dockerfile: String },
    /// A Dockerfile generated from the fields.
    Generated(dockerfile::Recipe),
}

/// One conversion: the source's path for errors, and the notes gathered on the way.
struct Converter<'a> {
    path: PathBuf,
    folder: &'a Path,
    notes: Vec<String>,
}

impl Converter<'_> {
    fn convert(mut self, toml: BeastToml) -> Result<Imported, ImportError> {
        self.unknown("", &toml.extra);
        self.unknown("challenge.", &toml.challenge.extra);
        self.authors(&toml);
        let meta = &toml.challenge.metadata;
        let env = &toml.challenge.env;
        let name = self.name(meta.name.as_deref())?;
        let mut spec = self.info(meta);
        let kind = self.kind(meta.kind.as_deref(), env)?;
        spec.attachments = self.attachments(meta, env, kind == Kind::Static);
        if kind == Kind::Static && spec.attachments.is_empty() {
            return Err(self.unsupported(
                "a static challenge with no file to hand out besides beast.toml: beast/v1 has no challenge without an image, a build or attachments; add the files players download",
            ));
        }
        let dockerfile = match &kind {
            Kind::Static => {
                self.static_leftovers(&toml);
                None
            }
            Kind::OwnDockerfile {
                context,
                dockerfile,
            } => {
                spec.build = Some(raw::Build {
                    context: Some(context.clone()),
                    dockerfile: Some(dockerfile.clone()),
                    args: Default::default(),
                });
                self.run(&mut spec, &toml, meta.kind.as_deref())?;
                self.sidecar(&mut spec, meta.sidecar.as_deref(), &name);
                None
            }
            Kind::Generated(recipe) => {
                spec.build = Some(raw::Build {
                    context: Some(".".to_string()),
                    dockerfile: Some(DOCKERFILE.to_string()),
                    args: Default::default(),
                });
                self.run(&mut spec, &toml, meta.kind.as_deref())?;
                self.sidecar(&mut spec, meta.sidecar.as_deref(), &name);
                Some(recipe.render(DOCKERFILE_HEADER))
            }
        };
        let manifest = raw::Manifest {
            api_version: Some("beast/v1".to_string()),
            kind: Some("Challenge".to_string()),
            metadata: raw::Metadata {
                name: Some(name),
                labels: labels(meta, toml.author.as_ref()),
                resource_version: None,
            },
            spec,
        };
        Ok(Imported {
            manifest,
            dockerfile,
            notes: self.notes,
        })
    }

    fn note(&mut self, text: impl Into<String>) {
        self.notes.push(text.into());
    }

    fn unsupported(&self, message: impl Into<String>) -> ImportError {
        ImportError::Unsupported {
            path: self.path.clone(),
            message: message.into(),
        }
    }

    /// Reports every key left in `extra` (`prefix` names the table).
    fn unknown(&mut self, prefix: &str, extra: &Extra) {
        for key in extra.keys() {
            if NO_EQUIVALENT.contains(&key.as_str()) {
                self.note(format!(
                    "{prefix}{key}: not carried over (no beast/v1 equivalent)"
                ));
            } else {
                self.note(format!("{prefix}{key}: unknown key, not carried over"));
            }
        }
    }

    fn authors(&mut self, toml: &BeastToml) {
        let authors = toml.author.iter().map(|a| ("author", a));
        let maintainers = toml.maintainer.iter().map(|a| ("maintainer", a));
        for (table, author) in authors.chain(maintainers) {
            if author
                .ssh_key
                .as_deref()
                .is_some_and(|k| !k.trim().is_empty())
            {
                self.note(format!(
                    "{table}.ssh_key: not carried over (beast/v1 gives authors no SSH access to containers)"
                ));
            }
            if table == "maintainer" && (author.name.is_some() || author.email.is_some()) {
                self.note("maintainer: not carried over (only the author's name becomes a label)");
            }
            self.unknown(&format!("{table}."), &author.extra);
        }
        if let Some(author) = &toml.author {
            if author.email.is_some() {
                self.note("author.email: not carried over (kept out of labels)");
            }
        }
    }

    fn name(&mut self, name: Option<&str>) -> Result<String, ImportError> {
        let name = name
            .filter(|n| !n.trim().is_empty())
            .ok_or_else(|| self.unsupported("challenge.metadata.name is missing"))?;
        // The original accepted any name; one with no letter or digit takes the folder's.
        let folder_name = std::path::absolute(self.folder)
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
        let label = sanitize_name(name)
            .or_else(|| folder_name.as_deref().and_then(sanitize_name))
            .ok_or_else(|| {
                self.unsupported(format!(
                    "challenge.metadata.name \"{name}\" has no letters or digits to make a name of"
                ))
            })?;
        if label != name {
            self.note(format!(
                "metadata.name: \"{name}\" renamed to \"{label}\" (a DNS label)"
            ));
        }
        Ok(label)
    }

    /// What players see: description, points, tags, hints, flag.
    fn info(&mut self, meta: &toml_format::Metadata) -> raw::Spec {
        self.unknown("challenge.metadata.", &meta.extra);
        let mut hints = Vec::new();
        for (i, hint) in meta.hints.iter().enumerate() {
            if let toml_format::Hint::Priced {
                points: Some(points),
                ..
            } = hint
            {
                if *points != 0 {
                    self.note(format!(
                        "challenge.metadata.hints[{i}].points ({points}): hint costs are not carried over"
                    ));
                }
            }
            hints.push(hint.text().to_string());
        }
        if meta.dynamic_flag == Some(true) {
            self.note(
                "challenge.metadata.dynamicFlag: not carried over (beast/v1 has one static flag)",
            );
        }
        let points = match meta.points {
            Some(p) if !(0..=i64::from(u32::MAX)).contains(&p) => {
                self.note(format!(
                    "challenge.metadata.points ({p}): out of range (0-{}), not carried over",
                    u32::MAX
                ));
                None
            }
            other => other,
        };
        raw::Spec {
            description: meta.description.clone().filter(|d| !d.is_empty()),
            points,
            tags: meta.tags.clone(),
            hints,
            flag: meta.flag.clone().filter(|f| !f.is_empty()),
            ..raw::Spec::default()
        }
    }

    /// Decides how the challenge runs from `type` and the env.
    fn kind(&mut self, kind: Option<&str>, env: &toml_format::Env) -> Result<Kind, ImportError> {
        let kind = kind.unwrap_or("").trim();
        if let Some(compose) = &env.docker_compose {
            return Err(self.unsupported(format!(
                "challenge.env.docker_compose \"{compose}\": a compose project cannot become one beast/v1 challenge; write one manifest per service"
            )));
        }
        if let Some(context) = env.docker_context.as_deref().filter(|c| !c.is_empty()) {
            return self.own_dockerfile(context);
        }
        match kind {
            "static" => Ok(Kind::Static),
            "bare" => self.bare(env),
            "service" => self.service(env),
            "docker" | "ssh" => Err(self.unsupported(format!(
                "type \"{kind}\" needs challenge.env.docker_context (the challenge's own Dockerfile)"
            ))),
            web if web.starts_with("web:") || web == "web" => self.web(web, env),
            "" => Err(self.unsupported("challenge.metadata.type is missing")),
            other => Err(self.unsupported(format!(
                "challenge type \"{other}\" is not one the original supports (static, bare, service, web:..., docker, ssh)"
            ))),
        }
    }

    /// `docker_context` names the Dockerfile (or, tolerated, a folder holding one).
    /// It must stay inside the challenge folder: the folder is the build context.
    fn own_dockerfile(&mut self, context: &str) -> Result<Kind, ImportError> {
        let Some(context) = self.inside_folder("challenge.env.docker_context", context) else {
            return Err(self.unsupported(format!(
                "challenge.env.docker_context \"{context}\": the Dockerfile must be inside the challenge folder, which is the build context"
            )));
        };
        if self.folder.join(&context).is_dir() {
            return Ok(Kind::OwnDockerfile {
                context,
                dockerfile: DOCKERFILE.to_string(),
            });
        }
        Ok(Kind::OwnDockerfile {
            context: ".".to_string(),
            dockerfile: context,
        })
    }

    fn bare(&mut self, env: &toml_format::Env) -> Result<Kind, ImportError> {
        if env.run_cmd.is_none() && env.entrypoint.is_none() {
            return Err(self.unsupported("type \"bare\" needs challenge.env.run_cmd or entrypoint"));
        }
        Ok(Kind::Generated(self.recipe(env, dockerfile::Run::Bare)))
    }

    fn service(&mut self, env: &toml_format::Env) -> Result<Kind, ImportError> {
        if env.xinetd_conf.is_some() {
            self.note("challenge.env.xinetd_conf: not carried over (the service is run by socat, not xinetd)");
        }
        if env.run_cmd.is_some() || env.entrypoint.is_some() {
            return Ok(Kind::Generated(self.recipe(env, dockerfile::Run::Bare)));
        }
        let service = env
            .service_path
            .as_deref()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| self.unsupported("type \"service\" needs challenge.env.service_path"))?;
        let port =
            default_port(env).ok_or_else(|| self.unsupported("type \"service\" needs a port"))?;
        let run = dockerfile::Run::Service {
            path: service.trim_start_matches("./").to_string(),
            port,
        };
        Ok(Kind::Generated(self.recipe(env, run)))
    }

    /// `web:<language>:<version>:<framework>`, e.g. `web:php:7.1:cli`.
    fn web(&mut self, kind: &str, env: &toml_format::Env) -> Result<Kind, ImportError> {
        let mut parts = kind.split(':').skip(1);
        let language = parts.next().unwrap_or("").to_string();
        let version = parts.next().filter(|v| !v.is_empty()).map(str::to_string);
        let framework = parts.next().filter(|f| !f.is_empty()).map(str::to_string);
        let port =
            default_port(env).ok_or_else(|| self.unsupported("a web challenge needs a port"))?;
        let web = dockerfile::Web {
            language,
            version,
            framework,
            root: env
                .web_root
                .as_deref()
                .map(|r| r.trim_start_matches("./").trim_end_matches('/').to_string())
                .filter(|r| !r.is_empty()),
            port,
        };
        if env.run_cmd.is_none() && env.entrypoint.is_none() && !web.has_default_command() {
            return Err(self.unsupported(format!(
                "type \"{kind}\": no known way to start it; set challenge.env.run_cmd"
            )));
        }
        if let Some(note) = web.note() {
            self.note(note);
        }
        Ok(Kind::Generated(self.recipe(env, dockerfile::Run::Web(web))))
    }

    /// The parts of a generated Dockerfile common to every type.
    fn recipe(&mut self, env: &toml_format::Env, run: dockerfile::Run) -> dockerfile::Recipe {
        let base_image = match env.base_image.as_deref().filter(|b| !b.is_empty()) {
            Some(image) => Some(image.to_string()),
            None => {
                if !matches!(run, dockerfile::Run::Web(_)) {
                    self.note(format!(
                        "challenge.env.base_image: not set; the Dockerfile uses {} (the original used its configured default)",
                        dockerfile::DEFAULT_BASE_IMAGE
                    ));
                }
                None
            }
        };
        dockerfile::Recipe {
            base_image,
            apt_deps: env.apt_deps.clone(),
            setup_scripts: env.setup_scripts.clone(),
            ports: container_ports(env),
            run_cmd: env.run_cmd.clone().filter(|c| !c.is_empty()),
            entrypoint: env.entrypoint.clone().filter(|e| !e.is_empty()),
            run,
        }
    }

    /// Ports, environment, resources and health of a challenge that runs a container.
    fn run(
        &mut self,
        spec: &mut raw::Spec,
        toml: &BeastToml,
        kind: Option<&str>,
    ) -> Result<(), ImportError> {
        let env = &toml.challenge.env;
        self.unknown("challenge.env.", &env.extra);
        spec.ports = self.ports(env, kind.map(str::trim) == Some("ssh"))?;
        for var in &env.var {
            if var.key.is_empty() || var.key.contains(['=', '\0']) {
                self.note(format!(
                    "challenge.env.var \"{}\": not a usable variable name, not carried over",
                    var.key.escape_debug()
                ));
                continue;
            }
            // The original set KEY to the value's path inside the container's challenge folder.
            let value = format!(
                "{}/{}",
                dockerfile::CHALLENGE_DIR,
                var.value.trim_start_matches("./")
            );
            spec.env.insert(var.key.clone(), value);
        }
        if let Some(default) = env.default_port.filter(|p| *p > 0) {
            // The container port published as `default_port`, or (ssh) published on it.
            let port = spec
                .ports
                .iter()
                .find(|p| p.port == default)
                .or_else(|| spec.ports.iter().find(|p| p.host_port == Some(default)))
                .map(|p| p.port);
            match port {
                Some(port) => {
                    spec.healthcheck = Some(raw::Healthcheck {
                        tcp: Some(raw::TcpProbe { port }),
                        ..raw::Healthcheck::default()
                    });
                }
                None => self.note(format!(
                    "challenge.env.default_port ({default}): not a published port, no health check"
                )),
            }
        }
        spec.resources = self.resources(toml.resource.as_ref());
        Ok(())
    }

    /// The original's `sidecar` as a `spec.services` entry, its connection variables added to
    /// `spec.env` (a variable the challenge sets itself wins). A kind the original did not have
    /// is noted.
    fn sidecar(&mut self, spec: &mut raw::Spec, kind: Option<&str>, challenge: &str) {
        let Some(kind) = kind.filter(|k| !k.trim().is_empty()) else {
            return;
        };
        let passwords = sidecar::Passwords {
            user: password(),
            root: password(),
        };
        let Some(found) = sidecar::sidecar(kind, challenge, &passwords) else {
            self.note(format!(
                "challenge.metadata.sidecar \"{kind}\": not one the original had (mysql, mongo), not carried over"
            ));
            return;
        };
        for (key, value) in found.main_env {
            match spec.env.entry(key) {
                std::collections::btree_map::Entry::Vacant(slot) => {
                    slot.insert(value);
                }
                std::collections::btree_map::Entry::Occupied(set) => self.note(format!(
                    "challenge.env.var {}: set by the challenge, kept instead of the {kind} service's value",
                    set.key()
                )),
            }
        }
        self.note(found.note);
        spec.services.push(found.service);
    }

    /// `port_mappings` ("host:container") first, then `ports` not already mapped, each on the
    /// same host port (the original published them so), then `default_port` when no list names
    /// it. For `ssh`, the first port is published to the container's 22 unless a mapping already
    /// is (the original did so). What `beast/v1` cannot hold (a port out of range, a host port
    /// used twice, a mapping that does not parse) is left out with a note.
    fn ports(&mut self, env: &toml_format::Env, ssh: bool) -> Result<Vec<raw::Port>, ImportError> {
        let protocol = match env.traffic.as_deref() {
            None | Some("") | Some("tcp") => None,
            Some("udp") => Some("udp".to_string()),
            Some(other) => {
                return Err(
                    self.unsupported(format!("challenge.env.traffic \"{other}\": not tcp or udp"))
                )
            }
        };
        let mut wanted: Vec<(i64, i64, String)> = Vec::new();
        for mapping in &env.port_mappings {
            match parse_mapping(mapping) {
                Some((host, container)) => {
                    wanted.push((host, container, format!("port_mappings \"{mapping}\"")));
                }
                None => self.note(format!(
                    "challenge.env.port_mappings: \"{mapping}\" is not \"host:container\", left out"
                )),
            }
        }
        let mut plain: Vec<i64> = env.ports.clone();
        if let Some(default) = env.default_port.filter(|p| *p > 0) {
            if !plain.contains(&default) && !wanted.iter().any(|(_, c, _)| *c == default) {
                plain.push(default);
            }
        }
        if ssh && !wanted.iter().any(|(_, c, _)| *c == SSH_PORT) {
            if let Some(first) = env.ports.first().copied() {
                wanted.push((first, SSH_PORT, format!("ssh: ports[0] {first} -> 22")));
                plain.retain(|p| *p != first);
            }
        }
        for port in plain {
            if !wanted.iter().any(|(_, c, _)| *c == port) {
                wanted.push((port, port, format!("ports {port}")));
            }
        }
        let mut out: Vec<raw::Port> = Vec::new();
        for (host, container, from) in wanted {
            let bad = [host, container].iter().any(|p| !(1..=65535).contains(p));
            let reason = if bad {
                Some("a port must be 1-65535")
            } else if out.iter().any(|p| p.port == container) {
                Some("the container port is already published")
            } else if out.iter().any(|p| p.host_port == Some(host)) {
                Some("the host port is already used")
            } else {
                None
            };
            if let Some(reason) = reason {
                self.note(format!("challenge.env.{from}: {reason}, left out"));
                continue;
            }
            out.push(raw::Port {
                port: container,
                host_port: Some(host),
                protocol: protocol.clone(),
            });
        }
        Ok(out)
    }

    fn resources(
        &mut self,
        section: Option<&toml_format::ResourceSection>,
    ) -> Option<raw::Resources> {
        let section = section?;
        self.unknown("resource.", &section.extra);
        let memory = section.memory_limit.filter(|m| *m > 0).map(|bytes| {
            let quantity = memory_quantity(bytes);
            if bytes % MI != 0 || bytes < MIN_MEMORY_MI * MI {
                self.note(format!(
                    "resource.memory_limit: {bytes} bytes rounded up to {quantity}"
                ));
            }
            raw::Quantity::Text(quantity)
        });
        if let Some(shares) = section.cpu_shares.filter(|s| *s > 0) {
            self.note(format!(
                "resource.cpu_shares ({shares}): not carried over; shares are a relative weight, not a cap. Set spec.resources.cpus if the challenge needs a limit"
            ));
        }
        let resources = raw::Resources {
            cpus: section.cpuslimit.filter(|c| *c > 0.0).and_then(|c| {
                if c.is_finite() && c <= manifest::validate::MAX_CPUS {
                    Some(c)
                } else {
                    self.note(format!(
                        "resource.cpuslimit ({c}): more than beast/v1 accepts, not carried over"
                    ));
                    None
                }
            }),
            memory,
            pids: section.pids_limit.filter(|p| *p > 0),
        };
        (resources != raw::Resources::default()).then_some(resources)
    }

    /// What the original handed to players, as paths relative to the challenge folder: the
    /// `assets` (looked up in `static_dir` first, as the original did, then in the folder), every
    /// file under `static_dir` (default `public/`, which the original served), and, for a static
    /// challenge that lists no assets, every file of the folder (the original served the whole
    /// folder) except `beast.toml` (it holds the flag) and the import's own files. Dot-files and
    /// symbolic links are skipped; a path that would leave the folder is left out with a note.
    fn attachments(
        &mut self,
        meta: &toml_format::Metadata,
        env: &toml_format::Env,
        is_static: bool,
    ) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let explicit_dir = env.static_dir.as_deref().filter(|d| !d.trim().is_empty());
        let web_root = env
            .web_root
            .as_deref()
            .map(|r| r.trim().trim_start_matches("./").trim_end_matches('/'));
        let explicit = explicit_dir.map(|d| self.inside_folder("challenge.env.static_dir", d));
        let static_dir = match explicit {
            Some(dir) => dir,
            // A web application served from public/ is code, not a download.
            None if web_root == Some(DEFAULT_STATIC_DIR) => {
                if self.folder.join(DEFAULT_STATIC_DIR).is_dir() {
                    self.note(format!(
                        "{DEFAULT_STATIC_DIR}/ is the web_root: its files are not attached; list the ones players download in assets"
                    ));
                }
                None
            }
            None => Some(DEFAULT_STATIC_DIR.to_string()),
        };
        for asset in &meta.assets {
            let Some(asset) = self.inside_folder("challenge.metadata.assets", asset) else {
                continue;
            };
            let in_static = static_dir
                .as_deref()
                .map(|dir| format!("{dir}/{asset}"))
                .filter(|p| self.folder.join(p).is_file());
            let path = match in_static {
                Some(path) => path,
                None if self.folder.join(&asset).is_file() => asset,
                None => {
                    self.note(format!(
                        "challenge.metadata.assets: \"{asset}\" is not a file in the challenge folder yet; attached anyway"
                    ));
                    asset
                }
            };
            push_unique(&mut out, path);
        }
        if let Some(dir) = &static_dir {
            let files = list_files(&self.folder.join(dir));
            if files.is_empty() && explicit_dir.is_some() {
                self.note(format!(
                    "challenge.env.static_dir \"{dir}\": no files found there, nothing attached"
                ));
            } else if !files.is_empty() && explicit_dir.is_none() {
                self.note(format!(
                    "spec.attachments: the {} file(s) under {dir}/ are attached (the original served static_dir, default {DEFAULT_STATIC_DIR}/, to players)",
                    files.len()
                ));
            }
            for file in files {
                push_unique(&mut out, format!("{dir}/{file}"));
            }
        }
        if is_static && meta.assets.is_empty() {
            let before = out.len();
            for file in list_files(self.folder) {
                if ![BEAST_TOML, CHALLENGE_YAML].contains(&file.as_str()) {
                    push_unique(&mut out, file);
                }
            }
            if out.len() > before {
                self.note(
                    "spec.attachments: a static challenge without assets; every file of its folder is attached (the original served the whole folder). Check that none gives the answer away",
                );
            }
        }
        out
    }

    /// `path` as a clean relative path inside the challenge folder (no `./`, no trailing `/`),
    /// or `None` with a note when it is absolute, leaves the folder, or leads out of it through a
    /// symbolic link.
    fn inside_folder(&mut self, field: &str, path: &str) -> Option<String> {
        let trimmed = path.trim();
        let parts: Vec<&str> = trimmed
            .split('/')
            .filter(|p| !p.is_empty() && *p != ".")
            .collect();
        let escapes = trimmed.starts_with('/')
            || Path::new(trimmed).is_absolute()
            || parts.contains(&"..")
            || parts.is_empty();
        let clean = parts.join("/");
        let through_link = !escapes
            && match (
                self.folder.join(&clean).canonicalize(),
                self.folder.canonicalize(),
            ) {
                (Ok(real), Ok(root)) => !real.starts_with(root),
                _ => false,
            };
        if escapes || through_link {
            self.note(format!(
                "{field}: \"{path}\" is not a path inside the challenge folder, left out"
            ));
            return None;
        }
        Some(clean)
    }

    /// A static challenge runs nothing: say which run fields were dropped.
    fn static_leftovers(&mut self, toml: &BeastToml) {
        let env = &toml.challenge.env;
        let set = [
            (
                "ports",
                !env.ports.is_empty() || !env.port_mappings.is_empty(),
            ),
            ("run_cmd", env.run_cmd.is_some()),
            ("entrypoint", env.entrypoint.is_some()),
            ("apt_deps", !env.apt_deps.is_empty()),
            ("setup_scripts", !env.setup_scripts.is_empty()),
            ("base_image", env.base_image.is_some()),
            ("var", !env.var.is_empty()),
        ];
        for (key, _) in set.iter().filter(|(_, is_set)| *is_set) {
            self.note(format!(
                "challenge.env.{key}: ignored, a static challenge runs no container"
            ));
        }
        if toml.resource.is_some() {
            self.note("resource: ignored, a static challenge runs no container");
        }
        if let Some(kind) = &toml.challenge.metadata.sidecar {
            self.note(format!(
                "challenge.metadata.sidecar \"{kind}\": ignored, a static challenge runs no container"
            ));
        }
        self.unknown("challenge.env.", &env.extra);
    }
}

/// `difficulty` and the author's name as labels.
fn labels(
    meta: &toml_format::Metadata,
    author: Option<&toml_format::Author>,
) -> std::collections::BTreeMap<String, String> {
    let mut labels = std::collections::BTreeMap::new();
    if let Some(name) = author
        .and_then(|a| a.name.as_deref())
        .filter(|n| !n.trim().is_empty())
    {
        labels.insert("author".to_string(), name.trim().to_string());
    }
    if let Some(difficulty) = meta.difficulty.as_deref().filter(|d| !d.is_empty()) {
        labels.insert("difficulty".to_string(), difficulty.to_string());
    }
    labels
}

/// A database password: 24 random letters and digits (no character a shell or a URL would
/// need quoted).
fn password() -> String {
    use rand::Rng as _;
    rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(24)
        .map(char::from)
        .collect()
}

fn push_unique(list: &mut Vec<String>, item: String) {
    if !list.contains(&item) {
        list.push(item);
    }
}

/// `"host:container"`, both 1-65535 (validation range-checks them again).
fn parse_mapping(text: &str) -> Option<(i64, i64)> {
    let (host, container) = text.trim().split_once(':')?;
    Some((host.trim().parse().ok()?, container.trim().parse().ok()?))
}

/// Container ports in the order the original published them.
fn container_ports(env: &toml_format::Env) -> Vec<i64> {
    let mut ports: Vec<i64> = env
        .port_mappings
        .iter()
        .filter_map(|m| parse_mapping(m).map(|(_, c)| c))
        .collect();
    for &port in &env.ports {
        if !ports.contains(&port) {
            ports.push(port);
        }
    }
    ports
}

/// `default_port`, else the first container port (the original's rule).
fn default_port(env: &toml_format::Env) -> Option<i64> {
    env.default_port
        .filter(|p| *p > 0)
        .or_else(|| container_ports(env).first().copied())
}

/// Files under `dir`, recursively, as sorted `/`-separated paths relative to it. Dot-files and
/// symbolic links are skipped.
fn list_files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![(dir.to_path_buf(), String::new())];
    while let Some((path, rel)) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&path) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let child = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            match entry.file_type() {
                Ok(t) if t.is_dir() => stack.push((entry.path(), child)),
                Ok(t) if t.is_file() => out.push(child),
                _ => {}
            }
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests;
