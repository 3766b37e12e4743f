//! The Dockerfile `beast import` writes for the types the original built from fields (bare,
//! service, web:...). Pure text generation: no file system, no engine.
//!
//! The challenge folder is copied to `/challenge`, the path the original used, so that setup
//! scripts, `run_cmd`s and `[[challenge.env.var]]` paths keep working. The import's own files
//! (`beast.toml` holds the flag) are removed from the final file system.

use std::fmt::Write as _;

/// Where the challenge folder lives inside the image (the original's path).
pub const CHALLENGE_DIR: &str = "/challenge";
/// `FROM` when `base_image` is not set and the type implies none.
pub const DEFAULT_BASE_IMAGE: &str = "debian:bookworm";

/// Everything a generated Dockerfile is made of.
#[derive(Debug, Clone, PartialEq)]
pub struct Recipe {
    /// `base_image`; `None` picks the type's image or `DEFAULT_BASE_IMAGE`.
    pub base_image: Option<String>,
    pub apt_deps: Vec<String>,
    /// Paths relative to the challenge folder, run in order at build time.
    pub setup_scripts: Vec<String>,
    /// Container ports, for `EXPOSE`.
    pub ports: Vec<i64>,
    /// Run with `sh -c` in the challenge folder; wins over the type's own command.
    pub run_cmd: Option<String>,
    /// A file in the challenge folder, made executable and used as `ENTRYPOINT`.
    pub entrypoint: Option<String>,
    pub run: Run,
}

/// How the type starts the challenge when neither `run_cmd` nor `entrypoint` is set.
#[derive(Debug, Clone, PartialEq)]
pub enum Run {
    /// Only `run_cmd` / `entrypoint`.
    Bare,
    /// An executable served on a TCP port by socat, one process per connection.
    Service {
        path: String,
        port: i64,
    },
    Web(Web),
}

/// A `web:<language>:<version>:<framework>` challenge.
#[derive(Debug, Clone, PartialEq)]
pub struct Web {
    pub language: String,
    pub version: Option<String>,
    pub framework: Option<String>,
    /// `web_root`, relative to the challenge folder; `None` is the folder itself.
    pub root: Option<String>,
    pub port: i64,
}

impl Web {
    /// The official image for the language, when it is one this importer knows.
    fn image(&self) -> Option<String> {
        let version = self.version.as_deref();
        match self.language.as_str() {
            "php" => Some(format!("php:{}-cli", version.unwrap_or("8.3"))),
            "node" | "nodejs" => Some(format!("node:{}", version.unwrap_or("20"))),
            "python" => Some(format!("python:{}", version.unwrap_or("3.12"))),
            _ => None,
        }
    }

    fn dir(&self) -> String {
        match &self.root {
            Some(root) => format!("{CHALLENGE_DIR}/{root}"),
            None => CHALLENGE_DIR.to_string(),
        }
    }

    /// Installs the application's dependencies from its web root.
    fn install(&self) -> Option<&'static str> {
        match self.language.as_str() {
            "node" | "nodejs" => Some("if [ -f package.json ]; then npm install --omit=dev; fi"),
            "python" => Some(
                "if [ -f requirements.txt ]; then pip install --no-cache-dir -r requirements.txt; fi",
            ),
            _ => None,
        }
    }

    fn command(&self) -> Option<Vec<String>> {
        let port = self.port;
        let argv: Vec<String> = match (self.language.as_str(), self.framework.as_deref()) {
            ("php", _) => vec![
                "php".into(),
                "-S".into(),
                format!("0.0.0.0:{port}"),
                "-t".into(),
                self.dir(),
            ],
            ("node" | "nodejs", _) => vec!["npm".into(), "start".into()],
            ("python", Some("flask")) => vec![
                "flask".into(),
                "run".into(),
                "--host=0.0.0.0".into(),
                format!("--port={port}"),
            ],
            ("python", Some("django")) => vec![
                "python".into(),
                "manage.py".into(),
                "runserver".into(),
                format!("0.0.0.0:{port}"),
            ],
            _ => return None,
        };
        Some(argv)
    }

    /// Whether the type alone says how to start the application.
    pub fn has_default_command(&self) -> bool {
        self.command().is_some()
    }

    /// How the type was interpreted, for the user to check.
    pub fn note(&self) -> Option<String> {
        let image = self.image()?;
        let how = match (self.language.as_str(), self.framework.as_deref()) {
            ("php", Some(f)) if f != "cli" => {
                format!("PHP's built-in server (framework \"{f}\" not reproduced)")
            }
            ("php", _) => "PHP's built-in server".to_string(),
            ("node" | "nodejs", _) => "`npm start` with PORT set".to_string(),
            ("python", Some(f @ ("flask" | "django"))) => format!("{f}'s development server"),
            _ => "run_cmd".to_string(),
        };
        Some(format!(
            "type web:{}: Dockerfile built FROM {image}, served by {how} on port {}; check it before going live",
            self.language, self.port
        ))
    }
}

impl Recipe {
    fn base(&self) -> String {
        if let Some(image) = &self.base_image {
            return image.clone();
        }
        match &self.run {
            Run::Web(web) => web.image(),
            _ => None,
        }
        .unwrap_or_else(|| DEFAULT_BASE_IMAGE.to_string())
    }

