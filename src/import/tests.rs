use std::path::Path;

use super::*;

const AUTHOR: &str =
    "[author]\nname = \"fristonio\"\nemail = \"a@example.org\"\nssh_key = \"ssh-rsa AAAA\"\n\n";

/// Converts and checks that the manifest validates and prints back to the same raw manifest.
fn check(toml: &str, folder: &Path) -> Imported {
    let imported = convert(toml, folder).unwrap();
    let yaml = render_manifest(&imported.manifest, &folder.join(BEAST_TOML)).unwrap();
    let parsed = manifest::parse_str(&yaml, "challenge.yaml", folder, folder);
    assert!(
        parsed.is_valid(),
        "{yaml}\n{:?}",
        parsed.errors().collect::<Vec<_>>()
    );
    let back: raw::Manifest = serde_yaml::from_str(&yaml).unwrap();
    assert_eq!(back, imported.manifest);
    imported
}

fn has_note(imported: &Imported, part: &str) -> bool {
    imported.notes.iter().any(|n| n.contains(part))
}

fn port(port: i64, host: i64) -> raw::Port {
    raw::Port {
        port,
        host_port: Some(host),
        protocol: None,
    }
}

#[test]
fn bare_challenge_gets_a_dockerfile_and_its_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        "{AUTHOR}[challenge.metadata]\nname = \"simple\"\nflag = \"BACKDOOR{{SAMPLE_FLAG}}\"\ntype = \"bare\"\n\
         points = 100\ndescription = \"pwn me\"\ntags = [\"pwn\", \"easy\"]\ndifficulty = \"easy\"\n\n\
         [[challenge.metadata.hints]]\ntext = \"hint one\"\npoints = 10\n\n\
         [[challenge.metadata.hints]]\ntext = \"hint two\"\n\n\
         [challenge.env]\napt_deps = [\"gcc\", \"socat\"]\nsetup_scripts = [\"setup.sh\"]\n\
         run_cmd = \"socat tcp-l:10005,fork,reuseaddr exec:./pwn\"\nports = [10005]\ndefault_port = 10005\n\n\
         [resource]\ncpu_shares = 1024\nmemory_limit = 536870912\npids_limit = 100\ncpuslimit = 0.25\n"
    );
    let imported = check(&toml, dir.path());
    let m = &imported.manifest;
    assert_eq!(m.metadata.name.as_deref(), Some("simple"));
    assert_eq!(m.metadata.labels["difficulty"], "easy");
    assert_eq!(m.metadata.labels["author"], "fristonio");
    let spec = &m.spec;
    assert_eq!(spec.flag.as_deref(), Some("BACKDOOR{SAMPLE_FLAG}"));
    assert_eq!(spec.points, Some(100));
    assert_eq!(spec.description.as_deref(), Some("pwn me"));
    assert_eq!(spec.tags, ["pwn", "easy"]);
    assert_eq!(spec.hints, ["hint one", "hint two"]);
    assert_eq!(spec.ports, [port(10005, 10005)]);
    assert_eq!(
        spec.build,
        Some(raw::Build {
            context: Some(".".into()),
            dockerfile: Some("Dockerfile".into()),
            args: Default::default(),
        })
    );
    assert_eq!(spec.image, None);
    let resources = spec.resources.as_ref().unwrap();
    assert_eq!(resources.memory, Some(raw::Quantity::Text("512Mi".into())));
    assert_eq!(resources.pids, Some(100));
    assert_eq!(resources.cpus, Some(0.25));
    assert_eq!(
        spec.healthcheck.as_ref().and_then(|h| h.tcp.as_ref()),
        Some(&raw::TcpProbe { port: 10005 })
    );
    assert!(has_note(&imported, "hints[0].points (10)"));
    assert!(has_note(&imported, "cpu_shares (1024)"));
    assert!(has_note(&imported, "author.ssh_key"));
    assert!(has_note(&imported, "base_image: not set"));
    assert!(!imported.notes.iter().any(|n| n.contains("SAMPLE_FLAG")));

    let dockerfile = imported.dockerfile.unwrap();
    assert!(dockerfile.starts_with(DOCKERFILE_HEADER), "{dockerfile}");
    for line in [
        "FROM debian:bookworm",
        "RUN apt-get update && apt-get install -y --no-install-recommends gcc socat && rm -rf /var/lib/apt/lists/*",
        "COPY . /challenge",
        "RUN chmod +x ./setup.sh && ./setup.sh",
        "RUN rm -f beast.toml challenge.yaml Dockerfile",
        "EXPOSE 10005",
        r#"CMD ["sh", "-c", "socat tcp-l:10005,fork,reuseaddr exec:./pwn"]"#,
    ] {
        assert!(dockerfile.lines().any(|l| l == line), "{line}\n{dockerfile}");
    }
}

