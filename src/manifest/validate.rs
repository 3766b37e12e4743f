//! Meaning checks: turns a parsed `raw::Manifest` into a validated `model::Challenge`.
//!
//! Collects every error (not just the first), each with the field path it concerns, such as
//! `spec.ports[0].port`. It resolves paths against the manifest's folder and refuses those that
//! escape it (or the watched root), reading the file system only to canonicalize paths that exist.
//! It knows nothing about files, lines or YAML: `mod.rs` places the errors with `locate`.
//!
//! Memory quantities: a plain integer of bytes, or an integer with a binary suffix `Ki`, `Mi`, `Gi`,
//! `Ti` (powers of 1024). Decimal suffixes (`K`, `M`, `G`, also `k`, `m`, `g`) are refused as
//! ambiguous: Kubernetes reads `M` as 10^6, Docker reads `m` as 2^20.

use std::collections::{BTreeMap, HashMap};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use crate::model::{
    Attachment, BuildSpec, Challenge, DynamicFlag, Healthcheck, ImageSource, Info, InstancesSpec,
    NetworkPolicy, PortSpec, Probe, Protocol, Resources, RunSpec, Security, Service, Ulimits,
};

use super::locate::{join_index, join_key};
use super::raw;

/// The only `apiVersion` this version of beast reads.
pub const API_VERSION: &str = "beast/v1";
/// The only `kind` this version of beast reads.
pub const KIND: &str = "Challenge";
/// Docker refuses memory limits below 6 MiB.
pub const MIN_MEMORY: i64 = 6 * 1024 * 1024;
/// The most replicas one challenge may ask for.
pub const MAX_REPLICAS: i64 = 64;
/// The most CPUs one challenge may ask for.
pub const MAX_CPUS: f64 = 1024.0;
/// The most services one challenge may have.
pub const MAX_SERVICES: usize = 16;

/// Linux capability names (without `CAP_`), as `security.capAdd` may name them.
pub const CAPABILITIES: &[&str] = &[
    "AUDIT_CONTROL",
    "AUDIT_READ",
    "AUDIT_WRITE",
    "BLOCK_SUSPEND",
    "BPF",
    "CHECKPOINT_RESTORE",
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "IPC_LOCK",
    "IPC_OWNER",
    "KILL",
    "LEASE",
    "LINUX_IMMUTABLE",
    "MAC_ADMIN",
    "MAC_OVERRIDE",
    "MKNOD",
    "NET_ADMIN",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_RAW",
    "PERFMON",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_CHROOT",
    "SYS_MODULE",
    "SYS_NICE",
    "SYS_PACCT",
    "SYS_PTRACE",
    "SYS_RAWIO",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "SYSLOG",
    "WAKE_ALARM",
];

/// The run fields of the main container or of a service, borrowed from the manifest.
struct RunFields<'a> {
    /// Field path prefix: `spec` or `spec.services[i]`.
    base: &'a str,
    image: Option<&'a String>,
    build: Option<&'a raw::Build>,
    command: Option<&'a Vec<String>>,
    entrypoint: Option<&'a Vec<String>>,
    working_dir: Option<&'a String>,
    env: &'a BTreeMap<String, String>,
    resources: Option<&'a raw::Resources>,
    healthcheck: Option<&'a raw::Healthcheck>,
    security: Option<&'a raw::Security>,
}

/// One problem with one field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Field path such as `spec.ports[0].port` (`""` for the whole document).
    pub path: String,
    pub message: String,
}

/// Where the manifest lives, for resolving relative paths.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// The folder relative paths resolve against (the manifest file's folder).
    pub manifest_dir: &'a Path,
    /// The watched directory nothing may escape.
    pub root: &'a Path,
}

/// Validates one manifest, returning the challenge or every error found.
pub fn validate(m: &raw::Manifest, ctx: &Context) -> Result<Challenge, Vec<FieldError>> {
    let mut v = Validator { errors: Vec::new() };
    let challenge = v.manifest(m, ctx);
    match challenge {
        Some(c) if v.errors.is_empty() => Ok(c),
        _ => Err(v.errors),
    }
}

/// Whether `name` is a DNS label: `^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`.
pub fn is_dns_label(name: &str) -> bool {
    let bytes = name.as_bytes();
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            bytes.len() <= 63
                && alnum(first)
                && alnum(last)
                && bytes.iter().all(|b| alnum(b) || *b == b'-')
        }
        _ => false,
    }
}

/// Parses a memory quantity (see the module comment) into bytes.
pub fn parse_memory(text: &str) -> Result<i64, String> {
    let text = text.trim();
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, suffix) = text.split_at(digits_end);
    if digits.is_empty() {
        return Err(format!(
            "invalid quantity \"{text}\": expected bytes or an integer with Ki, Mi, Gi or Ti (e.g. \"128Mi\")"
        ));
    }
    let multiplier: i64 = match suffix {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "K" | "k" | "M" | "m" | "G" | "g" | "T" | "t" | "KB" | "MB" | "GB" | "kb" | "mb" | "gb" => {
            let unit = suffix.chars().next().unwrap_or('M').to_ascii_uppercase();
            return Err(format!(
                "ambiguous unit \"{suffix}\" in \"{text}\": write \"{digits}{unit}i\" (powers of 1024) or a plain number of bytes"
            ));
        }
        s if s.starts_with('.') => {
            return Err(format!(
                "invalid quantity \"{text}\": use an integer with a smaller unit (e.g. \"1536Mi\" for 1.5Gi)"
            ));
        }
        _ => {
            return Err(format!(
                "invalid quantity \"{text}\": unknown unit \"{suffix}\" (use Ki, Mi, Gi or Ti)"
            ));
        }
    };
    digits
        .parse::<i64>()
        .ok()
        .and_then(|n| n.checked_mul(multiplier))
        .ok_or_else(|| format!("quantity \"{text}\" is too large"))
}

/// Paths of null values in the string maps and lists of a manifest document. serde_yaml reads
/// `KEY: ~` into a `String` field as `"~"`; this finds such values so they can be refused.
pub fn null_strings(doc: &serde_yaml::Value) -> Vec<FieldError> {
    const MAPS: [&[&str]; 3] = [
        &["metadata", "labels"],
        &["spec", "env"],
        &["spec", "build", "args"],
    ];
    const LISTS: [&[&str]; 6] = [
        &["spec", "tags"],
        &["spec", "hints"],
        &["spec", "command"],
        &["spec", "entrypoint"],
        &["spec", "attachments"],
        &["spec", "healthcheck", "exec", "command"],
    ];
    let get = |keys: &[&str]| {
        keys.iter()
            .try_fold(doc, |value, key| value.get(key))
            .map(|value| (keys.join("."), value))
    };
    let mut errors = Vec::new();
    let message = "must be a string, found null (write \"\" for an empty string)";
    for (path, value) in MAPS.iter().filter_map(|keys| get(keys)) {
        if let serde_yaml::Value::Mapping(map) = value {
            for (key, value) in map {
                if let (Some(key), true) = (key.as_str(), value.is_null()) {
                    errors.push(FieldError {
                        path: join_key(&path, key),
                        message: message.to_string(),
                    });
                }
            }
        }
    }
    for (path, value) in LISTS.iter().filter_map(|keys| get(keys)) {
        if let serde_yaml::Value::Sequence(items) = value {
            for (i, item) in items.iter().enumerate() {
                if item.is_null() {
                    errors.push(FieldError {
                        path: join_index(&path, i),
                        message: message.to_string(),
                    });
                }
            }
        }
    }
    errors
}

