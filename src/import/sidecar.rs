//! The service `beast import` writes for the original's `sidecar = "mysql" | "mongo"`, and the
//! environment the challenge's own container gets to reach it. Pure data: no file system, no
//! engine, no randomness (the caller hands in the generated passwords).
//!
//! The original ran one shared database container per kind, named `mysql` / `mongo`, created a
//! user and a database per challenge through an agent, and set `MYSQL_username`,
//! `MYSQL_password`, `MYSQL_database` (`MONGO_...` for mongo) in the challenge's container.
//! Challenges connect to the host name `mysql` / `mongo` and read those variables, so the service
//! keeps that name and the variables keep those names; the database's own image creates the user
//! and the database at its first start from its documented `MYSQL_*` / `MONGO_INITDB_*` variables.

use std::collections::BTreeMap;

use crate::manifest::raw;

/// The image of the mysql service: the original's sidecar was built `FROM mysql:8.0.13`.
pub const MYSQL_IMAGE: &str = "mysql:8.0";
/// The image of the mongo service: the 4.x line the original's `mongo:latest` was when
/// challenges were written for it; drivers of that time speak its wire protocol (6.0 dropped
/// the legacy opcodes older drivers use), and it runs on CPUs without AVX (5.0 needs it).
pub const MONGO_IMAGE: &str = "mongo:4.4";
pub const MYSQL_PORT: i64 = 3306;
pub const MONGO_PORT: i64 = 27017;
/// Both databases need more than the default 256Mi to start (mysql 8's buffers alone are ~400Mi).
const MEMORY: &str = "512Mi";
/// MySQL 8 refuses user names longer than this.
const MYSQL_USER_MAX: usize = 32;

/// A sidecar as a service plus what the challenge's container needs to reach it.
#[derive(Debug, Clone, PartialEq)]
pub struct Sidecar {
    /// The `spec.services` entry.
    pub service: raw::Service,
    /// Added to `spec.env` of the challenge (a variable the challenge sets itself wins).
    pub main_env: BTreeMap<String, String>,
    /// Says what was generated and that the image must be on the engine.
    pub note: String,
}

/// Generated secrets: the password of the challenge's database user, and of the database's root.
#[derive(Debug, Clone, PartialEq)]
pub struct Passwords {
    pub user: String,
    pub root: String,
}

/// The service for `kind` (`mysql` or `mongo`, as the original spelt them) of the challenge
/// `challenge` (a DNS label); `None` for a kind the original did not have.
pub fn sidecar(kind: &str, challenge: &str, passwords: &Passwords) -> Option<Sidecar> {
    // A DNS label with `-` made `_`: a plain identifier in SQL and in mongo.
    let database = challenge.replace('-', "_");
    match kind.trim() {
        "mysql" => Some(mysql(&database, passwords)),
        "mongo" => Some(mongo(&database, passwords)),
        _ => None,
    }
}

fn mysql(database: &str, passwords: &Passwords) -> Sidecar {
    let mut user: String = database.chars().take(MYSQL_USER_MAX).collect();
    user.truncate(user.trim_end_matches('_').len());
    let service = raw::Service {
        name: Some("mysql".to_string()),
        image: Some(MYSQL_IMAGE.to_string()),
        // The original sidecar's command: old PHP/Python clients need the native password plugin.
        command: Some(strings(&[
            "mysqld",
            "--character-set-server=utf8mb4",
            "--collation-server=utf8mb4_unicode_ci",
            "--default-authentication-plugin=mysql_native_password",
        ])),
        env: env(&[
            ("MYSQL_ROOT_PASSWORD", &passwords.root),
            ("MYSQL_DATABASE", database),
            ("MYSQL_USER", &user),
            ("MYSQL_PASSWORD", &passwords.user),
        ]),
        resources: Some(resources()),
        // The first start initialises the data directory with networking off: the port opens
        // only once the real server runs.
        healthcheck: Some(tcp(MYSQL_PORT, "120s")),
        ..raw::Service::default()
    };
    let main_env = client_env("MYSQL", MYSQL_PORT, &user, &passwords.user, database);
    let note = note("mysql", MYSQL_IMAGE, "");
    Sidecar {
        service,
        main_env,
        note,
    }
}

