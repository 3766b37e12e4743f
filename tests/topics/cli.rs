//! The command line without an operator: validate, plan, token, and the refusals of `run`.

use std::process::Command;

use crate::common::*;

fn beast(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_beast"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn validate_accepts_the_examples() {
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/examples");
    let (code, out, err) = beast(&["validate", examples]);
    assert_eq!(code, 0, "{out}{err}");
}

#[test]
fn validate_reports_file_line_column_and_path() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.yaml");
    std::fs::write(
        &file,
        "apiVersion: beast/v1\nkind: Challenge\nmetadata:\n  name: bad\nspec:\n  image: x\n  ports:\n    - port: 70000\n",
    )
    .unwrap();
    let (code, out, _) = beast(&["validate", file.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(
        out.contains("bad.yaml:8:7: spec.ports[0].port: must be 1-65535"),
        "{out}"
    );

    std::fs::write(&file, "apiVersion: beast/v1\nkind: Challenge\nmetadata: {name: ok}\nspec: {image: x, portz: []}\n")
        .unwrap();
    let (code, out, _) = beast(&["validate", file.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(out.contains("portz"), "{out}");
}

#[test]
fn plan_shows_what_would_change_and_why() {
    let mut env = Env::new("plan");
    env.write("a.yaml", &echo("a", ""));
    env.write("b.yaml", &echo("b", ""));
    let plan = |env: &Env| {
        let (code, out, err) = beast(&[
            "plan",
            "--manifests",
            env.manifests.to_str().unwrap(),
            "--instance",
            &env.instance,
            "--state-dir",
            env.state.to_str().unwrap(),
            "--port-range",
            &env.port_range(),
        ]);
        assert_eq!(code, 0, "{out}{err}");
        out
    };
    let out = plan(&env);
    assert!(out.contains("+ create replica 1"), "{out}");
    assert!(out.contains("2 to create"), "{out}");
    let net = format!("    network {}_a (to create)\n", env.instance);
    assert!(out.contains(&net), "{out}");
    assert!(out.contains("    egress off (--default-egress)"), "{out}");
    env.start();
    env.wait_running("a");
    env.wait_running("b");
    env.stop();
    let out = plan(&env);
    assert!(out.contains("2 in sync"), "{out}");
    env.write("a.yaml", &echo("a", "  env: {COLOR: blue}\n"));
    env.remove("b.yaml");
    let out = plan(&env);
    assert!(out.contains("~ replace replica 1"), "{out}");
    let net = format!("    network {}_a (exists, ", env.instance);
    assert!(out.contains(&net), "{out}");
    assert!(out.contains("env: COLOR changed"), "{out}");
    assert!(out.contains("- remove"), "{out}");
    // A dry run changes nothing.
    assert_eq!(env.containers().len(), 2);
}

/// Runs beast with `vars` set and every `BEAST_*` auth variable of the caller's environment cleared.
fn beast_env(args: &[&str], vars: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_beast"))
        .args(args)
        .env_remove("BEAST_JWT_SECRET")
        .env_remove("BEAST_JWT_SECRET_FILE")
        .env_remove("BEAST_NO_AUTH")
        .envs(vars.iter().copied())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn token_prints_only_a_token_that_verifies() {
    let (code, out, err) = beast_env(
        &["token", "--role", "author", "--ttl", "10m"],
        &[("BEAST_JWT_SECRET", TEST_SECRET)],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), 1, "{out}");
    let keys = beast::auth::Keys::new(TEST_SECRET.as_bytes()).unwrap();
    let claims = beast::auth::verify(&keys, out.trim()).unwrap();
    assert_eq!(claims.role, beast::auth::Role::Author);
    assert_eq!(claims.sub, "author");
    assert_eq!(claims.exp - claims.iat, 600);
}

#[test]
fn token_mints_a_player_token_for_a_team_and_nothing_else_takes_one() {
    let env = [("BEAST_JWT_SECRET", TEST_SECRET)];
    let (code, out, err) = beast_env(&["token", "--role", "player", "--team", "team-7"], &env);
    assert_eq!(code, 0, "{err}");
    let keys = beast::auth::Keys::new(TEST_SECRET.as_bytes()).unwrap();
    let claims = beast::auth::verify(&keys, out.trim()).unwrap();
    assert_eq!(claims.role, beast::auth::Role::Player);
    assert_eq!(claims.team.as_deref(), Some("team-7"));
    assert_eq!(claims.sub, "team-7");
    // A player needs a team (a usage error); another role refuses one.
    let (code, out, err) = beast_env(&["token", "--role", "player"], &env);
    assert_eq!((code, out.as_str()), (2, ""), "{err}");
    assert!(err.contains("--team"), "{err}");
    let (code, out, err) = beast_env(&["token", "--role", "admin", "--team", "x"], &env);
    assert_eq!((code, out.as_str()), (1, ""), "{err}");
    assert!(err.contains("only a player token carries a team"), "{err}");
}

#[test]
fn token_reads_a_secret_file_and_refuses_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("secret");
    std::fs::write(&file, format!("{TEST_SECRET}\n")).unwrap();
    let file = file.to_str().unwrap();
    let (code, out, err) = beast_env(
        &[
            "token",
            "--role",
            "viewer",
            "--subject",
            "ci",
            "--jwt-secret-file",
            file,
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    let keys = beast::auth::Keys::new(TEST_SECRET.as_bytes()).unwrap();
    assert_eq!(beast::auth::verify(&keys, out.trim()).unwrap().sub, "ci");

    let (code, _, err) = beast_env(
        &["token", "--role", "root"],
        &[("BEAST_JWT_SECRET", TEST_SECRET)],
    );
    assert_ne!(code, 0);
    assert!(err.contains("viewer, author or admin"), "{err}");
    let (code, out, err) = beast_env(
        &["token", "--role", "admin"],
        &[("BEAST_JWT_SECRET", "short")],
    );
    assert_eq!((code, out.as_str()), (1, ""));
    assert!(err.contains("at least 32"), "{err}");
    assert!(!err.contains("short\""), "the secret leaked: {err}");
}

#[test]
fn run_refuses_to_start_without_a_usable_secret() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().to_str().unwrap();
    let run = ["run", "--state-dir", state, "--listen", "127.0.0.1:0"];
    let (code, _, err) = beast_env(&run, &[]);
    assert_eq!(code, 1);
    assert!(
        err.contains("BEAST_JWT_SECRET") && err.contains("--no-auth"),
        "{err}"
    );
    let (code, _, err) = beast_env(&run, &[("BEAST_JWT_SECRET", "0123456789")]);
    assert_eq!(code, 1);
    assert!(
        err.contains("10 bytes") && err.contains("at least 32"),
        "{err}"
    );
}

#[test]
fn run_refuses_no_auth_on_a_public_address_without_insecure() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().to_str().unwrap();
    let run = [
        "run",
        "--state-dir",
        state,
        "--listen",
        "0.0.0.0:0",
        "--no-auth",
    ];
    let (code, _, err) = beast_env(&run, &[]);
    assert_eq!(code, 1);
    assert!(err.contains("--insecure"), "{err}");
}

#[test]
fn help_does_not_show_the_secret() {
    let (code, out, _) = beast_env(&["run", "--help"], &[("BEAST_JWT_SECRET", TEST_SECRET)]);
    assert_eq!(code, 0);
    assert!(out.contains("--jwt-secret"), "{out}");
    assert!(!out.contains(TEST_SECRET), "{out}");
}

#[test]
fn completions_man_pages_and_schema_are_generated() {
    for shell in ["bash", "zsh", "fish"] {
        let (code, out, err) = beast(&["completions", shell]);
        assert_eq!(code, 0, "{shell}: {err}");
        for word in ["beast", "import", "completions", "manifests"] {
            assert!(out.contains(word), "{shell} script lacks {word}");
        }
    }
    // The bash script is valid shell.
    let (_, script, _) = beast(&["completions", "bash"]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("beast.bash");
    std::fs::write(&path, script).unwrap();
    let status = Command::new("bash").arg("-n").arg(&path).status().unwrap();
    assert!(status.success());
    assert_eq!(beast(&["completions", "tcsh"]).0, 2);

    let (code, page, err) = beast(&["man"]);
    assert_eq!(code, 0, "{err}");
    assert!(page.starts_with(".ie"), "{page}");
    assert!(page.contains(".TH beast 1"), "{page}");
    assert!(page.contains("Convert an sdslabs/beast"), "{page}");
    let pages = dir.path().join("man");
    let (code, _, err) = beast(&["man", "--out-dir", pages.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    for page in [
        "beast.1",
        "beast-run.1",
        "beast-import.1",
        "beast-completions.1",
    ] {
        assert!(pages.join(page).is_file(), "{page}");
    }

    let (code, schema, _) = beast(&["schema"]);
    assert_eq!(code, 0);
    let shipped = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/manifests/challenge.schema.json"
    ))
    .unwrap();
    assert_eq!(schema.trim_end(), shipped.trim_end());
}

#[test]
fn the_service_files_name_real_settings_and_the_scripts_parse() {
    let root = env!("CARGO_MANIFEST_DIR");
    let unit = std::fs::read_to_string(format!("{root}/manifests/beast.service")).unwrap();
    assert!(unit.contains("\nExecStart=/usr/local/bin/beast run\n"));
    assert!(unit.contains("\nEnvironmentFile=/etc/beast/beast.env\n"));
    assert!(unit.contains("\nAfter=docker.service"));
    // Every BEAST_ variable the unit sets is one `beast run` reads.
    let (_, help, _) = beast(&["run", "--help"]);
    for line in unit.lines().filter_map(|l| l.strip_prefix("Environment=")) {
        let var = line.split('=').next().unwrap();
        assert!(
            help.contains(&format!("[env: {var}=")),
            "{var} is not a setting of beast run"
        );
    }
    for script in ["examples/beast-image.sh", ".ci/image-e2e.sh"] {
        let status = Command::new("bash")
            .arg("-n")
            .arg(format!("{root}/{script}"))
            .status()
            .unwrap();
        assert!(status.success(), "{script}");
    }
}