struct Validator {
    errors: Vec<FieldError>,
}

impl Validator {
    fn error(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(FieldError {
            path: path.into(),
            message: message.into(),
        });
    }

    /// Checks `value` is in `lo..=hi`, reporting "must be lo-hi" at `path` otherwise.
    fn range(&mut self, path: &str, value: i64, lo: i64, hi: i64) -> Option<i64> {
        if (lo..=hi).contains(&value) {
            Some(value)
        } else {
            self.error(path, format!("must be {lo}-{hi}"));
            None
        }
    }

    fn port(&mut self, path: &str, value: i64) -> Option<u16> {
        self.range(path, value, 1, 65535)
            .and_then(|p| u16::try_from(p).ok())
    }

    fn manifest(&mut self, m: &raw::Manifest, ctx: &Context) -> Option<Challenge> {
        match m.api_version.as_deref() {
            Some(API_VERSION) => {}
            None => self.error("apiVersion", format!("required (must be {API_VERSION})")),
            Some(other) => self.error(
                "apiVersion",
                format!("must be {API_VERSION}, not \"{other}\""),
            ),
        }
        match m.kind.as_deref() {
            Some(KIND) => {}
            None => self.error("kind", format!("required (must be {KIND})")),
            Some(other) => self.error("kind", format!("must be {KIND}, not \"{other}\"")),
        }
        let name = self.name(m.metadata.name.as_deref());
        for key in m.metadata.labels.keys() {
            if key.is_empty() {
                self.error("metadata.labels", "label keys must not be empty");
            }
        }
        let spec = &m.spec;
        let info = self.info(spec);
        if spec.flag.as_deref() == Some("") {
            self.error("spec.flag", "must not be empty (leave it out for no flag)");
        }
        let run = self.run(spec, ctx);
        let replicas = match spec.replicas {
            None => Some(1),
            Some(r) => self.range("spec.replicas", r, 0, MAX_REPLICAS),
        };
        let attachments = self.attachments(&spec.attachments, ctx);
        // Services of a challenge that runs (static ones refuse them in `static_challenge`),
        // checked even when the main container's fields have errors: every error in one pass.
        let services = if spec.image.is_some() || spec.build.is_some() {
            self.services(&spec.services, ctx)
        } else {
            Some(Vec::new())
        };
        let network = NetworkPolicy {
            egress: spec.network.as_ref().and_then(|n| n.egress),
        };
        let instances = match &spec.instances {
            Some(i) => self.instances(i, spec).map(Some),
            None => Some(None),
        };
        let placement = self.placement(spec.placement.as_ref());
        Some(Challenge {
            name: name?,
            labels: m.metadata.labels.clone(),
            info,
            flag: spec.flag.clone(),
            run: run?,
            replicas: u32::try_from(replicas?).ok()?,
            attachments,
            network,
            services: services?,
            instances: instances?,
            team: None,
            placement: placement?,
        })
    }

    /// `spec.placement.constraints`: each `ATTRIBUTE==VALUE` or `ATTRIBUTE!=VALUE`, as Swarm
    /// takes them.
    fn placement(&mut self, placement: Option<&raw::Placement>) -> Option<Vec<String>> {
        let constraints = placement.map(|p| p.constraints.clone()).unwrap_or_default();
        let before = self.errors.len();
        for (i, c) in constraints.iter().enumerate() {
            let well_formed = c
                .split_once("==")
                .or_else(|| c.split_once("!="))
                .is_some_and(|(attr, value)| {
                    !attr.trim().is_empty() && !value.trim().is_empty() && !c.contains('\n')
                });
            if !well_formed {
                self.error(
                    format!("spec.placement.constraints[{i}]"),
                    format!("{c:?} is not ATTRIBUTE==VALUE or ATTRIBUTE!=VALUE (e.g. node.labels.pool==pwn)"),
                );
            }
        }
        (self.errors.len() == before).then_some(constraints)
    }

    fn name(&mut self, name: Option<&str>) -> Option<String> {
        match name {
            None | Some("") => {
                self.error("metadata.name", "required");
                None
            }
            Some(name) if is_dns_label(name) => Some(name.to_string()),
            Some(name) => {
                let why = if name.len() > 63 {
                    "is longer than 63 characters".to_string()
                } else {
                    format!("\"{name}\" is not a DNS label")
                };
                self.error(
                    "metadata.name",
                    format!("{why}: use lowercase letters, digits and '-', starting and ending with a letter or digit"),
                );
                None
            }
        }
    }

    fn info(&mut self, spec: &raw::Spec) -> Info {
        let points = spec.points.and_then(|p| {
            self.range("spec.points", p, 0, i64::from(u32::MAX))
                .and_then(|p| u32::try_from(p).ok())
        });
        Info {
            description: spec.description.clone().unwrap_or_default(),
            category: spec.category.clone().unwrap_or_default(),
            points,
            tags: spec.tags.clone(),
            hints: spec.hints.clone(),
        }
    }

    /// `Some(None)` for a valid static challenge, `None` when there were errors.
    fn run(&mut self, spec: &raw::Spec, ctx: &Context) -> Option<Option<RunSpec>> {
        if spec.image.is_none() && spec.build.is_none() {
            if spec.attachments.is_empty() {
                self.error(
                    "spec",
                    "needs image or build (or only attachments, for a static challenge)",
                );
                return None;
            }
            return self.static_challenge(spec).then_some(None);
        }
        let fields = RunFields {
            base: "spec",
            image: spec.image.as_ref(),
            build: spec.build.as_ref(),
            command: spec.command.as_ref(),
            entrypoint: spec.entrypoint.as_ref(),
            working_dir: spec.working_dir.as_ref(),
            env: &spec.env,
            resources: spec.resources.as_ref(),
            healthcheck: spec.healthcheck.as_ref(),
            security: spec.security.as_ref(),
        };
        let replicas = spec.replicas.unwrap_or(1);
        let ports = self.ports(&spec.ports, replicas);
        let run = self.run_fields(&fields, ctx);
        Some(Some(RunSpec {
            ports: ports?,
            ..run?
        }))
    }

    /// The fields shared by the main containers and services; `ports` is left empty.
    fn run_fields(&mut self, f: &RunFields, ctx: &Context) -> Option<RunSpec> {
        let base = f.base;
        let source = match (f.image, f.build) {
            (Some(_), Some(_)) => {
                self.error(format!("{base}.build"), "set only one of image and build");
                None
            }
            (Some(image), None) if image.trim().is_empty() => {
                self.error(format!("{base}.image"), "must not be empty");
                None
            }
            (Some(image), None) => Some(ImageSource::Image(image.clone())),
            (None, Some(build)) => self.build(base, build, ctx).map(ImageSource::Build),
            (None, None) => {
                self.error(base, "needs image or build");
                None
            }
        };
        let command = self.argv(&format!("{base}.command"), f.command);
        let entrypoint = self.argv(&format!("{base}.entrypoint"), f.entrypoint);
        if let Some(dir) = f.working_dir {
            if !dir.starts_with('/') {
                self.error(
                    format!("{base}.workingDir"),
                    "must be an absolute path inside the container",
                );
            }
        }
        self.env_keys(&format!("{base}.env"), f.env);
        let resources = match f.resources {
            Some(r) => self.resources(base, r),
            None => Some(Resources::default()),
        };
        let healthcheck = match f.healthcheck {
            Some(h) => self.healthcheck(base, h).map(Some),
            None => Some(None),
        };
        let security = match f.security {
            Some(sec) => self.security(base, sec),
            None => Some(Security::default()),
        };
        Some(RunSpec {
            source: source?,
            command: command?,
            entrypoint: entrypoint?,
            working_dir: f.working_dir.cloned(),
            env: f.env.clone(),
            ports: Vec::new(),
            resources: resources?,
            healthcheck: healthcheck?,
            security: security?,
        })
    }