#[test]
fn service_runs_under_socat_instead_of_xinetd() {
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        "{AUTHOR}[challenge.metadata]\nname = \"xinetd-service\"\nflag = \"CTF{{x}}\"\ntype = \"service\"\n\
         hints = [\"xinetd_hint_1\", \"xinetd_hint_2\"]\n\n\
         [challenge.env]\napt_deps = [\"gcc\"]\nsetup_scripts = [\"setup.sh\"]\nservice_path = \"pwn\"\n\
         ports = [10003]\nbase_image = \"ubuntu:22.04\"\nxinetd_conf = \"xinetd.conf\"\n"
    );
    let imported = check(&toml, dir.path());
    assert_eq!(
        imported.manifest.spec.hints,
        ["xinetd_hint_1", "xinetd_hint_2"]
    );
    assert_eq!(imported.manifest.spec.ports, [port(10003, 10003)]);
    assert_eq!(imported.manifest.spec.healthcheck, None);
    assert!(has_note(&imported, "xinetd_conf"));
    let dockerfile = imported.dockerfile.unwrap();
    for line in [
        "FROM ubuntu:22.04",
        "RUN apt-get update && apt-get install -y --no-install-recommends gcc socat && rm -rf /var/lib/apt/lists/*",
        "RUN chmod +x /challenge/pwn",
        r#"CMD ["socat", "TCP-LISTEN:10003,reuseaddr,fork", "EXEC:/challenge/pwn"]"#,
    ] {
        assert!(dockerfile.lines().any(|l| l == line), "{line}\n{dockerfile}");
    }
}

#[test]
fn web_php_with_a_sidecar_and_port_mappings() {
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        "{AUTHOR}[challenge.metadata]\nname = \"web-php-mysql\"\nflag = \"CTF{{w}}\"\ntype = \"web:php:7.1:cli\"\n\
         sidecar = \"mysql\"\n\n\
         [challenge.env]\napt_deps = [\"php*-mysql\"]\nports = [10004, 8080]\nport_mappings = [\"10001:80\"]\n\
         web_root = \"challenge\"\ndefault_port = 80\n\n[[challenge.env.var]]\nkey = \"SECRET_FILE\"\nvalue = \"secret.txt\"\n"
    );
    let imported = check(&toml, dir.path());
    let spec = &imported.manifest.spec;
    assert_eq!(
        spec.ports,
        [port(80, 10001), port(10004, 10004), port(8080, 8080)]
    );
    assert_eq!(spec.env["SECRET_FILE"], "/challenge/secret.txt");
    assert_eq!(spec.env["MYSQL_HOST"], "mysql");
    assert_eq!(imported.manifest.spec.services.len(), 1);
    assert!(has_note(&imported, "sidecar \"mysql\": now the service"));
    assert!(has_note(&imported, "FROM php:7.1-cli"));
    let dockerfile = imported.dockerfile.unwrap();
    for line in [
        "FROM php:7.1-cli",
        "RUN apt-get update && apt-get install -y --no-install-recommends 'php*-mysql' && rm -rf /var/lib/apt/lists/*",
        "WORKDIR /challenge/challenge",
        "EXPOSE 80 10004 8080",
        r#"CMD ["php", "-S", "0.0.0.0:80", "-t", "/challenge/challenge"]"#,
    ] {
        assert!(dockerfile.lines().any(|l| l == line), "{line}\n{dockerfile}");
    }
}

