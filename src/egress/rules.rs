//! The pure half of egress control: rendering beast's iptables rules, parsing `iptables -S`
//! listings, and deciding which rules to insert and delete. No processes, no I/O.
//!
//! A rule is beast's when its comment (`-m comment --comment`) is `beast:{instance}:{challenge}`.
//! Only rules carrying exactly this instance's prefix are ever proposed for deletion. Names are
//! limited to `[A-Za-z0-9._-]` so a listed rule splits safely on whitespace.

use std::collections::{BTreeMap, BTreeSet};

use ipnet::Ipv4Net;

/// Docker's chain for user rules on forwarded traffic (container → anywhere off its bridge).
pub const FORWARD_CHAIN: &str = "DOCKER-USER";
/// The same rule once more at the top of FORWARD itself: Docker 20.10 deletes and re-inserts its
/// jump to DOCKER-USER whenever it creates or removes any network, and for those milliseconds
/// forwarded traffic skips DOCKER-USER. The rules Docker inserts above this one meanwhile match
/// other bridges only, so it still refuses the challenge's new outbound connections.
pub const BACKSTOP_CHAIN: &str = "FORWARD";
/// The host's own addresses (the bridge gateway, the LAN address...).
pub const INPUT_CHAIN: &str = "INPUT";
/// Every chain beast keeps rules in, in the order they are listed.
pub const CHAINS: [&str; 3] = [FORWARD_CHAIN, BACKSTOP_CHAIN, INPUT_CHAIN];

/// Longest comment the kernel's comment match keeps.
const MAX_COMMENT: usize = 255;

/// True for a name that may go into a rule comment unquoted.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}

/// The comment that marks the rules of one challenge of one instance.
pub fn comment(instance: &str, challenge: &str) -> String {
    format!("beast:{instance}:{challenge}")
}

/// True when `instance` and `challenge` make a comment iptables keeps whole.
pub fn fits(instance: &str, challenge: &str) -> bool {
    valid_name(instance)
        && valid_name(challenge)
        && comment(instance, challenge).len() <= MAX_COMMENT
}

/// Parses an IPv4 subnet in CIDR form; host bits are cleared (`10.0.0.5/28` → `10.0.0.0/28`),
/// as `iptables -S` prints it.
pub fn parse_subnet(subnet: &str) -> Result<Ipv4Net, String> {
    subnet
        .trim()
        .parse::<Ipv4Net>()
        .map(|net| net.trunc())
        .map_err(|_| "expected an IPv4 subnet such as 10.214.0.0/28 (IPv6 is not covered)".into())
}

/// The rule specs (everything after `-A CHAIN`) a challenge with egress off needs in `chain`,
/// written exactly as `iptables -S` prints them (comment unquoted).
pub fn render(chain: &str, instance: &str, challenge: &str, subnet: &Ipv4Net) -> Vec<String> {
    let c = comment(instance, challenge);
    let reject = "-m conntrack --ctstate NEW";
    let tail = format!("-m comment --comment {c} -j REJECT --reject-with icmp-port-unreachable");
    match chain {
        // New connections leaving the bridge are refused; the challenge's own subnet stays open
        // (its containers talk to each other), and replies to players are ESTABLISHED.
        FORWARD_CHAIN | BACKSTOP_CHAIN => {
            vec![format!("-s {subnet} ! -d {subnet} {reject} {tail}")]
        }
        // The host itself: gateway address, LAN address, anything bound on the host.
        INPUT_CHAIN => vec![format!("-s {subnet} {reject} {tail}")],
        _ => Vec::new(),
    }
}

/// The `-A CHAIN ...` lines of an `iptables -S CHAIN` listing, with quotes stripped from
/// tokens and whitespace collapsed (so they compare equal to [`render`]ed rules).
pub fn parse_listing(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|line| line.starts_with("-A "))
        .map(|line| {
            line.split_whitespace()
                .map(|t| t.trim_matches('"'))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

/// The challenge a listed line belongs to, when it carries this instance's comment.
pub fn owner<'a>(line: &'a str, instance: &str) -> Option<&'a str> {
    let mut tokens = line.split_whitespace();
    tokens.find(|t| *t == "--comment")?;
    let comment = tokens.next()?;
    let rest = comment.strip_prefix("beast:")?.strip_prefix(instance)?;
    let challenge = rest.strip_prefix(':')?;
    valid_name(challenge).then_some(challenge)
}

/// The spec of a listed `-A CHAIN spec...` line, split into arguments; `None` for anything else.
pub fn spec_args(line: &str) -> Option<(String, Vec<String>)> {
    let mut tokens = line.split_whitespace();
    if tokens.next()? != "-A" {
        return None;
    }
    let chain = tokens.next()?.to_string();
    Some((chain, tokens.map(str::to_string).collect()))
}

