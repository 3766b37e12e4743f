//! The operator's policy over what a manifest may ask for beyond the hardened defaults: extra
//! capabilities (`--allow-caps`) and privileged mode (`--allow-privileged`).
//!
//! Checked by the desired store whenever a spec is accepted, so a manifest that asks for more is
//! Valid=False (and the last valid spec keeps running), and by the manage API before it stores
//! anything (422). Pure: no engine, no I/O.

use std::collections::BTreeSet;

use crate::containers::DEFAULT_CAPS;
use crate::model::{Challenge, Security};

/// What this operator allows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// Capabilities (upper case, no `CAP_`) a manifest may add beyond the defaults.
    pub allow_caps: BTreeSet<String>,
    pub allow_privileged: bool,
}

impl Policy {
    /// A policy from the flags' values (`NET_RAW`, `cap_net_raw`, ... all accepted).
    pub fn new<I: IntoIterator<Item = S>, S: AsRef<str>>(
        caps: I,
        allow_privileged: bool,
    ) -> Policy {
        let allow_caps = caps
            .into_iter()
            .map(|c| {
                let c = c.as_ref().trim().to_ascii_uppercase();
                c.strip_prefix("CAP_").unwrap_or(&c).to_string()
            })
            .filter(|c| !c.is_empty())
            .collect();
        Policy {
            allow_caps,
            allow_privileged,
        }
    }

    /// Every way `challenge` asks for more than this policy allows, as `path: message`.
    pub fn violations(&self, challenge: &Challenge) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(run) = &challenge.run {
            self.check("spec.security", &run.security, &mut out);
        }
        for (i, svc) in challenge.services.iter().enumerate() {
            self.check(
                &format!("spec.services[{i}].security"),
                &svc.run.security,
                &mut out,
            );
        }
        out
    }

    fn check(&self, path: &str, sec: &Security, out: &mut Vec<String>) {
        for cap in &sec.cap_add {
            if DEFAULT_CAPS.contains(&cap.as_str()) || self.allow_caps.contains(cap) {
                continue;
            }
            let allowed = if self.allow_caps.is_empty() {
                "none".to_string()
            } else {
                self.allow_caps
                    .iter()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            out.push(format!(
                "{path}.capAdd: capability {cap} is not allowed by this operator (allowed beyond the defaults: {allowed}); an admin can allow it with `beast run --allow-caps {cap}`"
            ));
        }
        if sec.privileged && !self.allow_privileged {
            out.push(format!(
                "{path}.privileged: privileged containers are refused; an admin must run beast with `--allow-privileged` to allow them"
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{RunSpec, Service};

    fn with_security(sec: Security) -> Challenge {
        let mut c = Challenge::with_image("web", "img");
        if let Some(run) = c.run.as_mut() {
            run.security = sec;
        }
        c
    }

    #[test]
    fn default_caps_and_allowed_caps_pass_others_name_the_flag() {
        let policy = Policy::new(["cap_net_raw"], false);
        let ok = with_security(Security {
            cap_add: vec!["CHOWN".into(), "NET_RAW".into()],
            ..Security::default()
        });
        assert!(policy.violations(&ok).is_empty());
        let bad = with_security(Security {
            cap_add: vec!["SYS_ADMIN".into()],
            ..Security::default()
        });
        let v = policy.violations(&bad);
        assert_eq!(v.len(), 1);
        assert!(
            v[0].starts_with("spec.security.capAdd: capability SYS_ADMIN"),
            "{v:?}"
        );
        assert!(v[0].contains("--allow-caps"), "{v:?}");
    }

    #[test]
    fn privileged_needs_the_flag_for_services_too() {
        let mut c = Challenge::with_image("web", "img");
        c.services.push(Service {
            name: "bot".into(),
            run: RunSpec {
                security: Security {
                    privileged: true,
                    ..Security::default()
                },
                ..c.run.clone().unwrap_or_else(|| unreachable!())
            },
        });
        let v = Policy::default().violations(&c);
        assert_eq!(v.len(), 1);
        assert!(
            v[0].starts_with("spec.services[0].security.privileged"),
            "{v:?}"
        );
        assert!(v[0].contains("--allow-privileged"));
        assert!(Policy::new(Vec::<String>::new(), true)
            .violations(&c)
            .is_empty());
    }
}