#[test]
fn web_python_flask_and_node() {
    let dir = tempfile::tempdir().unwrap();
    let flask =
        "[challenge.metadata]\nname = \"f\"\nflag = \"x\"\ntype = \"web:python:3.11:flask\"\n\
                 [challenge.env]\nports = [5000]\nweb_root = \"app\"\n";
    let dockerfile = check(flask, dir.path()).dockerfile.unwrap();
    assert!(dockerfile.contains("FROM python:3.11\n"), "{dockerfile}");
    assert!(dockerfile.contains("pip install --no-cache-dir -r requirements.txt"));
    assert!(dockerfile.contains(r#"CMD ["flask", "run", "--host=0.0.0.0", "--port=5000"]"#));

    let node = "[challenge.metadata]\nname = \"n\"\nflag = \"x\"\ntype = \"web:node:18\"\n\
                [challenge.env]\nports = [3000]\nweb_root = \"app\"\nrun_cmd = \"node server.js\"\n";
    let dockerfile = check(node, dir.path()).dockerfile.unwrap();
    assert!(dockerfile.contains("FROM node:18\n"), "{dockerfile}");
    assert!(dockerfile.contains("ENV PORT=3000\n"));
    assert!(dockerfile.contains(r#"CMD ["sh", "-c", "node server.js"]"#));

    let unknown = "[challenge.metadata]\nname = \"r\"\nflag = \"x\"\ntype = \"web:ruby:3\"\n\
                   [challenge.env]\nports = [3000]\nweb_root = \"app\"\n";
    let err = convert(unknown, dir.path()).unwrap_err();
    assert!(
        err.to_string().contains("set challenge.env.run_cmd"),
        "{err}"
    );
}

#[test]
fn static_challenge_becomes_attachments() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("static/sub")).unwrap();
    std::fs::write(dir.path().join("static/handout.zip"), "z").unwrap();
    std::fs::write(dir.path().join("static/sub/notes.txt"), "n").unwrap();
    std::fs::write(dir.path().join("static/.hidden"), "h").unwrap();
    let toml = format!(
        "{AUTHOR}[challenge.metadata]\nname = \"static-chall\"\nflag = \"F{{s}}\"\ntype = \"static\"\n\
         assets = [\"extra.pdf\", \"static/handout.zip\"]\n\n[challenge.env]\nstatic_dir = \"static\"\nports = [1]\n"
    );
    let imported = check(&toml, dir.path());
    let spec = &imported.manifest.spec;
    assert_eq!(
        spec.attachments,
        ["extra.pdf", "static/handout.zip", "static/sub/notes.txt"]
    );
    assert_eq!(spec.build, None);
    assert_eq!(spec.image, None);
    assert!(spec.ports.is_empty());
    assert_eq!(imported.dockerfile, None);
    assert!(has_note(&imported, "challenge.env.ports: ignored"));
    assert!(has_note(&imported, "\"extra.pdf\" is not a file"));
    assert!(!has_note(&imported, "\"static/handout.zip\" is not a file"));
}

#[test]
fn static_challenge_without_assets_hands_out_its_folder() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let toml = "[challenge.metadata]\nname = \"s\"\nflag = \"x\"\ntype = \"static\"\n";
    std::fs::write(root.join(BEAST_TOML), toml).unwrap();
    std::fs::create_dir_all(root.join("public/img")).unwrap();
    std::fs::create_dir_all(root.join(".git")).unwrap();
    for file in [
        "cipher.txt",
        "public/img/a.png",
        ".env",
        ".git/config",
        "public/.DS_Store",
    ] {
        std::fs::write(root.join(file), "x").unwrap();
    }
    #[cfg(unix)]
    std::os::unix::fs::symlink("/etc/passwd", root.join("passwd")).unwrap();
    // A manifest from an earlier import is not handed out either.
    import(root, false).unwrap();
    let report = import(root, false).unwrap();
    let imported = check(toml, root);
    assert_eq!(
        imported.manifest.spec.attachments,
        ["public/img/a.png", "cipher.txt"]
    );
    assert!(has_note(&imported, "every file of its folder is attached"));
    assert!(report.manifest_yaml.contains("- cipher.txt"));
    assert!(!report.manifest_yaml.contains("- beast.toml"));

    // Nothing at all to hand out: refused with the reason, nothing written.
    let empty = tempfile::tempdir().unwrap();
    std::fs::write(empty.path().join(BEAST_TOML), toml).unwrap();
    let err = import(empty.path(), false).unwrap_err();
    assert!(matches!(err, ImportError::Unsupported { .. }), "{err}");
    assert!(err.to_string().contains("no file to hand out"), "{err}");
    assert!(!empty.path().join(CHALLENGE_YAML).exists());
}

#[test]
fn the_public_folder_and_assets_in_it_are_attached() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("public")).unwrap();
    std::fs::create_dir_all(root.join("files")).unwrap();
    std::fs::write(root.join("public/libc.so.6"), "l").unwrap();
    std::fs::write(root.join("public/pwn"), "p").unwrap();
    std::fs::write(root.join("files/given.zip"), "g").unwrap();
    std::fs::write(root.join("source.c"), "s").unwrap();
    // `assets` are looked up in static_dir (default public/) first, then in the folder.
    let toml = format!(
        "{AUTHOR}[challenge.metadata]\nname = \"p\"\nflag = \"x\"\ntype = \"bare\"\n\
         assets = [\"pwn\", \"source.c\", \"../../etc/passwd\", \"/etc/shadow\"]\n\
         [challenge.env]\nports = [9000]\nrun_cmd = \"./pwn\"\n"
    );
    let imported = check(&toml, root);
    assert_eq!(
        imported.manifest.spec.attachments,
        ["public/pwn", "source.c", "public/libc.so.6"]
    );
    assert!(has_note(
        &imported,
        "\"../../etc/passwd\" is not a path inside"
    ));
    assert!(has_note(&imported, "\"/etc/shadow\" is not a path inside"));
    assert!(has_note(&imported, "under public/ are attached"));

    // An explicit static_dir replaces the default.
    let toml = toml.replace(
        "[challenge.env]\n",
        "[challenge.env]\nstatic_dir = \"./files/\"\n",
    );
    let imported = check(&toml, root);
    assert_eq!(
        imported.manifest.spec.attachments,
        ["pwn", "source.c", "files/given.zip"]
    );
    assert!(has_note(&imported, "\"pwn\" is not a file"));
    // A web application served from public/ is not handed out.
    let web = "[challenge.metadata]\nname = \"w\"\nflag = \"x\"\ntype = \"web:php:8.2\"\n\
               [challenge.env]\nports = [80]\nweb_root = \"./public/\"\n";
    let imported = check(web, root);
    assert!(imported.manifest.spec.attachments.is_empty());
    assert!(has_note(&imported, "public/ is the web_root"));
    // One outside the folder is left out, not an invalid manifest.
    let toml = toml.replace("./files/", "../elsewhere");
    let imported = check(&toml, root);
    assert!(has_note(
        &imported,
        "static_dir: \"../elsewhere\" is not a path inside"
    ));
}

