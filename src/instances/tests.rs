use super::*;
use crate::manifest::{self, DocOutcome};

fn store_with(yaml: &str) -> DesiredStore {
    let store = DesiredStore::new();
    let dir = std::path::Path::new("/");
    let parsed = manifest::parse_str(yaml, "test", dir, dir);
    for doc in parsed.docs {
        match doc {
            DocOutcome::Valid { challenge, raw, .. } => {
                store.apply_api(challenge, *raw, 1).unwrap();
            }
            DocOutcome::Invalid { errors, .. } => panic!("{errors:?}"),
        }
    }
    store
}

const WEB: &str = "apiVersion: beast/v1\nkind: Challenge\nmetadata: {name: web}\nspec:\n  image: img\n  ports: [{port: 80}]\n  instances:\n    perTeam: true\n    ttl: 10m\n    maxRenewals: 1\n    maxPerTeam: 1\n    maxTotal: 2\n    flag: {template: 'flag{w_{random}}', env: FLAG, file: /flag.txt}\n---\napiVersion: beast/v1\nkind: Challenge\nmetadata: {name: plain}\nspec:\n  image: img\n";

fn instances(dir: &std::path::Path) -> Instances {
    Instances::open(
        dir,
        store_with(WEB),
        StatusBoard::new(),
        RateLimit::default(),
    )
    .unwrap()
}

#[test]
fn create_get_renew_delete_and_the_limits() {
    let dir = tempfile::tempdir().unwrap();
    let i = instances(dir.path());
    let a = i.create("web", "team-a").unwrap();
    assert_eq!((a.challenge.as_str(), a.team.as_str()), ("web", "team-a"));
    assert_eq!(a.phase, Phase::Pending);
    assert_eq!(i.get("web", "team-a").unwrap().id, a.id);
    // maxPerTeam: 409 naming the live one.
    match i.create("web", "team-a") {
        Err(e @ InstanceError::AtMaxPerTeam { .. }) => {
            assert_eq!(e.status(), 409);
            assert!(e.to_string().contains(&a.id));
        }
        other => panic!("{other:?}"),
    }
    i.create("web", "team-b").unwrap();
    // maxTotal: 429 with a Retry-After.
    let e = i.create("web", "team-c").unwrap_err();
    assert_eq!(e.status(), 429);
    assert!(e.retry_after().is_some_and(|d| d.as_secs() >= 1));
    // Renew once, then out of renewals.
    let renewed = i.renew("web", "team-a").unwrap();
    assert_eq!(renewed.renewals, 1);
    assert_eq!(i.renew("web", "team-a").unwrap_err().status(), 409);
    // Unknown, not per-team, no instance: 404.
    assert_eq!(i.create("nope", "team-a").unwrap_err().status(), 404);
    assert_eq!(i.create("plain", "team-a").unwrap_err().status(), 404);
    assert_eq!(i.get("web", "team-z").unwrap_err().status(), 404);
    // Delete frees the slot.
    i.delete("web", "team-a").unwrap();
    assert_eq!(i.list(Some("team-a"), None).len(), 0);
    assert_eq!(i.list(None, Some("web")).len(), 1);
}

#[test]
fn flags_are_unique_kept_after_expiry_and_never_in_views() {
    let dir = tempfile::tempdir().unwrap();
    let i = instances(dir.path());
    let a = i.create("web", "team-a").unwrap();
    let key = instance_key("web", &a.id);
    let entry = i.entry(&key).unwrap();
    let spec = entry.spec.unwrap();
    let team = spec.team.clone().unwrap();
    let flag = team.flag.clone().unwrap();
    assert!(
        flag.starts_with("flag{w_") && flag.len() == "flag{w_}".len() + 16,
        "{flag}"
    );
    assert_eq!(spec.run.as_ref().unwrap().env.get("FLAG"), Some(&flag));
    assert_eq!(spec.key(), key);
    assert!(!spec.per_team(), "the copy runs");
    let json = serde_json::to_string(&i.list(None, None)).unwrap();
    assert!(!json.contains(&flag), "a view carries the flag: {json}");
    // Expiry removes it, the flag still finds its team, across a reopen of the book.
    let expired = i.reap(i64::MAX).unwrap();
    assert_eq!(expired, vec![key.clone()]);
    assert!(i.entry(&key).is_none());
    let again = instances(dir.path());
    let owner = again.lookup(&flag).unwrap();
    assert_eq!(
        (
            owner.challenge.as_str(),
            owner.team.as_str(),
            owner.instance.as_str()
        ),
        ("web", "team-a", a.id.as_str())
    );
    assert!(again.lookup("flag{nope}").is_none());
}

#[test]
fn the_book_survives_a_reopen_and_the_rate_limit_holds() {
    let dir = tempfile::tempdir().unwrap();
    {
        let i = instances(dir.path());
        i.create("web", "team-a").unwrap();
    }
    let i = Instances::open(
        dir.path(),
        store_with(WEB),
        StatusBoard::new(),
        "1/1h".parse().unwrap(),
    )
    .unwrap();
    assert_eq!(i.list(None, None).len(), 1);
    assert_eq!(i.entries().len(), 1);
    i.create("web", "team-b").unwrap();
    i.delete("web", "team-b").unwrap();
    let e = i.create("web", "team-b").unwrap_err();
    assert_eq!(e.status(), 429, "{e}");
}