    fn apt_deps(&self) -> Vec<String> {
        let mut deps = self.apt_deps.clone();
        let needs_socat = matches!(self.run, Run::Service { .. })
            && self.run_cmd.is_none()
            && self.entrypoint.is_none();
        if needs_socat && !deps.iter().any(|d| d == "socat") {
            deps.push("socat".to_string());
        }
        deps
    }

    /// The Dockerfile, starting with `header` (which marks it as replaceable by a later import).
    pub fn render(&self, header: &str) -> String {
        let mut out = String::new();
        let mut line = |text: &str| {
            out.push_str(text);
            out.push('\n');
        };
        line(header);
        line(
            "# Remove the line above before editing by hand, or a later import replaces this file.",
        );
        line(&format!("FROM {}", self.base()));
        let deps = self.apt_deps();
        if !deps.is_empty() {
            line(&format!(
                "RUN apt-get update && apt-get install -y --no-install-recommends {} && rm -rf /var/lib/apt/lists/*",
                deps.iter().map(|d| sh_quote(d)).collect::<Vec<_>>().join(" ")
            ));
        }
        line(&format!("COPY . {CHALLENGE_DIR}"));
        line(&format!("WORKDIR {CHALLENGE_DIR}"));
        for script in &self.setup_scripts {
            let script = sh_quote(&format!("./{}", script.trim_start_matches("./")));
            line(&format!("RUN chmod +x {script} && {script}"));
        }
        line("# beast.toml holds the flag: keep it (and the import's files) out of the container.");
        line("RUN rm -f beast.toml challenge.yaml Dockerfile");
        for text in self.start() {
            line(&text);
        }
        out
    }

    /// Everything after the challenge is in place: `EXPOSE`, working dir, command.
    fn start(&self) -> Vec<String> {
        let mut lines = Vec::new();
        if let Run::Web(web) = &self.run {
            if web.root.is_some() {
                lines.push(format!("WORKDIR {}", web.dir()));
            }
            if let Some(install) = web.install() {
                lines.push(format!("RUN {install}"));
            }
            if matches!(web.language.as_str(), "node" | "nodejs") {
                lines.push(format!("ENV PORT={}", web.port));
            }
        }
        if !self.ports.is_empty() {
            let ports: Vec<String> = self.ports.iter().map(i64::to_string).collect();
            lines.push(format!("EXPOSE {}", ports.join(" ")));
        }
        if let Some(entrypoint) = &self.entrypoint {
            let path = format!("{CHALLENGE_DIR}/{}", entrypoint.trim_start_matches("./"));
            lines.push(format!("RUN chmod +x {}", sh_quote(&path)));
            lines.push(format!("ENTRYPOINT {}", exec_form(&[path])));
        } else if let Some(cmd) = &self.run_cmd {
            lines.push(format!(
                "CMD {}",
                exec_form(&["sh".into(), "-c".into(), cmd.clone()])
            ));
        } else if let Some(argv) = self.type_command() {
            lines.extend(argv);
        }
        lines
    }

    /// The type's own way to start, as Dockerfile lines.
    fn type_command(&self) -> Option<Vec<String>> {
        match &self.run {
            Run::Bare => None,
            Run::Service { path, port } => {
                let exe = format!("{CHALLENGE_DIR}/{path}");
                Some(vec![
                    format!("RUN chmod +x {}", sh_quote(&exe)),
                    format!(
                        "CMD {}",
                        exec_form(&[
                            "socat".into(),
                            format!("TCP-LISTEN:{port},reuseaddr,fork"),
                            format!("EXEC:{exe}"),
                        ])
                    ),
                ])
            }
            Run::Web(web) => web
                .command()
                .map(|argv| vec![format!("CMD {}", exec_form(&argv))]),
        }
    }
}

/// A JSON array, the exec form of `CMD` and `ENTRYPOINT`.
fn exec_form(argv: &[String]) -> String {
    let mut out = String::from("[");
    for (i, arg) in argv.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push('"');
        for c in arg.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\t' => out.push_str("\\t"),
                c if c.is_control() => {
                    let _ = write!(out, "\\u{:04x}", c as u32);
                }
                c => out.push(c),
            }
        }
        out.push('"');
    }
    out.push(']');
    out
}

/// Quotes `s` for `sh` when it holds anything but safe characters.
fn sh_quote(s: &str) -> String {
    let safe = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=+@%".contains(c));
    if safe {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_form_escapes_json() {
        assert_eq!(
            exec_form(&["sh".into(), "-c".into(), "echo \"hi\" \\ x".into()]),
            r#"["sh", "-c", "echo \"hi\" \\ x"]"#
        );
    }

    #[test]
    fn sh_quote_leaves_plain_words_alone() {
        assert_eq!(sh_quote("./setup.sh"), "./setup.sh");
        assert_eq!(sh_quote("php*-mysql"), "'php*-mysql'");
        assert_eq!(sh_quote("a b"), "'a b'");
        assert_eq!(sh_quote("it's"), "'it'\\''s'");
    }
}