#[test]
fn what_beast_v1_cannot_hold_is_left_out_with_a_note() {
    let dir = tempfile::tempdir().unwrap();
    let toml = "[challenge.metadata]\nname = \"!!!\"\nflag = \"x\"\ntype = \"bare\"\npoints = 99999999999\n\
                [[challenge.metadata.hints]]\npoints = 5\n\
                [challenge.env]\nrun_cmd = \"./run\"\nports = [0, 9000, 9000, 70000]\n\
                port_mappings = [\"80\", \"9000:81\", \"9001:9000\"]\ndefault_port = 7000\n\
                [[challenge.env.var]]\nkey = \"A=B\"\nvalue = \"x\"\n\
                [[challenge.env.var]]\nkey = \"\"\nvalue = \"y\"\n\
                [[challenge.env.var]]\nkey = \"OK\"\nvalue = \"z\"\n\
                [resource]\ncpuslimit = 1e9\npids_limit = -1\nmemory_limit = 0\n";
    let imported = check(toml, dir.path());
    let spec = &imported.manifest.spec;
    // The folder's name stands in for a name with no letter or digit.
    let folder = dir
        .path()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .to_lowercase();
    assert_eq!(
        imported.manifest.metadata.name.as_deref(),
        sanitize_name(&folder).as_deref()
    );
    assert_eq!(spec.points, None);
    assert_eq!(spec.hints, [""]);
    assert_eq!(
        spec.ports,
        [port(81, 9000), port(9000, 9001), port(7000, 7000)]
    );
    assert_eq!(spec.env.keys().collect::<Vec<_>>(), ["OK"]);
    assert_eq!(spec.resources, None);
    assert_eq!(
        spec.healthcheck.as_ref().and_then(|h| h.tcp.as_ref()),
        Some(&raw::TcpProbe { port: 7000 })
    );
    for part in [
        "points (99999999999): out of range",
        "\"80\" is not \"host:container\", left out",
        "ports 0: a port must be 1-65535",
        "ports 70000: a port must be 1-65535",
        "var \"A=B\": not a usable variable name",
        "cpuslimit (1000000000): more than beast/v1 accepts",
    ] {
        assert!(has_note(&imported, part), "{part}: {:?}", imported.notes);
    }
}

#[test]
fn ssh_publishes_its_first_port_to_22() {
    let dir = tempfile::tempdir().unwrap();
    let toml = "[challenge.metadata]\nname = \"s\"\nflag = \"x\"\ntype = \"ssh\"\n\
                [challenge.env]\ndocker_context = \"Dockerfile\"\nports = [2222, 2223]\ndefault_port = 2222\n";
    let imported = check(toml, dir.path());
    assert_eq!(
        imported.manifest.spec.ports,
        [port(22, 2222), port(2223, 2223)]
    );
    assert_eq!(
        imported
            .manifest
            .spec
            .healthcheck
            .as_ref()
            .and_then(|h| h.tcp.as_ref()),
        Some(&raw::TcpProbe { port: 22 })
    );
}

#[test]
fn the_schema_modeline_points_at_the_schema_found_above() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let chall = root.join("challenges/pwn1");
    std::fs::create_dir_all(&chall).unwrap();
    std::fs::create_dir_all(root.join("manifests")).unwrap();
    std::fs::write(chall.join(BEAST_TOML), BARE).unwrap();
    // No schema anywhere above: no modeline, and a note says how to get one.
    std::fs::create_dir(root.join(".git")).unwrap();
    let report = import(&chall, true).unwrap();
    assert!(!report.manifest_yaml.contains("yaml-language-server"));
    assert!(report.notes.iter().any(|n| n.contains("beast schema")));
    // A file of that name that is not beast's schema does not count.
    std::fs::write(root.join("manifests").join(SCHEMA_FILE), "{}").unwrap();
    assert_eq!(schema_path(&chall), None);

    let schema = serde_json::to_string_pretty(&manifest::json_schema()).unwrap();
    std::fs::write(root.join("manifests").join(SCHEMA_FILE), &schema).unwrap();
    let report = import(&chall, true).unwrap();
    assert!(
        report
            .manifest_yaml
            .lines()
            .any(|l| l == "# yaml-language-server: $schema=../../manifests/challenge.schema.json"),
        "{}",
        report.manifest_yaml
    );
    assert!(!report.manifest_yaml.contains(".invalid"));
    // A copy beside the challenge is nearer, and the walk stops at the git root.
    std::fs::write(chall.join(SCHEMA_FILE), &schema).unwrap();
    assert_eq!(
        schema_path(&chall).as_deref(),
        Some("challenge.schema.json")
    );
    std::fs::remove_file(chall.join(SCHEMA_FILE)).unwrap();
    std::fs::create_dir(chall.join(".git")).unwrap();
    assert_eq!(schema_path(&chall), None);
    // The schema beast ships in its own repository is found from its examples.
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/echo-tcp");
    assert_eq!(
        schema_path(&examples).as_deref(),
        Some("../../manifests/challenge.schema.json")
    );
}