    /// `spec.services`: names unique DNS labels that are not all digits.
    fn services(&mut self, list: &[raw::Service], ctx: &Context) -> Option<Vec<Service>> {
        let before = self.errors.len();
        if list.len() > MAX_SERVICES {
            self.error(
                "spec.services",
                format!("at most {MAX_SERVICES} services, not {}", list.len()),
            );
        }
        let mut seen: HashMap<&str, usize> = HashMap::new();
        let mut out = Vec::new();
        for (i, svc) in list.iter().enumerate() {
            let base = join_index("spec.services", i);
            let name = match svc.name.as_deref() {
                None | Some("") => {
                    self.error(join_key(&base, "name"), "required");
                    None
                }
                Some(n) if !is_dns_label(n) => {
                    self.error(
                        join_key(&base, "name"),
                        format!("\"{n}\" is not a DNS label: use lowercase letters, digits and '-', starting and ending with a letter or digit"),
                    );
                    None
                }
                Some(n) if n.bytes().all(|b| b.is_ascii_digit()) => {
                    self.error(
                        join_key(&base, "name"),
                        format!("\"{n}\" is all digits: replica containers are numbered, give the service a name"),
                    );
                    None
                }
                Some(n) => {
                    if let Some(first) = seen.insert(n, i) {
                        self.error(
                            join_key(&base, "name"),
                            format!("\"{n}\" is already the name of spec.services[{first}]"),
                        );
                    }
                    Some(n.to_string())
                }
            };
            let fields = RunFields {
                base: &base,
                image: svc.image.as_ref(),
                build: svc.build.as_ref(),
                command: svc.command.as_ref(),
                entrypoint: svc.entrypoint.as_ref(),
                working_dir: svc.working_dir.as_ref(),
                env: &svc.env,
                resources: svc.resources.as_ref(),
                healthcheck: svc.healthcheck.as_ref(),
                security: svc.security.as_ref(),
            };
            let run = self.run_fields(&fields, ctx);
            if let (Some(name), Some(run)) = (name, run) {
                out.push(Service { name, run });
            }
        }
        (self.errors.len() == before).then_some(out)
    }

    /// `spec.instances`.
    fn instances(&mut self, i: &raw::Instances, spec: &raw::Spec) -> Option<InstancesSpec> {
        let before = self.errors.len();
        let path = "spec.instances";
        let ttl = self.duration(
            &join_key(path, "ttl"),
            i.ttl.as_deref(),
            Duration::from_secs(30 * 60),
            true,
        );
        let mut count = |key: &str, value: Option<i64>, default: i64, lo: i64, hi: i64| {
            let v = value.unwrap_or(default);
            self.range(&join_key(path, key), v, lo, hi)
                .and_then(|v| u32::try_from(v).ok())
        };
        let max_renewals = count("maxRenewals", i.max_renewals, 3, 0, 1000);
        let max_per_team = count("maxPerTeam", i.max_per_team, 1, 1, 100);
        let max_total = count("maxTotal", i.max_total, 100, 1, 10_000);
        let per_team = i.per_team.unwrap_or(false);
        if per_team && spec.image.is_none() && spec.build.is_none() {
            self.error(
                join_key(path, "perTeam"),
                "a static challenge (no image or build) has nothing to run per team",
            );
        }
        if per_team && spec.ports.iter().any(|p| p.host_port.is_some()) {
            self.error(
                join_key(path, "perTeam"),
                "per-team instances cannot share a fixed hostPort; omit hostPort so each instance gets its own",
            );
        }
        let flag = i.flag.as_ref().and_then(|f| {
            let at = join_key(path, "flag");
            let mut ok = true;
            if f.template.matches("{random}").count() != 1 {
                self.error(
                    join_key(&at, "template"),
                    "must contain {random} exactly once (where 16 hex characters unique to the instance go)",
                );
                ok = false;
            }
            if f.env.is_none() && f.file.is_none() {
                self.error(at.clone(), "set env, file or both: how the flag reaches the container");
                ok = false;
            }
            if let Some(env) = &f.env {
                if env.is_empty() || env.contains('=') || env.contains('\0') {
                    self.error(join_key(&at, "env"), "must be a variable name");
                    ok = false;
                }
            }
            if let Some(file) = &f.file {
                if !file.starts_with('/') || file.ends_with('/') || file.contains("/../") {
                    self.error(join_key(&at, "file"), "must be an absolute file path");
                    ok = false;
                }
                let read_only = spec
                    .security
                    .as_ref()
                    .and_then(|s| s.read_only_root_filesystem)
                    .unwrap_or(false);
                if read_only {
                    self.error(
                        join_key(&at, "file"),
                        "cannot be written with spec.security.readOnlyRootFilesystem: true; deliver the flag by env",
                    );
                    ok = false;
                }
            }
            if spec.flag.is_some() {
                self.error(
                    join_key(&at, "template"),
                    "set either spec.flag or spec.instances.flag, not both",
                );
                ok = false;
            }
            ok.then(|| DynamicFlag {
                template: f.template.clone(),
                env: f.env.clone(),
                file: f.file.clone(),
            })
        });
        if !per_team && i.flag.is_some() {
            self.error(
                join_key(path, "flag"),
                "a dynamic flag needs perTeam: true (one flag per team's instance)",
            );
        }
        (self.errors.len() == before).then(|| InstancesSpec {
            per_team,
            ttl: ttl.unwrap_or_default(),
            max_renewals: max_renewals.unwrap_or(0),
            max_per_team: max_per_team.unwrap_or(1),
            max_total: max_total.unwrap_or(1),
            flag,
        })
    }