/// Which of this instance's rules a pass may look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope<'a> {
    /// Every rule of the instance (the resync pass).
    All,
    /// The rules of one challenge only.
    One(&'a str),
}

/// What a pass changes: inserts first (so a challenge never runs open while its rules move),
/// then deletes. Each entry is `(chain, spec)`, the spec as arguments.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Changes {
    pub insert: Vec<(String, Vec<String>)>,
    pub delete: Vec<(String, Vec<String>)>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.insert.is_empty() && self.delete.is_empty()
    }
    pub fn len(&self) -> usize {
        self.insert.len() + self.delete.len()
    }
}

/// Compares the rules wanted (challenge → subnet, within `scope`) with one listing per chain
/// (`(chain, parsed lines)`): missing rules are inserted; rules of this instance in scope that
/// are not wanted, or listed twice, are deleted. Lines of other instances or without beast's
/// comment are never touched.
pub fn diff(
    instance: &str,
    scope: Scope<'_>,
    wanted: &BTreeMap<String, Ipv4Net>,
    listings: &[(String, Vec<String>)],
) -> Changes {
    let mut changes = Changes::default();
    for (chain, lines) in listings {
        let want: BTreeSet<String> = wanted
            .iter()
            .filter(|(challenge, _)| in_scope(scope, challenge))
            .flat_map(|(challenge, subnet)| render(chain, instance, challenge, subnet))
            .map(|spec| format!("-A {chain} {spec}"))
            .collect();
        let mut seen = BTreeSet::new();
        for line in lines {
            let Some(challenge) = owner(line, instance) else {
                continue;
            };
            if !in_scope(scope, challenge) {
                continue;
            }
            if want.contains(line) && seen.insert(line.clone()) {
                continue;
            }
            if let Some(args) = spec_args(line) {
                changes.delete.push(args);
            }
        }
        for line in want.difference(&seen) {
            if let Some(args) = spec_args(line) {
                changes.insert.push(args);
            }
        }
    }
    changes
}