#[test]
fn docker_type_uses_its_own_dockerfile() {
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        "{AUTHOR}[challenge.metadata]\nname = \"docker-type\"\nflag = \"F{{d}}\"\ntype = \"docker\"\n\n\
         [challenge.env]\ndocker_context = \"docker-file\"\nports = [10005]\n\n[resources]\nmemory_limit = 1000000\n"
    );
    let imported = check(&toml, dir.path());
    let spec = &imported.manifest.spec;
    assert_eq!(
        spec.build,
        Some(raw::Build {
            context: Some(".".into()),
            dockerfile: Some("docker-file".into()),
            args: Default::default(),
        })
    );
    assert_eq!(imported.dockerfile, None);
    let memory = spec.resources.as_ref().and_then(|r| r.memory.clone());
    assert_eq!(memory, Some(raw::Quantity::Text("6Mi".into())));
    assert!(has_note(&imported, "1000000 bytes rounded up to 6Mi"));

    // A docker_context that is a folder becomes the build context.
    std::fs::create_dir(dir.path().join("image")).unwrap();
    let toml = toml.replace("\"docker-file\"", "\"image/\"");
    let build = check(&toml, dir.path()).manifest.spec.build.unwrap();
    assert_eq!(build.context.as_deref(), Some("image"));
    assert_eq!(build.dockerfile.as_deref(), Some("Dockerfile"));
}

#[test]
fn names_are_made_dns_labels_and_the_rename_reported() {
    let dir = tempfile::tempdir().unwrap();
    let toml = "[challenge.metadata]\nname = \"  My Cool_Challenge!! v2 \"\nflag = \"x\"\ntype = \"bare\"\n\
                [challenge.env]\nports = [9000]\nrun_cmd = \"./run\"\n";
    let imported = check(toml, dir.path());
    assert_eq!(
        imported.manifest.metadata.name.as_deref(),
        Some("my-cool-challenge-v2")
    );
    assert!(has_note(&imported, "renamed to \"my-cool-challenge-v2\""));

    assert_eq!(sanitize_name("simple").as_deref(), Some("simple"));
    assert_eq!(sanitize_name("--A--b--").as_deref(), Some("a-b"));
    assert_eq!(sanitize_name("!!!"), None);
    let long = sanitize_name(&format!("{}-x", "a".repeat(62))).unwrap();
    assert_eq!(long, "a".repeat(62));
    assert!(crate::manifest::validate::is_dns_label(&long));
}

#[test]
fn unknown_keys_sidecars_and_keys_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        "{AUTHOR}[[maintainer]]\nname = \"m\"\nssh_key = \"ssh-ed25519 AAAA\"\n\n[challenge.metadata]\nname = \"n\"\nflag = \"x\"\n\
         type = \"bare\"\nsidecar = \"mongo\"\nmaxPoints = 500\ndynamicFlag = true\n\n\
         [challenge.env]\nports = [9000]\nrun_cmd = \"./run\"\nfrobnicate = true\n\n[resource]\nswap = 1\n\n[extra]\na = 1\n"
    );
    let imported = check(&toml, dir.path());
    for part in [
        "extra: unknown key",
        "challenge.metadata.maxPoints: not carried over (no beast/v1 equivalent)",
        "challenge.env.frobnicate: unknown key",
        "resource.swap: unknown key",
        "sidecar \"mongo\": now the service \"mongo\"",
        "maintainer.ssh_key",
        "author.ssh_key",
        "dynamicFlag",
    ] {
        assert!(has_note(&imported, part), "{part}: {:?}", imported.notes);
    }
}

#[test]
fn unsupported_files_are_refused_with_the_file_named() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("[challenge.metadata]\nname = \"c\"\ntype = \"docker\"\n[challenge.env]\nports = [1]\ndocker_compose = \"docker-compose.yml\"\n", "compose project"),
        ("[challenge.metadata]\nname = \"c\"\ntype = \"docker\"\n[challenge.env]\nports = [1]\n", "needs challenge.env.docker_context"),
        ("[challenge.metadata]\nname = \"c\"\ntype = \"bare\"\n[challenge.env]\nports = [1]\n", "needs challenge.env.run_cmd"),
        ("[challenge.metadata]\nname = \"c\"\ntype = \"service\"\n[challenge.env]\nports = [1]\n", "needs challenge.env.service_path"),
        ("[challenge.metadata]\nname = \"c\"\ntype = \"quantum\"\n", "\"quantum\" is not one"),
        ("[challenge.metadata]\ntype = \"static\"\n", "name is missing"),
        ("[challenge\n", "not valid TOML"),
    ];
    for (toml, part) in cases {
        let err = convert(toml, dir.path()).unwrap_err().to_string();
        assert!(err.contains(part), "{part}: {err}");
        assert!(err.contains("beast.toml"), "{err}");
    }
}

#[test]
fn memory_is_rounded_up_to_whole_mi() {
    assert_eq!(memory_quantity(1), "6Mi");
    assert_eq!(memory_quantity(6 * MI), "6Mi");
    assert_eq!(memory_quantity(7 * MI + 1), "8Mi");
    assert_eq!(memory_quantity(536_870_912), "512Mi");
}

fn with_sidecar(sidecar: &str) -> String {
    format!(
        "[challenge.metadata]\nname = \"web-db\"\nflag = \"x\"\ntype = \"bare\"\nsidecar = \"{sidecar}\"\n\
         [challenge.env]\nports = [9000]\nrun_cmd = \"./run\"\n"
    )
}

fn service(imported: &Imported) -> &raw::Service {
    let services = &imported.manifest.spec.services;
    assert_eq!(services.len(), 1, "{services:?}");
    &services[0]
}