fn mongo(database: &str, passwords: &Passwords) -> Sidecar {
    let service = raw::Service {
        name: Some("mongo".to_string()),
        image: Some(MONGO_IMAGE.to_string()),
        // WiredTiger sizes its cache from the host's memory, not the container's limit.
        command: Some(strings(&["mongod", "--wiredTigerCacheSizeGB", "0.25"])),
        env: env(&[
            ("MONGO_INITDB_ROOT_USERNAME", database),
            ("MONGO_INITDB_ROOT_PASSWORD", &passwords.user),
            ("MONGO_INITDB_DATABASE", database),
        ]),
        resources: Some(resources()),
        healthcheck: Some(tcp(MONGO_PORT, "60s")),
        ..raw::Service::default()
    };
    let main_env = client_env("MONGO", MONGO_PORT, database, &passwords.user, database);
    let note = note(
        "mongo",
        MONGO_IMAGE,
        " The user is created in the `admin` database (the image's root user): a client that authenticated against the challenge's own database needs `authSource=admin`.",
    );
    Sidecar {
        service,
        main_env,
        note,
    }
}

/// The original's three variables (`{PREFIX}_username`, `_password`, `_database`: its agent's
/// field names) plus `{PREFIX}_HOST` and `{PREFIX}_PORT`, which its documentation promised.
fn client_env(
    prefix: &str,
    port: i64,
    user: &str,
    password: &str,
    database: &str,
) -> BTreeMap<String, String> {
    let host = prefix.to_ascii_lowercase();
    [
        ("HOST", host),
        ("PORT", port.to_string()),
        ("username", user.to_string()),
        ("password", password.to_string()),
        ("database", database.to_string()),
    ]
    .into_iter()
    .map(|(key, value)| (format!("{prefix}_{key}"), value))
    .collect()
}

fn note(kind: &str, image: &str, extra: &str) -> String {
    let prefix = kind.to_ascii_uppercase();
    format!(
        "challenge.metadata.sidecar \"{kind}\": now the service \"{kind}\" (image {image}, host name {kind} as before); the challenge gets {prefix}_username, {prefix}_password, {prefix}_database, {prefix}_HOST and {prefix}_PORT, with a generated password (a new one at each import).{extra} There is no registry: {image} must exist on the engine (`docker load` or build it) before the challenge can start"
    )
}

fn tcp(port: i64, start_period: &str) -> raw::Healthcheck {
    raw::Healthcheck {
        tcp: Some(raw::TcpProbe { port }),
        interval: Some("5s".to_string()),
        start_period: Some(start_period.to_string()),
        ..raw::Healthcheck::default()
    }
}

fn resources() -> raw::Resources {
    raw::Resources {
        memory: Some(raw::Quantity::Text(MEMORY.to_string())),
        ..raw::Resources::default()
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn passwords() -> Passwords {
        Passwords {
            user: "u".to_string(),
            root: "r".to_string(),
        }
    }

    #[test]
    fn a_long_challenge_name_makes_a_mysql_user_of_32_characters_at_most() {
        let name = format!("{}-b-{}", "a".repeat(31), "c".repeat(20));
        let found = sidecar("mysql", &name, &passwords()).unwrap();
        assert_eq!(found.service.env["MYSQL_USER"], "a".repeat(31));
        assert_eq!(found.main_env["MYSQL_username"], "a".repeat(31));
        assert_eq!(found.service.env["MYSQL_DATABASE"], name.replace('-', "_"));
    }

    #[test]
    fn only_the_originals_kinds_are_known() {
        assert!(sidecar(" mongo ", "c", &passwords()).is_some());
        for kind in ["redis", "MySQL", "postgres"] {
            assert!(sidecar(kind, "c", &passwords()).is_none(), "{kind}");
        }
    }
}