fn in_scope(scope: Scope<'_>, challenge: &str) -> bool {
    match scope {
        Scope::All => true,
        Scope::One(one) => one == challenge,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Captured from `iptables -w -S DOCKER-USER` (iptables v1.8.9, nf_tables) with rules of two
    /// instances, a foreign rule with a quoted comment, and Docker's RETURN.
    const LISTING: &str = r#"-N DOCKER-USER
-A DOCKER-USER -s 10.1.0.0/16 -m comment --comment "has space" -j RETURN
-A DOCKER-USER -s 10.214.1.0/28 ! -d 10.214.1.0/28 -m conntrack --ctstate NEW -m comment --comment "beast:x:web" -j REJECT --reject-with icmp-port-unreachable
-A DOCKER-USER -s 10.214.2.0/28 ! -d 10.214.2.0/28 -m conntrack --ctstate NEW -m comment --comment "beast:x:old" -j REJECT --reject-with icmp-port-unreachable
-A DOCKER-USER -s 10.214.3.0/28 ! -d 10.214.3.0/28 -m conntrack --ctstate NEW -m comment --comment "beast:xy:web" -j REJECT --reject-with icmp-port-unreachable
-A DOCKER-USER -j RETURN
"#;

    fn net(s: &str) -> Ipv4Net {
        parse_subnet(s).unwrap()
    }

    fn wanted(pairs: &[(&str, &str)]) -> BTreeMap<String, Ipv4Net> {
        pairs.iter().map(|(c, s)| (c.to_string(), net(s))).collect()
    }

    fn listing(chain: &str, text: &str) -> Vec<(String, Vec<String>)> {
        vec![(chain.to_string(), parse_listing(text))]
    }

    #[test]
    fn subnets_are_normalised_and_ipv6_refused() {
        assert_eq!(net("10.214.1.5/28").to_string(), "10.214.1.0/28");
        assert!(parse_subnet("fd00::/64").is_err());
        assert!(parse_subnet("10.214.1.0").is_err());
        assert!(parse_subnet("").is_err());
    }

    #[test]
    fn rendered_rules_read_back_as_listed() {
        let spec = &render(FORWARD_CHAIN, "x", "web", &net("10.214.1.0/28"))[0];
        let line = format!("-A {FORWARD_CHAIN} {spec}");
        assert_eq!(parse_listing(LISTING)[1], line);
        assert_eq!(
            render(INPUT_CHAIN, "x", "web", &net("10.214.1.0/28")),
            vec!["-s 10.214.1.0/28 -m conntrack --ctstate NEW -m comment --comment beast:x:web -j REJECT --reject-with icmp-port-unreachable"]
        );
        assert_eq!(
            render(BACKSTOP_CHAIN, "x", "web", &net("10.214.1.0/28")),
            render(FORWARD_CHAIN, "x", "web", &net("10.214.1.0/28"))
        );
        assert!(render("OUTPUT", "x", "web", &net("10.214.1.0/28")).is_empty());
    }

    #[test]
    fn listing_keeps_rules_only_and_strips_quotes() {
        let lines = parse_listing(LISTING);
        assert_eq!(lines.len(), 5);
        assert!(lines.iter().all(|l| l.starts_with("-A DOCKER-USER")));
        assert!(lines[0].contains("--comment has space"));
        assert!(!lines.iter().any(|l| l.contains('"')));
    }

    #[test]
    fn owner_is_exact_about_the_instance() {
        let lines = parse_listing(LISTING);
        let owners: Vec<_> = lines.iter().map(|l| owner(l, "x")).collect();
        assert_eq!(owners, vec![None, Some("web"), Some("old"), None, None]);
        assert_eq!(owner(&lines[3], "xy"), Some("web"));
        assert_eq!(owner(&lines[3], "x"), None);
    }

    #[test]
    fn names_must_fit_a_comment() {
        assert!(fits("beast", "web-1"));
        assert!(fits("team.7", "a_b"));
        assert!(!fits("be ast", "web"));
        assert!(!fits("beast", "we\"b"));
        assert!(!fits("beast", ""));
        assert!(!fits("beast", &"a".repeat(300)));
    }

    #[test]
    fn sync_keeps_wanted_adds_missing_and_removes_stale() {
        let changes = diff(
            "x",
            Scope::All,
            &wanted(&[("web", "10.214.1.0/28"), ("pwn", "10.214.4.0/28")]),
            &listing(FORWARD_CHAIN, LISTING),
        );
        assert_eq!(changes.insert.len(), 1);
        assert!(changes.insert[0].1.join(" ").contains("beast:x:pwn"));
        assert_eq!(changes.delete.len(), 1);
        assert!(changes.delete[0].1.join(" ").contains("beast:x:old"));
        assert_eq!(changes.delete[0].0, FORWARD_CHAIN);
    }

    #[test]
    fn sync_of_nothing_removes_only_this_instance() {
        let changes = diff(
            "x",
            Scope::All,
            &wanted(&[]),
            &listing(FORWARD_CHAIN, LISTING),
        );
        assert!(changes.insert.is_empty());
        let removed: Vec<String> = changes.delete.iter().map(|(_, a)| a.join(" ")).collect();
        assert_eq!(removed.len(), 2);
        assert!(removed.iter().all(|r| r.contains("beast:x:")));
    }

    #[test]
    fn a_new_subnet_replaces_the_old_one() {
        let changes = diff(
            "x",
            Scope::One("web"),
            &wanted(&[("web", "10.214.9.0/28")]),
            &listing(FORWARD_CHAIN, LISTING),
        );
        assert_eq!(changes.insert.len(), 1);
        assert!(changes.insert[0]
            .1
            .join(" ")
            .starts_with("-s 10.214.9.0/28"));
        assert_eq!(changes.delete.len(), 1);
        assert!(changes.delete[0]
            .1
            .join(" ")
            .starts_with("-s 10.214.1.0/28"));
    }

    #[test]
    fn one_challenge_leaves_the_others_alone() {
        let changes = diff(
            "x",
            Scope::One("web"),
            &wanted(&[]),
            &listing(FORWARD_CHAIN, LISTING),
        );
        assert!(changes.insert.is_empty());
        assert_eq!(changes.delete.len(), 1);
        assert!(changes.delete[0].1.join(" ").contains("beast:x:web"));
    }

    #[test]
    fn in_place_is_no_change_and_duplicates_go() {
        let want = wanted(&[("web", "10.214.1.0/28"), ("old", "10.214.2.0/28")]);
        let changes = diff("x", Scope::All, &want, &listing(FORWARD_CHAIN, LISTING));
        assert!(changes.is_empty(), "{changes:?}");
        let doubled = format!("{LISTING}{}", LISTING.lines().nth(2).unwrap());
        let changes = diff("x", Scope::All, &want, &listing(FORWARD_CHAIN, &doubled));
        assert!(changes.insert.is_empty());
        assert_eq!(changes.len(), 1);
    }

    #[test]
    fn every_chain_gets_its_rule() {
        let listings = vec![
            (FORWARD_CHAIN.to_string(), Vec::new()),
            (INPUT_CHAIN.to_string(), Vec::new()),
        ];
        let changes = diff(
            "x",
            Scope::All,
            &wanted(&[("web", "10.214.1.0/28")]),
            &listings,
        );
        let chains: Vec<&str> = changes.insert.iter().map(|(c, _)| c.as_str()).collect();
        assert_eq!(chains, vec![FORWARD_CHAIN, INPUT_CHAIN]);
    }
}