fn tcp_port(service: &raw::Service) -> Option<i64> {
    service.healthcheck.as_ref()?.tcp.as_ref().map(|t| t.port)
}

#[test]
fn a_mysql_sidecar_becomes_a_service_the_challenge_reaches_by_its_old_name() {
    let dir = tempfile::tempdir().unwrap();
    let imported = check(&with_sidecar("mysql"), dir.path());
    let service = service(&imported);
    assert_eq!(service.name.as_deref(), Some("mysql"));
    assert_eq!(service.image.as_deref(), Some("mysql:8.0"));
    assert_eq!(tcp_port(service), Some(3306));
    assert_eq!(
        service.resources.as_ref().and_then(|r| r.memory.clone()),
        Some(raw::Quantity::Text("512Mi".to_string()))
    );
    let env = &imported.manifest.spec.env;
    // The original's variable names, lower case after the prefix; its host name.
    assert_eq!(env["MYSQL_HOST"], "mysql");
    assert_eq!(env["MYSQL_PORT"], "3306");
    assert_eq!(env["MYSQL_database"], "web_db");
    assert_eq!(env["MYSQL_username"], "web_db");
    assert_eq!(service.env["MYSQL_DATABASE"], "web_db");
    assert_eq!(service.env["MYSQL_USER"], "web_db");
    let password = &service.env["MYSQL_PASSWORD"];
    assert_eq!(&env["MYSQL_password"], password);
    assert_eq!(password.len(), 24);
    assert!(password.chars().all(|c| c.is_ascii_alphanumeric()));
    assert_ne!(&service.env["MYSQL_ROOT_PASSWORD"], password);
    assert!(has_note(&imported, "mysql:8.0 must exist on the engine"));
    // A fresh password at each import.
    let again = convert(&with_sidecar("mysql"), dir.path()).unwrap();
    assert_ne!(&again.manifest.spec.env["MYSQL_password"], password);
}

#[test]
fn a_mongo_sidecar_becomes_a_service_with_its_root_user_shared() {
    let dir = tempfile::tempdir().unwrap();
    let imported = check(&with_sidecar("mongo"), dir.path());
    let service = service(&imported);
    assert_eq!(service.name.as_deref(), Some("mongo"));
    assert_eq!(service.image.as_deref(), Some("mongo:4.4"));
    assert_eq!(tcp_port(service), Some(27017));
    let env = &imported.manifest.spec.env;
    assert_eq!(env["MONGO_HOST"], "mongo");
    assert_eq!(env["MONGO_PORT"], "27017");
    assert_eq!(
        env["MONGO_username"],
        service.env["MONGO_INITDB_ROOT_USERNAME"]
    );
    assert_eq!(
        env["MONGO_password"],
        service.env["MONGO_INITDB_ROOT_PASSWORD"]
    );
    assert_eq!(service.env["MONGO_INITDB_DATABASE"], "web_db");
    assert!(has_note(&imported, "authSource=admin"));
    assert!(has_note(&imported, "mongo:4.4 must exist on the engine"));
}

#[test]
fn a_sidecar_the_original_did_not_have_is_noted_and_left_out() {
    let dir = tempfile::tempdir().unwrap();
    let imported = check(&with_sidecar("redis"), dir.path());
    assert!(imported.manifest.spec.services.is_empty());
    assert!(imported.manifest.spec.env.is_empty());
    assert!(has_note(
        &imported,
        "sidecar \"redis\": not one the original had"
    ));
}

#[test]
fn a_variable_the_challenge_sets_wins_over_the_sidecars() {
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        "{}[[challenge.env.var]]\nkey = \"MYSQL_HOST\"\nvalue = \"db.conf\"\n",
        with_sidecar("mysql")
    );
    let imported = check(&toml, dir.path());
    let env = &imported.manifest.spec.env;
    assert_eq!(env["MYSQL_HOST"], "/challenge/db.conf");
    assert!(env.contains_key("MYSQL_password"));
    assert!(has_note(
        &imported,
        "challenge.env.var MYSQL_HOST: set by the challenge"
    ));
}

#[test]
fn a_static_challenge_ignores_its_sidecar() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.txt"), "x").unwrap();
    let toml = "[challenge.metadata]\nname = \"s\"\ntype = \"static\"\nsidecar = \"mysql\"\nassets = [\"a.txt\"]\n";
    let imported = check(toml, dir.path());
    assert!(imported.manifest.spec.services.is_empty());
    assert!(has_note(
        &imported,
        "sidecar \"mysql\": ignored, a static challenge"
    ));
}

#[test]
fn a_challenge_with_a_sidecar_is_written_and_validates() {
    for kind in ["mysql", "mongo"] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(BEAST_TOML), with_sidecar(kind)).unwrap();
        let report = import(dir.path(), false).unwrap();
        let on_disk = manifest::load_file(
            &dir.path().join(CHALLENGE_YAML),
            dir.path(),
            "challenge.yaml",
        )
        .unwrap();
        assert!(on_disk.is_valid(), "{}", report.manifest_yaml);
    }
}

const BARE: &str = "[challenge.metadata]\nname = \"bare\"\nflag = \"x\"\ntype = \"bare\"\n\
                    [challenge.env]\nports = [9000]\nrun_cmd = \"./run\"\n";