    /// A `security` block at `base`.
    fn security(&mut self, base: &str, sec: &raw::Security) -> Option<Security> {
        let before = self.errors.len();
        let path = format!("{base}.security");
        let mut tmpfs = Vec::new();
        for (i, dir) in sec.tmpfs.iter().enumerate() {
            let at = join_index(&join_key(&path, "tmpfs"), i);
            if !dir.starts_with('/') || dir == "/" || dir.contains(',') || dir.contains(':') {
                self.error(
                    at,
                    format!("\"{dir}\" must be an absolute path other than / (no ',' or ':')"),
                );
            } else if tmpfs.contains(dir) {
                self.error(at, format!("\"{dir}\" is listed twice"));
            } else {
                tmpfs.push(dir.clone());
            }
        }
        if let Some(user) = &sec.user {
            let ok = |part: &str| {
                !part.is_empty()
                    && part.len() <= 32
                    && part
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
            };
            let valid = match user.split_once(':') {
                Some((u, g)) => ok(u) && ok(g),
                None => ok(user),
            };
            if !valid {
                self.error(
                    join_key(&path, "user"),
                    format!("\"{user}\" must be uid, uid:gid, name or name:group"),
                );
            }
        }
        let mut cap_add = Vec::new();
        for (i, cap) in sec.cap_add.iter().enumerate() {
            let name = cap.trim().to_ascii_uppercase();
            let name = name.strip_prefix("CAP_").unwrap_or(&name).to_string();
            if !CAPABILITIES.contains(&name.as_str()) {
                self.error(
                    join_index(&join_key(&path, "capAdd"), i),
                    format!("\"{cap}\" is not a Linux capability (e.g. NET_RAW, SYS_PTRACE)"),
                );
            } else if !cap_add.contains(&name) {
                cap_add.push(name);
            }
        }
        cap_add.sort();
        if let Some(runtime) = &sec.runtime {
            let ok = !runtime.is_empty()
                && runtime
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
            if !ok {
                self.error(
                    join_key(&path, "runtime"),
                    format!("\"{runtime}\" is not a runtime name (e.g. runsc)"),
                );
            }
        }
        let mut limit = |key: &str, value: Option<i64>| {
            value.and_then(|v| {
                self.range(&join_key(&join_key(&path, "ulimits"), key), v, 1, 1_048_576)
                    .and_then(|v| u64::try_from(v).ok())
            })
        };
        let ulimits = sec
            .ulimits
            .as_ref()
            .map_or(Ulimits::default(), |u| Ulimits {
                nofile: limit("nofile", u.nofile),
                nproc: limit("nproc", u.nproc),
            });
        (self.errors.len() == before).then(|| Security {
            read_only_root_filesystem: sec.read_only_root_filesystem.unwrap_or(false),
            tmpfs,
            user: sec.user.clone(),
            cap_add,
            privileged: sec.privileged.unwrap_or(false),
            runtime: sec.runtime.clone(),
            ulimits,
        })
    }

    /// A static challenge runs no container: refuse fields that only shape one.
    fn static_challenge(&mut self, spec: &raw::Spec) -> bool {
        let before = self.errors.len();
        let set = [
            ("spec.command", spec.command.is_some()),
            ("spec.entrypoint", spec.entrypoint.is_some()),
            ("spec.workingDir", spec.working_dir.is_some()),
            ("spec.env", !spec.env.is_empty()),
            ("spec.ports", !spec.ports.is_empty()),
            ("spec.resources", spec.resources.is_some()),
            ("spec.healthcheck", spec.healthcheck.is_some()),
            ("spec.security", spec.security.is_some()),
            ("spec.services", !spec.services.is_empty()),
            ("spec.network", spec.network.is_some()),
        ];
        for (path, _) in set.iter().filter(|(_, is_set)| *is_set) {
            self.error(
                *path,
                "a static challenge (no image or build) runs no container; add image or build, or remove this",
            );
        }
        self.errors.len() == before
    }

    fn argv(&mut self, path: &str, argv: Option<&Vec<String>>) -> Option<Option<Vec<String>>> {
        match argv {
            Some(list) if list.is_empty() => {
                self.error(
                    path,
                    "must not be an empty list (leave it out to use the image's)",
                );
                None
            }
            other => Some(other.cloned()),
        }
    }

    fn env_keys(&mut self, path: &str, map: &BTreeMap<String, String>) {
        for key in map.keys() {
            if key.is_empty() {
                self.error(path, "variable names must not be empty");
            } else if key.contains('=') || key.contains('\0') {
                self.error(
                    join_key(path, key),
                    "variable names must not contain '=' or NUL",
                );
            }
        }
    }

    fn build(&mut self, base: &str, b: &raw::Build, ctx: &Context) -> Option<BuildSpec> {
        let context_text = b.context.as_deref().unwrap_or(".");
        let context = self.inside(
            &format!("{base}.build.context"),
            context_text,
            ctx.manifest_dir,
            ctx.root,
            "the watched directory",
        );
        let dockerfile_text = b.dockerfile.as_deref().unwrap_or("Dockerfile");
        let dockerfile = match &context {
            Some(context) => self
                .inside(
                    &format!("{base}.build.dockerfile"),
                    dockerfile_text,
                    context,
                    context,
                    "the build context",
                )
                .and_then(|abs| {
                    self.relative_string(&format!("{base}.build.dockerfile"), &abs, context)
                }),
            None => None,
        };
        self.env_keys(&format!("{base}.build.args"), &b.args);
        Some(BuildSpec {
            context: context?,
            dockerfile: dockerfile?,
            args: b.args.clone(),
        })
    }

    /// `relative` must be a relative path that, joined onto `base` and normalised (and
    /// canonicalized if it exists), stays inside `limit`. Returns the resolved absolute path.
    fn inside(
        &mut self,
        path: &str,
        relative: &str,
        base: &Path,
        limit: &Path,
        limit_name: &str,
    ) -> Option<PathBuf> {
        if relative.is_empty() {
            self.error(path, "must not be empty");
            return None;
        }
        if Path::new(relative).is_absolute()
            || relative.starts_with('/')
            || relative.starts_with('\\')
        {
            self.error(path, format!("must be a relative path, not \"{relative}\""));
            return None;
        }
        let limit_abs = normalize(&absolute(limit));
        let resolved = normalize(&absolute(base).join(relative));
        if !resolved.starts_with(&limit_abs) {
            self.error(path, format!("\"{relative}\" escapes {limit_name}"));
            return None;
        }
        match (resolved.canonicalize(), limit_abs.canonicalize()) {
            (Ok(real), Ok(real_limit)) if !real.starts_with(&real_limit) => {
                self.error(
                    path,
                    format!("\"{relative}\" leads (through a symlink) outside {limit_name}"),
                );
                None
            }
            (Ok(real), Ok(_)) => Some(real),
            _ => Some(resolved),
        }
    }

    /// `abs` relative to `base`, with `/` separators (what the engine's build API wants).
    fn relative_string(&mut self, path: &str, abs: &Path, base: &Path) -> Option<String> {
        let rel = abs.strip_prefix(base).ok().map(|rel| {
            rel.components()
                .filter_map(|c| c.as_os_str().to_str())
                .collect::<Vec<_>>()
                .join("/")
        });
        match rel {
            Some(rel) if !rel.is_empty() => Some(rel),
            _ => {
                self.error(path, "must name a file inside the build context");
                None
            }
        }
    }

    fn attachments(&mut self, list: &[String], ctx: &Context) -> Vec<Attachment> {
        let mut out: Vec<Attachment> = Vec::new();
        let mut seen: HashMap<String, usize> = HashMap::new();
        for (i, name) in list.iter().enumerate() {
            let path = join_index("spec.attachments", i);
            let Some(abs) = self.inside(
                &path,
                name,
                ctx.manifest_dir,
                ctx.manifest_dir,
                "the manifest's folder",
            ) else {
                continue;
            };
            let normalized = normalize(&absolute(ctx.manifest_dir).join(name));
            let Some(rel) =
                self.relative_string(&path, &normalized, &normalize(&absolute(ctx.manifest_dir)))
            else {
                continue;
            };
            if let Some(first) = seen.get(&rel) {
                self.error(
                    path,
                    format!("duplicate of spec.attachments[{first}] (\"{rel}\")"),
                );
                continue;
            }
            seen.insert(rel.clone(), i);
            out.push(Attachment {
                name: rel,
                path: abs,
            });
        }
        out
    }