#[test]
fn dry_run_writes_nothing_and_a_real_run_writes_both_files() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(BEAST_TOML), BARE).unwrap();
    let report = import(dir.path(), true).unwrap();
    assert!(report.written.is_empty());
    assert!(!dir.path().join(CHALLENGE_YAML).exists());
    assert!(!dir.path().join(DOCKERFILE).exists());
    assert!(report.manifest_yaml.starts_with(YAML_HEADER));
    assert!(report.dockerfile.is_some());

    let file = dir.path().join(BEAST_TOML);
    let report = import(&file, false).unwrap();
    assert_eq!(report.written.len(), 2);
    let yaml = std::fs::read_to_string(dir.path().join(CHALLENGE_YAML)).unwrap();
    assert_eq!(yaml, report.manifest_yaml);
    let on_disk = manifest::load_file(
        &dir.path().join(CHALLENGE_YAML),
        dir.path(),
        "challenge.yaml",
    )
    .unwrap();
    assert!(on_disk.is_valid());
    // Our own files may be replaced by a later import.
    import(dir.path(), false).unwrap();
}

#[test]
fn refuses_to_overwrite_hand_written_files() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(BEAST_TOML), BARE).unwrap();
    std::fs::write(dir.path().join(CHALLENGE_YAML), "apiVersion: beast/v1\n").unwrap();
    let err = import(dir.path(), false).unwrap_err();
    assert!(matches!(err, ImportError::WouldOverwrite { .. }), "{err}");
    assert!(err.to_string().contains("challenge.yaml"), "{err}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join(CHALLENGE_YAML)).unwrap(),
        "apiVersion: beast/v1\n"
    );
    // Dry runs refuse too, so that the real run's failure is no surprise.
    assert!(import(dir.path(), true).is_err());

    std::fs::remove_file(dir.path().join(CHALLENGE_YAML)).unwrap();
    std::fs::write(dir.path().join(DOCKERFILE), "FROM scratch\n").unwrap();
    let err = import(dir.path(), false).unwrap_err();
    assert!(err.to_string().contains("Dockerfile"), "{err}");
    assert!(!dir.path().join(CHALLENGE_YAML).exists());
}

#[test]
fn a_missing_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let err = import(dir.path(), true).unwrap_err();
    assert!(matches!(err, ImportError::Read { .. }));
    assert!(err.to_string().contains("beast.toml"), "{err}");
}

mod properties {
    //! Whatever `beast.toml` comes in, the importer either refuses it with a reason or produces a
    //! manifest that validates: it never writes an invalid one.

    use proptest::prelude::*;
    use toml::{Table, Value};

    use super::*;