    fn ports(&mut self, ports: &[raw::Port], replicas: i64) -> Option<Vec<PortSpec>> {
        let before = self.errors.len();
        let mut out = Vec::new();
        let mut by_port: HashMap<(u16, Protocol), usize> = HashMap::new();
        let mut by_host: HashMap<(u16, Protocol), usize> = HashMap::new();
        for (i, p) in ports.iter().enumerate() {
            let base = join_index("spec.ports", i);
            let port = self.port(&join_key(&base, "port"), p.port);
            let host_port = p
                .host_port
                .and_then(|h| self.port(&join_key(&base, "hostPort"), h));
            let protocol = match p.protocol.as_deref() {
                None | Some("tcp") => Some(Protocol::Tcp),
                Some("udp") => Some(Protocol::Udp),
                Some(other) => {
                    self.error(
                        join_key(&base, "protocol"),
                        format!("must be tcp or udp, not \"{other}\""),
                    );
                    None
                }
            };
            let Some(protocol) = protocol else { continue };
            if let Some(port) = port {
                if let Some(first) = by_port.insert((port, protocol), i) {
                    self.error(
                        join_key(&base, "port"),
                        format!("{port}/{protocol} is already published by spec.ports[{first}]"),
                    );
                }
            }
            if let Some(host) = host_port {
                if let Some(first) = by_host.insert((host, protocol), i) {
                    self.error(
                        join_key(&base, "hostPort"),
                        format!(
                            "host port {host}/{protocol} is already used by spec.ports[{first}]"
                        ),
                    );
                }
                if replicas > 1 {
                    self.error(
                        join_key(&base, "hostPort"),
                        format!(
                            "a fixed host port cannot be shared by {replicas} replicas; omit hostPort to allocate one per replica"
                        ),
                    );
                }
            }
            if let (Some(port), true) = (port, p.host_port.is_none() || host_port.is_some()) {
                out.push(PortSpec {
                    port,
                    host_port,
                    protocol,
                });
            }
        }
        (self.errors.len() == before).then_some(out)
    }

    fn resources(&mut self, base: &str, r: &raw::Resources) -> Option<Resources> {
        let before = self.errors.len();
        let nano_cpus = r.cpus.and_then(|cpus| {
            if cpus.is_finite() && cpus > 0.0 && cpus <= MAX_CPUS {
                // In range, so the product fits an i64 exactly enough.
                #[allow(clippy::cast_possible_truncation)]
                Some((cpus * 1e9).round() as i64)
            } else {
                self.error(
                    format!("{base}.resources.cpus"),
                    format!("must be more than 0 and at most {MAX_CPUS}"),
                );
                None
            }
        });
        let memory = r.memory.as_ref().and_then(|q| {
            let bytes = match q {
                raw::Quantity::Bytes(b) => Ok(*b),
                raw::Quantity::Text(t) => parse_memory(t),
            };
            match bytes {
                Ok(b) if b >= MIN_MEMORY => Some(b),
                Ok(_) => {
                    self.error(
                        format!("{base}.resources.memory"),
                        "must be at least 6Mi (Docker's minimum)",
                    );
                    None
                }
                Err(message) => {
                    self.error(format!("{base}.resources.memory"), message);
                    None
                }
            }
        });
        let pids = r.pids.and_then(|p| {
            if p >= 1 {
                Some(p)
            } else {
                self.error(format!("{base}.resources.pids"), "must be at least 1");
                None
            }
        });
        (self.errors.len() == before).then_some(Resources {
            nano_cpus,
            memory,
            pids,
        })
    }

    fn duration(
        &mut self,
        path: &str,
        text: Option<&str>,
        default: Duration,
        positive: bool,
    ) -> Option<Duration> {
        let Some(text) = text else {
            return Some(default);
        };
        match humantime::parse_duration(text) {
            Ok(d) if positive && d.is_zero() => {
                self.error(path, "must be more than 0");
                None
            }
            Ok(d) => Some(d),
            Err(e) => {
                self.error(
                    path,
                    format!("invalid duration \"{text}\": {e} (e.g. \"10s\", \"1m30s\")"),
                );
                None
            }
        }
    }

    fn healthcheck(&mut self, base: &str, h: &raw::Healthcheck) -> Option<Healthcheck> {
        let before = self.errors.len();
        let path = &format!("{base}.healthcheck");
        let kinds = [h.tcp.is_some(), h.http.is_some(), h.exec.is_some()];
        let probe = match kinds.iter().filter(|set| **set).count() {
            0 => {
                self.error(path, "needs one probe: tcp, http or exec");
                None
            }
            1 => {
                if let Some(tcp) = &h.tcp {
                    self.port(&format!("{path}.tcp.port"), tcp.port)
                        .map(|port| Probe::Tcp { port })
                } else if let Some(http) = &h.http {
                    let port = self.port(&format!("{path}.http.port"), http.port);
                    let probe_path = http.path.clone().unwrap_or_else(|| "/".to_string());
                    if !probe_path.starts_with('/') {
                        self.error(format!("{path}.http.path"), "must start with '/'");
                    }
                    port.map(|port| Probe::Http {
                        port,
                        path: probe_path,
                    })
                } else if let Some(exec) = &h.exec {
                    if exec.command.is_empty() {
                        self.error(format!("{path}.exec.command"), "must not be empty");
                        None
                    } else {
                        Some(Probe::Exec {
                            command: exec.command.clone(),
                        })
                    }
                } else {
                    None
                }
            }
            _ => {
                self.error(path, "set only one probe: tcp, http or exec");
                None
            }
        };
        let interval = self.duration(
            &format!("{path}.interval"),
            h.interval.as_deref(),
            Duration::from_secs(10),
            true,
        );
        let timeout = self.duration(
            &format!("{path}.timeout"),
            h.timeout.as_deref(),
            Duration::from_secs(2),
            true,
        );
        let start_period = self.duration(
            &format!("{path}.startPeriod"),
            h.start_period.as_deref(),
            Duration::ZERO,
            false,
        );
        let retries = match h.retries {
            None => Some(3),
            Some(r) => self
                .range(&format!("{path}.retries"), r, 1, i64::from(u32::MAX))
                .and_then(|r| u32::try_from(r).ok()),
        };
        if self.errors.len() != before {
            return None;
        }
        Some(Healthcheck {
            probe: probe?,
            interval: interval?,
            timeout: timeout?,
            retries: retries?,
            start_period: start_period?,
        })
    }
}