    fn pick(items: &[&'static str]) -> impl Strategy<Value = Option<Value>> {
        prop::option::of(
            prop::sample::select(items.to_vec()).prop_map(|s| Value::String(s.to_string())),
        )
    }

    fn int(values: &[i64]) -> impl Strategy<Value = Option<Value>> {
        prop::option::of(prop_oneof![
            prop::sample::select(values.to_vec()),
            any::<i64>()
        ])
        .prop_map(|v| v.map(Value::Integer))
    }

    fn list(items: &[&'static str]) -> impl Strategy<Value = Value> {
        prop::collection::vec(prop::sample::select(items.to_vec()), 0..4)
            .prop_map(|v| Value::Array(v.into_iter().map(|s| Value::String(s.into())).collect()))
    }

    fn ports() -> impl Strategy<Value = Value> {
        prop::collection::vec(
            prop_oneof![
                prop::sample::select(vec![0i64, 22, 80, 1337, 65535, 65536, -1]),
                any::<i64>()
            ],
            0..4,
        )
        .prop_map(|v| Value::Array(v.into_iter().map(Value::Integer).collect()))
    }

    fn hints() -> impl Strategy<Value = Value> {
        let hint = prop_oneof![
            "[a-z ]{0,8}".prop_map(Value::String),
            (
                prop::option::of("[a-z ]{0,8}"),
                prop::option::of(any::<i64>())
            )
                .prop_map(|(text, points)| {
                    let mut t = Table::new();
                    if let Some(text) = text {
                        t.insert("text".into(), Value::String(text));
                    }
                    if let Some(points) = points {
                        t.insert("points".into(), Value::Integer(points));
                    }
                    Value::Table(t)
                }),
        ];
        prop::collection::vec(hint, 0..3).prop_map(Value::Array)
    }

    fn vars() -> impl Strategy<Value = Value> {
        prop::collection::vec(
            (
                prop::sample::select(vec!["KEY", "", "A=B", "X Y", "PATH"]),
                prop::sample::select(vec!["a.txt", "", "../x", "/abs"]),
            ),
            0..3,
        )
        .prop_map(|v| {
            Value::Array(
                v.into_iter()
                    .map(|(k, val)| {
                        let mut t = Table::new();
                        t.insert("key".into(), Value::String(k.into()));
                        t.insert("value".into(), Value::String(val.into()));
                        Value::Table(t)
                    })
                    .collect(),
            )
        })
    }

    fn set(table: &mut Table, key: &str, value: Option<Value>) {
        if let Some(value) = value {
            table.insert(key.to_string(), value);
        }
    }

    fn beast_toml() -> impl Strategy<Value = String> {
        let metadata = (
            pick(&[
                "simple",
                "My Chall!",
                "!!!",
                "",
                "a-very-long-name-that-goes-on-and-on-and-on-past-sixty-three-chars",
            ]),
            pick(&["FLAG{x}", ""]),
            pick(&[
                "static",
                "bare",
                "service",
                "web:php:7.1:cli",
                "web:python:3.11:flask",
                "web:node:18",
                "web:ruby:3",
                "docker",
                "ssh",
                "quantum",
                "",
            ]),
            int(&[0, 100, -5, 1 << 40]),
            hints(),
            list(&[
                "a.txt",
                "b.bin",
                "public/c.txt",
                "../x",
                "/etc/passwd",
                "",
                "./a.txt",
                "image",
            ]),
            list(&["pwn", "", "web"]),
            pick(&["mysql", "mongo", "redis", ""]),
        );
        let env = (
            ports(),
            list(&[
                "80:80", "10001:80", "80", "a:b", "0:22", "99999:1", "2222:22",
            ]),
            int(&[0, 80, 22, 70000]),
            (
                pick(&["./run", ""]),
                pick(&["entry.sh", ""]),
                pick(&["pwn", ""]),
            ),
            pick(&["challenge", "public", "", "../x", "/srv"]),
            pick(&[
                "Dockerfile",
                "docker-file",
                "image/",
                "image",
                "../Dockerfile",
                "/abs/Dockerfile",
                "",
            ]),
            pick(&["public", "static", "../out", "/abs", "", "b.bin"]),
            (vars(), pick(&["tcp", "udp"]), pick(&["ubuntu:22.04", ""])),
        );
        let resource = (
            int(&[0, 1, 6 << 20, 1 << 30]),
            int(&[0, 1, 100]),
            prop::option::of(prop_oneof![
                prop::sample::select(vec![0.0f64, 0.25, 1024.0, 1025.0, -1.0]),
                any::<f64>()
            ]),
            int(&[0, 1024]),
        );
        (metadata, env, prop::option::of(resource)).prop_map(|(m, e, r)| {
            let mut meta = Table::new();
            set(&mut meta, "name", m.0);
            set(&mut meta, "flag", m.1);
            set(&mut meta, "type", m.2);
            set(&mut meta, "points", m.3);
            meta.insert("hints".into(), m.4);
            meta.insert("assets".into(), m.5);
            meta.insert("tags".into(), m.6);
            set(&mut meta, "sidecar", m.7);
            let mut env = Table::new();
            env.insert("ports".into(), e.0);
            env.insert("port_mappings".into(), e.1);
            set(&mut env, "default_port", e.2);
            set(&mut env, "run_cmd", e.3 .0);
            set(&mut env, "entrypoint", e.3 .1);
            set(&mut env, "service_path", e.3 .2);
            set(&mut env, "web_root", e.4);
            set(&mut env, "docker_context", e.5);
            set(&mut env, "static_dir", e.6);
            env.insert("var".into(), e.7 .0);
            set(&mut env, "traffic", e.7 .1);
            set(&mut env, "base_image", e.7 .2);
            let mut challenge = Table::new();
            challenge.insert("metadata".into(), Value::Table(meta));
            challenge.insert("env".into(), Value::Table(env));
            let mut root = Table::new();
            root.insert("challenge".into(), Value::Table(challenge));
            if let Some((memory, pids, cpus, shares)) = r {
                let mut res = Table::new();
                set(&mut res, "memory_limit", memory);
                set(&mut res, "pids_limit", pids);
                set(&mut res, "cpuslimit", cpus.map(Value::Float));
                set(&mut res, "cpu_shares", shares);
                root.insert("resource".into(), Value::Table(res));
            }
            toml::to_string(&root).unwrap_or_default()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig {
        cases: 256,
        // Failures are kept as plain tests below, not in a proptest-regressions/ folder.
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

        #[test]
        fn an_import_is_refused_or_valid(toml in beast_toml()) {
            let dir = tempfile::tempdir().unwrap();
            let root = dir.path();
            std::fs::create_dir_all(root.join("public")).unwrap();
            std::fs::create_dir_all(root.join("image")).unwrap();
            std::fs::create_dir_all(root.join("static")).unwrap();
            for file in ["a.txt", "b.bin", "public/c.txt", "static/d", "image/Dockerfile", "Dockerfile"] {
                std::fs::write(root.join(file), "x").unwrap();
            }
            std::fs::write(root.join(BEAST_TOML), &toml).unwrap();
            match import(root, true) {
                Ok(report) => {
                    let parsed = manifest::parse_str(&report.manifest_yaml, "challenge.yaml", root, root);
                    prop_assert!(parsed.is_valid(), "{}\n{}", toml, report.manifest_yaml);
                }
                Err(ImportError::Invalid { errors, .. }) => {
                    prop_assert!(false, "an invalid manifest for\n{}\n{}", toml, errors);
                }
                Err(ImportError::Unsupported { .. } | ImportError::Toml { .. }
                    | ImportError::WouldOverwrite { .. }) => {}
                Err(other) => prop_assert!(false, "{}", other),
            }
        }
    }
}