/// `path` made absolute against the current directory (lexically; nothing is resolved).
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Lexical normalisation: drops `.`, applies `..` to the previous component (never above the root).
pub fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push(component);
                }
            }
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const BASE: &str = "apiVersion: beast/v1\nkind: Challenge\nmetadata: {name: echo}\n";

    fn raw(spec: &str) -> raw::Manifest {
        serde_yaml::from_str(&format!("{BASE}spec:\n{spec}")).unwrap()
    }

    fn check_in(m: &raw::Manifest, dir: &Path) -> Result<Challenge, Vec<FieldError>> {
        validate(
            m,
            &Context {
                manifest_dir: dir,
                root: dir,
            },
        )
    }

    fn check(spec: &str) -> Result<Challenge, Vec<FieldError>> {
        check_in(&raw(spec), Path::new("/srv/challenges/echo"))
    }

    /// The errors as `path: message` lines.
    fn errors(spec: &str) -> Vec<String> {
        check(spec)
            .expect_err("expected errors")
            .into_iter()
            .map(|e| format!("{}: {}", e.path, e.message))
            .collect()
    }

    fn has(errors: &[String], needle: &str) -> bool {
        errors.iter().any(|e| e.contains(needle))
    }

    #[test]
    fn minimal_image_challenge() {
        let c = check("  image: example/echo:1\n").unwrap();
        assert_eq!(c, Challenge::with_image("echo", "example/echo:1"));
    }

    #[test]
    fn dns_labels() {
        for ok in ["a", "echo-tcp", "0x1", &"a".repeat(63)] {
            assert!(is_dns_label(ok), "{ok}");
        }
        for bad in ["", "-a", "a-", "Echo", "a_b", "a.b", &"a".repeat(64), "é"] {
            assert!(!is_dns_label(bad), "{bad}");
        }
    }

    #[test]
    fn header_and_name_errors_are_all_reported() {
        let m: raw::Manifest = serde_yaml::from_str(
            "apiVersion: beast/v2\nmetadata: {name: Echo_1}\nspec: {image: x}\n",
        )
        .unwrap();
        let errs = check_in(&m, Path::new("/x")).unwrap_err();
        let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["apiVersion", "kind", "metadata.name"]);
        assert_eq!(errs[0].message, "must be beast/v1, not \"beast/v2\"");
        assert_eq!(errs[1].message, "required (must be Challenge)");
        let m: raw::Manifest =
            serde_yaml::from_str("apiVersion: beast/v1\nkind: Challenge\nspec: {image: x}\n")
                .unwrap();
        assert_eq!(
            check_in(&m, Path::new("/x")).unwrap_err()[0].path,
            "metadata.name"
        );
    }

    #[test]
    fn image_or_build() {
        let e = errors("  image: x\n  build: {}\n");
        assert_eq!(e, ["spec.build: set only one of image and build"]);
        assert_eq!(errors("  image: ''\n"), ["spec.image: must not be empty"]);
        assert!(has(
            &errors("  description: hi\n"),
            "spec: needs image or build"
        ));
    }

    #[test]
    fn static_challenge_has_no_run() {
        let c = check("  attachments: [public/handout.tar.gz, ./notes.txt]\n").unwrap();
        assert_eq!(c.run, None);
        assert_eq!(c.attachments.len(), 2);
        assert_eq!(c.attachments[0].name, "public/handout.tar.gz");
        assert_eq!(
            c.attachments[0].path,
            PathBuf::from("/srv/challenges/echo/public/handout.tar.gz")
        );
        assert_eq!(c.attachments[1].name, "notes.txt");
        let e = errors("  attachments: [a]\n  ports: [{port: 1}]\n  env: {A: b}\n");
        assert_eq!(e.len(), 2);
        assert!(has(&e, "spec.ports: a static challenge"));
        assert!(has(&e, "spec.env: a static challenge"));
    }

    #[test]
    fn attachments_stay_in_the_manifest_folder() {
        let e = errors("  attachments: [../other/flag.txt, /etc/passwd, '', a/../../b, x, ./x]\n");
        assert_eq!(
            e,
            [
                "spec.attachments[0]: \"../other/flag.txt\" escapes the manifest's folder",
                "spec.attachments[1]: must be a relative path, not \"/etc/passwd\"",
                "spec.attachments[2]: must not be empty",
                "spec.attachments[3]: \"a/../../b\" escapes the manifest's folder",
                "spec.attachments[5]: duplicate of spec.attachments[4] (\"x\")",
            ]
        );
    }

    #[test]
    fn ports() {
        let c = check("  image: x\n  ports:\n    - port: 1337\n      hostPort: 31337\n    - {port: 53, protocol: udp}\n    - {port: 53}\n").unwrap();
        let ports = c.run.unwrap().ports;
        assert_eq!(
            ports,
            [
                PortSpec {
                    port: 1337,
                    host_port: Some(31337),
                    protocol: Protocol::Tcp
                },
                PortSpec {
                    port: 53,
                    host_port: None,
                    protocol: Protocol::Udp
                },
                PortSpec {
                    port: 53,
                    host_port: None,
                    protocol: Protocol::Tcp
                },
            ]
        );
        let e = errors(
            "  image: x\n  ports:\n    - {port: 0}\n    - {port: 70000, hostPort: -1}\n    - {port: 80, protocol: sctp}\n    - {port: 81, hostPort: 8080}\n    - {port: 81, hostPort: 8080}\n",
        );
        assert_eq!(
            e,
            [
                "spec.ports[0].port: must be 1-65535",
                "spec.ports[1].port: must be 1-65535",
                "spec.ports[1].hostPort: must be 1-65535",
                "spec.ports[2].protocol: must be tcp or udp, not \"sctp\"",
                "spec.ports[4].port: 81/tcp is already published by spec.ports[3]",
                "spec.ports[4].hostPort: host port 8080/tcp is already used by spec.ports[3]",
            ]
        );
    }

    #[test]
    fn fixed_host_port_with_replicas() {
        let e = errors("  image: x\n  replicas: 3\n  ports: [{port: 80, hostPort: 8080}]\n");
        assert_eq!(e.len(), 1);
        assert!(e[0].starts_with(
            "spec.ports[0].hostPort: a fixed host port cannot be shared by 3 replicas"
        ));
        assert!(e[0].ends_with("omit hostPort to allocate one per replica"));
        assert!(check("  image: x\n  replicas: 3\n  ports: [{port: 80}]\n").is_ok());
    }

    #[test]
    fn replicas() {
        assert_eq!(check("  image: x\n").unwrap().replicas, 1);
        assert_eq!(check("  image: x\n  replicas: 0\n").unwrap().replicas, 0);
        assert_eq!(check("  image: x\n  replicas: 64\n").unwrap().replicas, 64);
        assert_eq!(
            errors("  image: x\n  replicas: 65\n"),
            ["spec.replicas: must be 0-64"]
        );
        assert_eq!(
            errors("  image: x\n  replicas: -1\n"),
            ["spec.replicas: must be 0-64"]
        );
    }

    #[test]
    fn resources() {
        let c = check("  image: x\n  resources: {cpus: 0.5, memory: 128Mi, pids: 128}\n").unwrap();
        let r = c.run.unwrap().resources;
        assert_eq!(
            r,
            Resources {
                nano_cpus: Some(500_000_000),
                memory: Some(128 << 20),
                pids: Some(128)
            }
        );
        let c = check("  image: x\n  resources: {memory: 10000000}\n").unwrap();
        assert_eq!(c.run.unwrap().resources.memory, Some(10_000_000));
        let e = errors("  image: x\n  resources: {cpus: 0, memory: 5Mi, pids: 0}\n");
        assert_eq!(
            e,
            [
                "spec.resources.cpus: must be more than 0 and at most 1024",
                "spec.resources.memory: must be at least 6Mi (Docker's minimum)",
                "spec.resources.pids: must be at least 1",
            ]
        );
        assert!(has(
            &errors("  image: x\n  resources: {cpus: 2000}\n"),
            "at most 1024"
        ));
        assert!(has(
            &errors("  image: x\n  resources: {cpus: .nan}\n"),
            "spec.resources.cpus"
        ));
    }

    #[test]
    fn memory_quantities() {
        assert_eq!(parse_memory("6291456"), Ok(6 << 20));
        assert_eq!(parse_memory("64Ki"), Ok(64 << 10));
        assert_eq!(parse_memory("128Mi"), Ok(128 << 20));
        assert_eq!(parse_memory("2Gi"), Ok(2 << 30));
        assert_eq!(parse_memory("1Ti"), Ok(1 << 40));
        assert!(parse_memory("128M")
            .unwrap_err()
            .contains("write \"128Mi\""));
        assert!(parse_memory("1g").unwrap_err().contains("write \"1Gi\""));
        assert!(parse_memory("1.5Gi").unwrap_err().contains("1536Mi"));
        assert!(parse_memory("lots")
            .unwrap_err()
            .contains("invalid quantity"));
        assert!(parse_memory("12Pi").unwrap_err().contains("unknown unit"));
        assert!(parse_memory("99999999999Ti")
            .unwrap_err()
            .contains("too large"));
    }

    #[test]
    fn healthchecks() {
        let c = check("  image: x\n  healthcheck: {tcp: {port: 1337}}\n").unwrap();
        let h = c.run.unwrap().healthcheck.unwrap();
        assert_eq!(
            h,
            Healthcheck {
                probe: Probe::Tcp { port: 1337 },
                interval: Duration::from_secs(10),
                timeout: Duration::from_secs(2),
                retries: 3,
                start_period: Duration::ZERO,
            }
        );
        let c = check("  image: x\n  healthcheck: {http: {port: 80}, interval: 1m30s, timeout: 500ms, retries: 5, startPeriod: 5s}\n").unwrap();
        let h = c.run.unwrap().healthcheck.unwrap();
        assert_eq!(
            h.probe,
            Probe::Http {
                port: 80,
                path: "/".into()
            }
        );
        assert_eq!(
            (h.interval, h.timeout, h.retries, h.start_period),
            (
                Duration::from_secs(90),
                Duration::from_millis(500),
                5,
                Duration::from_secs(5)
            )
        );
        let c = check("  image: x\n  healthcheck: {exec: {command: [pg_isready]}}\n").unwrap();
        assert_eq!(
            c.run.unwrap().healthcheck.unwrap().probe,
            Probe::Exec {
                command: vec!["pg_isready".into()]
            }
        );

        assert_eq!(
            errors("  image: x\n  healthcheck: {interval: 5s}\n"),
            ["spec.healthcheck: needs one probe: tcp, http or exec"]
        );
        assert_eq!(
            errors("  image: x\n  healthcheck: {tcp: {port: 1}, exec: {command: [a]}}\n"),
            ["spec.healthcheck: set only one probe: tcp, http or exec"]
        );
        assert_eq!(
            errors("  image: x\n  healthcheck: {http: {port: 0, path: health}, interval: 10, timeout: 0s, retries: 0, startPeriod: soon}\n"),
            [
                "spec.healthcheck.http.port: must be 1-65535",
                "spec.healthcheck.http.path: must start with '/'",
                "spec.healthcheck.interval: invalid duration \"10\": time unit needed, for example 10sec or 10ms (e.g. \"10s\", \"1m30s\")",
                "spec.healthcheck.timeout: must be more than 0",
                "spec.healthcheck.startPeriod: invalid duration \"soon\": expected number at 0 (e.g. \"10s\", \"1m30s\")",
                "spec.healthcheck.retries: must be 1-4294967295",
            ]
        );
        assert_eq!(
            errors("  image: x\n  healthcheck: {exec: {command: []}}\n"),
            ["spec.healthcheck.exec.command: must not be empty"]
        );
    }

    #[test]
    fn command_env_and_working_dir() {
        let c = check("  image: x\n  command: [nc, -l]\n  entrypoint: [/bin/sh, -c]\n  workingDir: /srv\n  env: {A: '1', PORT: 8080}\n").unwrap();
        let run = c.run.unwrap();
        assert_eq!(run.command, Some(vec!["nc".to_string(), "-l".to_string()]));
        assert_eq!(run.env.get("PORT").map(String::as_str), Some("8080"));
        assert_eq!(
            errors("  image: x\n  command: []\n  entrypoint: []\n  workingDir: srv\n  env: {'': a, 'A=B': c}\n"),
            [
                "spec.command: must not be an empty list (leave it out to use the image's)",
                "spec.entrypoint: must not be an empty list (leave it out to use the image's)",
                "spec.workingDir: must be an absolute path inside the container",
                "spec.env: variable names must not be empty",
                "spec.env.A=B: variable names must not contain '=' or NUL",
            ]
        );
    }

    #[test]
    fn placement_constraints_pass_through_and_malformed_ones_are_named() {
        let c = check("  image: x\n  placement: {constraints: ['node.labels.pool==pwn', 'node.role!=manager']}\n").unwrap();
        assert_eq!(
            c.placement,
            vec!["node.labels.pool==pwn", "node.role!=manager"]
        );
        let e = errors("  image: x\n  placement: {constraints: ['node.labels.pool=pwn']}\n");
        assert!(
            has(
                &e,
                "spec.placement.constraints[0]: \"node.labels.pool=pwn\" is not ATTRIBUTE==VALUE"
            ),
            "{e:?}"
        );
    }

    #[test]
    fn services_security_and_network() {
        let c = check("  image: x\n  network: {egress: true}\n  security:\n    readOnlyRootFilesystem: true\n    tmpfs: [/tmp]\n    user: '1000:1000'\n    capAdd: [cap_net_raw, NET_RAW, SYS_PTRACE]\n    runtime: runsc\n    ulimits: {nofile: 1024, nproc: 64}\n  services:\n    - name: db\n      image: y\n      env: {A: b}\n      healthcheck: {tcp: {port: 3306}}\n      security: {user: mysql}\n").unwrap();
        assert_eq!(c.network.egress, Some(true));
        let sec = &c.run.as_ref().unwrap().security;
        assert!(sec.read_only_root_filesystem);
        assert_eq!(sec.cap_add, ["NET_RAW", "SYS_PTRACE"]);
        assert_eq!(sec.ulimits.nofile, Some(1024));
        assert_eq!(sec.runtime.as_deref(), Some("runsc"));
        assert_eq!(c.services.len(), 1);
        assert_eq!(c.services[0].name, "db");
        assert_eq!(c.services[0].run.security.user.as_deref(), Some("mysql"));
        assert!(c.services[0].run.healthcheck.is_some());

        let e = errors("  image: x\n  security: {tmpfs: [tmp], capAdd: [BOGUS], user: 'a b', ulimits: {nproc: 0}, runtime: ''}\n  services:\n    - name: '12'\n      image: y\n    - image: z\n    - name: db\n      image: y\n      build: {}\n    - name: db\n      command: []\n");
        for needle in [
            "spec.security.tmpfs[0]: \"tmp\" must be an absolute path",
            "spec.security.capAdd[0]: \"BOGUS\" is not a Linux capability",
            "spec.security.user: \"a b\" must be uid",
            "spec.security.ulimits.nproc: must be 1-1048576",
            "spec.security.runtime: \"\" is not a runtime name",
            "spec.services[0].name: \"12\" is all digits",
            "spec.services[1].name: required",
            "spec.services[2].build: set only one of image and build",
            "spec.services[3].name: \"db\" is already the name of spec.services[2]",
            "spec.services[3]: needs image or build",
            "spec.services[3].command: must not be an empty list",
        ] {
            assert!(has(&e, needle), "missing {needle:?} in {e:#?}");
        }
        let e = errors("  attachments: [a.txt]\n  services: [{name: db, image: y}]\n  network: {egress: true}\n");
        assert!(has(&e, "spec.services: a static challenge"), "{e:?}");
        assert!(has(&e, "spec.network: a static challenge"), "{e:?}");
    }

    #[test]
    fn per_team_instances() {
        let c = check("  image: x\n  ports: [{port: 1337}]\n  instances:\n    perTeam: true\n    ttl: 5m\n    maxRenewals: 2\n    flag: {template: 'f{x_{random}}', env: FLAG}\n").unwrap();
        let i = c.instances.clone().unwrap();
        assert!(i.per_team && c.per_team());
        assert_eq!(i.ttl, Duration::from_secs(300));
        assert_eq!((i.max_renewals, i.max_per_team, i.max_total), (2, 1, 100));
        assert_eq!(i.flag.unwrap().env.as_deref(), Some("FLAG"));
        let e = errors("  image: x\n  flag: 'f{static}'\n  ports: [{port: 1, hostPort: 31000}]\n  security: {readOnlyRootFilesystem: true}\n  instances:\n    perTeam: true\n    ttl: soon\n    maxPerTeam: 0\n    flag: {template: 'no-random', file: flag.txt}\n");
        for needle in [
            "spec.instances.ttl: invalid duration",
            "spec.instances.maxPerTeam: must be 1-100",
            "spec.instances.perTeam: per-team instances cannot share a fixed hostPort",
            "spec.instances.flag.template: must contain {random} exactly once",
            "spec.instances.flag.file: must be an absolute file path",
            "spec.instances.flag.file: cannot be written with spec.security.readOnlyRootFilesystem",
            "spec.instances.flag.template: set either spec.flag or spec.instances.flag",
        ] {
            assert!(has(&e, needle), "missing {needle:?} in {e:#?}");
        }
        let e = errors("  image: x\n  instances: {flag: {template: 'a{random}', env: F}}\n");
        assert!(
            has(
                &e,
                "spec.instances.flag: a dynamic flag needs perTeam: true"
            ),
            "{e:?}"
        );
    }

    #[test]
    fn info_and_flag() {
        let c = check("  image: x\n  description: Talk\n  category: misc\n  points: 100\n  tags: [warmup]\n  hints: [echo]\n  flag: flag{x}\n").unwrap();
        assert_eq!(
            c.info,
            Info {
                description: "Talk".into(),
                category: "misc".into(),
                points: Some(100),
                tags: vec!["warmup".into()],
                hints: vec!["echo".into()]
            }
        );
        assert_eq!(c.flag.as_deref(), Some("flag{x}"));
        assert_eq!(
            errors("  image: x\n  points: -5\n  flag: ''\n"),
            [
                "spec.points: must be 0-4294967295",
                "spec.flag: must not be empty (leave it out for no flag)"
            ]
        );
    }

    #[test]
    fn build_paths_resolve_inside_the_root() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().canonicalize().unwrap();
        let dir = root.join("web");
        std::fs::create_dir_all(dir.join("src/docker")).unwrap();
        std::fs::create_dir_all(root.join("common")).unwrap();
        let ctx = Context {
            manifest_dir: &dir,
            root: &root,
        };
        let m = raw("  build: {}\n");
        let b = match validate(&m, &ctx).unwrap().run.unwrap().source {
            ImageSource::Build(b) => b,
            other => panic!("{other:?}"),
        };
        assert_eq!(b.context, dir);
        assert_eq!(b.dockerfile, "Dockerfile");
        let m =
            raw("  build: {context: ./src, dockerfile: docker/./Dockerfile.prod, args: {V: 1}}\n");
        let ImageSource::Build(b) = validate(&m, &ctx).unwrap().run.unwrap().source else {
            panic!()
        };
        assert_eq!(
            (b.context, b.dockerfile.as_str()),
            (dir.join("src"), "docker/Dockerfile.prod")
        );
        assert_eq!(b.args.get("V").map(String::as_str), Some("1"));
        // Outside the manifest's folder but inside the root is fine.
        let m = raw("  build: {context: ../common}\n");
        assert!(validate(&m, &ctx).is_ok());

        let m = raw("  build: {context: ../.., dockerfile: ../Dockerfile}\n");
        let e = validate(&m, &ctx).unwrap_err();
        assert_eq!(e.len(), 1);
        assert_eq!(
            (e[0].path.as_str(), e[0].message.as_str()),
            (
                "spec.build.context",
                "\"../..\" escapes the watched directory"
            )
        );
        let m = raw("  build: {context: src, dockerfile: ../Dockerfile}\n");
        let e = validate(&m, &ctx).unwrap_err();
        assert_eq!(
            (e[0].path.as_str(), e[0].message.as_str()),
            (
                "spec.build.dockerfile",
                "\"../Dockerfile\" escapes the build context"
            )
        );
        let m = raw("  build: {context: /srv}\n");
        assert_eq!(
            validate(&m, &ctx).unwrap_err()[0].message,
            "must be a relative path, not \"/srv\""
        );
    }

    #[cfg(unix)]
    #[test]
    fn symlinks_out_of_the_root_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let root = tmp.path().canonicalize().unwrap();
        std::os::unix::fs::symlink(outside.path(), root.join("escape")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", root.join("passwd")).unwrap();
        let ctx = Context {
            manifest_dir: &root,
            root: &root,
        };
        let m = raw("  build: {context: escape}\n");
        assert_eq!(
            validate(&m, &ctx).unwrap_err()[0].message,
            "\"escape\" leads (through a symlink) outside the watched directory"
        );
        let m = raw("  attachments: [passwd]\n");
        assert_eq!(
            validate(&m, &ctx).unwrap_err()[0].message,
            "\"passwd\" leads (through a symlink) outside the manifest's folder"
        );
    }

    #[test]
    fn nulls_in_string_maps_and_lists() {
        let doc: serde_yaml::Value =
            serde_yaml::from_str("metadata: {labels: {a: ~}}\nspec: {env: {A: ~, B: x}, tags: [a, ~], build: {args: {X: }}}\n").unwrap();
        let paths: Vec<String> = null_strings(&doc).into_iter().map(|e| e.path).collect();
        assert_eq!(
            paths,
            [
                "metadata.labels.a",
                "spec.env.A",
                "spec.build.args.X",
                "spec.tags[1]"
            ]
        );
    }

    #[test]
    fn normalize_is_lexical() {
        assert_eq!(normalize(Path::new("/a/./b/../c")), PathBuf::from("/a/c"));
        assert_eq!(normalize(Path::new("/a/../..")), PathBuf::from("/.."));
        assert_eq!(normalize(Path::new("a/../../b")), PathBuf::from("../b"));
    }
}
