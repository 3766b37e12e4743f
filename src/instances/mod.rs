//! Per-team instances (SPEC §8): the rules (who may create, renew or delete which instance, the
//! limits and the rate limit), dynamic flags, expiry, and the view of each instance as desired
//! state.
//!
//! An instance is desired state like a challenge: its record lives in the [`book`] (durable
//! before any answer), and the reconciler asks [`Instances::entry`] for the copy of the
//! challenge it runs, keyed `{challenge}.{id}`. Containers, network, host ports and status are
//! then handled by the same loop as every challenge. Flags never leave this module except into
//! the instance's own containers and the book.

pub mod book;
mod limiter;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use serde::Serialize;

use crate::desired::{DesiredStore, Entry};
use crate::model::{instance_key, split_key, Challenge, TeamInstance};
use crate::runtime::PortBinding;
use crate::status::{Phase, StatusBoard};

use book::{Book, BookError, Issued, Record};
pub use limiter::RateLimit;

/// What a caller (a player, or an author acting for a team) sees of an instance. Never the flag.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InstanceView {
    pub id: String,
    pub challenge: String,
    pub team: String,
    pub phase: Phase,
    /// The instance's published ports; `hostPort` is what players connect to.
    pub connection: Vec<PortBinding>,
    /// RFC 3339.
    pub created_at: String,
    pub expires_at: String,
    pub renewals: u32,
    pub max_renewals: u32,
}

/// Who a dynamic flag was issued to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct FlagOwner {
    pub challenge: String,
    pub team: String,
    pub instance: String,
}

/// Why an instance request was refused. Each maps to one HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum InstanceError {
    /// 404
    #[error("no challenge named {0:?}")]
    UnknownChallenge(String),
    /// 404
    #[error("challenge {0:?} has no per-team instances (spec.instances.perTeam is not true)")]
    NotPerTeam(String),
    /// 404
    #[error("team {team:?} has no instance of {challenge:?}")]
    NoInstance { challenge: String, team: String },
    /// 409
    #[error("team {team:?} already has {max} live instance(s) of {challenge:?} (spec.instances.maxPerTeam): {}", live.id)]
    AtMaxPerTeam {
        challenge: String,
        team: String,
        max: u32,
        live: Box<InstanceView>,
    },
    /// 409
    #[error("instance {id} of {challenge:?} was renewed {max} time(s) already (spec.instances.maxRenewals)")]
    OutOfRenewals {
        challenge: String,
        id: String,
        max: u32,
    },
    /// 429
    #[error("{challenge:?} has {max} live instances (spec.instances.maxTotal); try again later")]
    AtMaxTotal {
        challenge: String,
        max: u32,
        retry_after: Duration,
    },
    /// 429
    #[error("team {team:?} creates instances too fast; try again later")]
    RateLimited { team: String, retry_after: Duration },
    /// 400
    #[error("{0}")]
    BadTeam(String),
    /// 503
    #[error(transparent)]
    Storage(#[from] BookError),
}

impl InstanceError {
    /// The HTTP status this error answers with.
    pub fn status(&self) -> u16 {
        match self {
            InstanceError::UnknownChallenge(_)
            | InstanceError::NotPerTeam(_)
            | InstanceError::NoInstance { .. } => 404,
            InstanceError::AtMaxPerTeam { .. } | InstanceError::OutOfRenewals { .. } => 409,
            InstanceError::AtMaxTotal { .. } | InstanceError::RateLimited { .. } => 429,
            InstanceError::BadTeam(_) => 400,
            InstanceError::Storage(_) => 503,
        }
    }

    /// `Retry-After` of a 429.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            InstanceError::AtMaxTotal { retry_after, .. }
            | InstanceError::RateLimited { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }
}

/// Counters for metrics.
#[derive(Default)]
pub struct InstanceCounters {
    pub creates: AtomicU64,
    pub renewals: AtomicU64,
    pub deletes: AtomicU64,
    pub expiries: AtomicU64,
}

/// Called with an instance's key whenever its desired state changed (to queue a reconcile).
pub type Poke = Arc<dyn Fn(&str) + Send + Sync>;

/// Called with (kind of change, challenge, team, instance id) for notifications (no flag).
pub type Announce = Arc<dyn Fn(&str, &str, &str, &str) + Send + Sync>;

/// The per-team instances of one beast.
pub struct Instances {
    store: DesiredStore,
    status: StatusBoard,
    file: PathBuf,
    book: Mutex<Book>,
    limiter: Mutex<limiter::Limiter>,
    poke: Mutex<Option<Poke>>,
    announce: Mutex<Option<Announce>>,
    pub counters: InstanceCounters,
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn rfc3339(secs: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// A team name as a token or URL carries it: 1-64 characters, no control characters.
pub fn check_team(team: &str) -> Result<(), InstanceError> {
    if team.is_empty() || team.len() > 64 || team.chars().any(char::is_control) {
        return Err(InstanceError::BadTeam(format!(
            "team {team:?} must be 1-64 characters without control characters"
        )));
    }
    Ok(())
}

/// The team's newest live instance of `challenge` in `book`.
fn newest_in(book: &Book, challenge: &str, team: &str) -> Result<Record, InstanceError> {
    book.of(Some(challenge), Some(team))
        .last()
        .map(|r| (*r).clone())
        .ok_or_else(|| InstanceError::NoInstance {
            challenge: challenge.to_string(),
            team: team.to_string(),
        })
}

/// Makes `next` durable, then the book in memory: a failed write changes nothing.
fn commit(book: &mut Book, next: Book, file: &std::path::Path) -> Result<(), BookError> {
    next.save(file)?;
    *book = next;
    Ok(())
}

impl Instances {
    /// Opens the book under `state_dir` (created empty when missing).
    pub fn open(
        state_dir: &std::path::Path,
        store: DesiredStore,
        status: StatusBoard,
        rate: RateLimit,
    ) -> Result<Instances, BookError> {
        let file = book::path_in(state_dir);
        let book = Book::load(&file)?;
        Ok(Instances {
            store,
            status,
            file,
            book: Mutex::new(book),
            limiter: Mutex::new(limiter::Limiter::new(rate)),
            poke: Mutex::new(None),
            announce: Mutex::new(None),
            counters: InstanceCounters::default(),
        })
    }

    /// Lets changes ask for a reconcile of the instance's key.
    pub fn attach_poke(&self, poke: Poke) {
        *self.poke.lock().unwrap_or_else(|p| p.into_inner()) = Some(poke);
    }

    /// Lets changes be announced (SSE, webhooks).
    pub fn attach_announce(&self, announce: Announce) {
        *self.announce.lock().unwrap_or_else(|p| p.into_inner()) = Some(announce);
    }

    fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn changed(&self, what: &str, r: &Record) {
        let key = instance_key(&r.challenge, &r.id);
        let poke = self.poke.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(poke) = poke {
            poke(&key);
        }
        let announce = self
            .announce
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(announce) = announce {
            announce(what, &r.challenge, &r.team, &r.id);
        }
    }

    /// The per-team spec of `challenge`, or why there is none.
    fn spec_of(&self, challenge: &str) -> Result<Arc<Challenge>, InstanceError> {
        let entry = self
            .store
            .get(challenge)
            .ok_or_else(|| InstanceError::UnknownChallenge(challenge.to_string()))?;
        let spec = entry
            .spec
            .ok_or_else(|| InstanceError::UnknownChallenge(challenge.to_string()))?;
        if !spec.per_team() {
            return Err(InstanceError::NotPerTeam(challenge.to_string()));
        }
        Ok(spec)
    }

    fn view(&self, r: &Record, max_renewals: u32) -> InstanceView {
        let key = instance_key(&r.challenge, &r.id);
        let status = self.status.get(&key);
        let connection = status
            .as_ref()
            .map(|s| {
                let mut ports: Vec<PortBinding> = s
                    .containers
                    .iter()
                    .filter(|c| c.service.is_none())
                    .flat_map(|c| c.ports.iter().copied())
                    .collect();
                ports.sort();
                ports.dedup();
                ports
            })
            .unwrap_or_default();
        InstanceView {
            id: r.id.clone(),
            challenge: r.challenge.clone(),
            team: r.team.clone(),
            phase: status.map(|s| s.phase).unwrap_or(Phase::Pending),
            connection,
            created_at: rfc3339(r.created_at),
            expires_at: rfc3339(r.expires_at),
            renewals: r.renewals,
            max_renewals,
        }
    }

    fn max_renewals(&self, challenge: &str) -> u32 {
        self.store
            .get(challenge)
            .and_then(|e| e.spec)
            .and_then(|s| s.instances.as_ref().map(|i| i.max_renewals))
            .unwrap_or(0)
    }

    /// Live instances, optionally of one team and/or challenge, oldest first.
    pub fn list(&self, team: Option<&str>, challenge: Option<&str>) -> Vec<InstanceView> {
        let records: Vec<Record> = self
            .book()
            .of(challenge, team)
            .into_iter()
            .cloned()
            .collect();
        records
            .iter()
            .map(|r| self.view(r, self.max_renewals(&r.challenge)))
            .collect()
    }

    /// The team's (newest) instance of `challenge`.
    pub fn get(&self, challenge: &str, team: &str) -> Result<InstanceView, InstanceError> {
        let spec = self.spec_of(challenge)?;
        let record = self.newest(challenge, team)?;
        let max = spec.instances.as_ref().map_or(0, |i| i.max_renewals);
        Ok(self.view(&record, max))
    }

    fn newest(&self, challenge: &str, team: &str) -> Result<Record, InstanceError> {
        newest_in(&self.book(), challenge, team)
    }

    /// Starts a new instance of `challenge` for `team`: durable before it returns.
    pub fn create(&self, challenge: &str, team: &str) -> Result<InstanceView, InstanceError> {
        check_team(team)?;
        let spec = self.spec_of(challenge)?;
        let Some(limits) = spec.instances.clone() else {
            return Err(InstanceError::NotPerTeam(challenge.to_string()));
        };
        let now = now();
        let record = {
            let mut book = self.book();
            if book.of(Some(challenge), Some(team)).len() >= limits.max_per_team as usize {
                let live = newest_in(&book, challenge, team)?;
                drop(book);
                return Err(InstanceError::AtMaxPerTeam {
                    challenge: challenge.to_string(),
                    team: team.to_string(),
                    max: limits.max_per_team,
                    live: Box::new(self.view(&live, limits.max_renewals)),
                });
            }
            let all = book.of(Some(challenge), None);
            if all.len() >= limits.max_total as usize {
                let soonest = all.iter().map(|r| r.expires_at).min().unwrap_or(now);
                let wait = u64::try_from((soonest - now).max(1)).unwrap_or(1);
                return Err(InstanceError::AtMaxTotal {
                    challenge: challenge.to_string(),
                    max: limits.max_total,
                    retry_after: Duration::from_secs(wait),
                });
            }
            if let Err(retry_after) = self
                .limiter
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take(team, std::time::Instant::now())
            {
                return Err(InstanceError::RateLimited {
                    team: team.to_string(),
                    retry_after,
                });
            }
            let id = loop {
                let id = format!("{:08x}", rand::rng().random::<u32>());
                if !book.ids.contains(&id) {
                    break id;
                }
            };
            let flag = limits.flag.as_ref().map(|f| loop {
                let random = format!("{:016x}", rand::rng().random::<u64>());
                let flag = f.template.replace("{random}", &random);
                if !book.flags.contains_key(&flag) {
                    break flag;
                }
            });
            let ttl = i64::try_from(limits.ttl.as_secs()).unwrap_or(i64::MAX / 4);
            let record = Record {
                id: id.clone(),
                challenge: challenge.to_string(),
                team: team.to_string(),
                created_at: now,
                expires_at: now.saturating_add(ttl),
                renewals: 0,
                flag: flag.clone(),
            };
            let mut next = book.clone();
            next.ids.insert(id.clone());
            if let Some(flag) = flag {
                next.flags.insert(
                    flag.clone(),
                    Issued {
                        flag,
                        challenge: challenge.to_string(),
                        team: team.to_string(),
                        instance: id.clone(),
                        issued_at: now,
                    },
                );
            }
            next.live.insert(id, record.clone());
            commit(&mut book, next, &self.file)?;
            record
        };
        self.counters.creates.fetch_add(1, Ordering::Relaxed);
        tracing::info!(%challenge, %team, instance = %record.id, "instance created");
        self.changed("created", &record);
        Ok(self.view(&record, limits.max_renewals))
    }

    /// Sets the team's instance to expire `ttl` from now, up to `maxRenewals` times.
    pub fn renew(&self, challenge: &str, team: &str) -> Result<InstanceView, InstanceError> {
        let spec = self.spec_of(challenge)?;
        let Some(limits) = spec.instances.clone() else {
            return Err(InstanceError::NotPerTeam(challenge.to_string()));
        };
        let record = {
            let mut book = self.book();
            let current = newest_in(&book, challenge, team)?;
            if current.renewals >= limits.max_renewals {
                return Err(InstanceError::OutOfRenewals {
                    challenge: challenge.to_string(),
                    id: current.id,
                    max: limits.max_renewals,
                });
            }
            let ttl = i64::try_from(limits.ttl.as_secs()).unwrap_or(i64::MAX / 4);
            let mut renewed = current;
            renewed.renewals += 1;
            renewed.expires_at = now().saturating_add(ttl);
            let mut next = book.clone();
            next.live.insert(renewed.id.clone(), renewed.clone());
            commit(&mut book, next, &self.file)?;
            renewed
        };
        self.counters.renewals.fetch_add(1, Ordering::Relaxed);
        self.changed("renewed", &record);
        Ok(self.view(&record, limits.max_renewals))
    }

    /// Removes the team's (newest) instance of `challenge`; its containers and network go.
    pub fn delete(&self, challenge: &str, team: &str) -> Result<InstanceView, InstanceError> {
        let record = {
            let mut book = self.book();
            let current = newest_in(&book, challenge, team)?;
            let mut next = book.clone();
            next.live.remove(&current.id);
            commit(&mut book, next, &self.file)?;
            current
        };
        self.counters.deletes.fetch_add(1, Ordering::Relaxed);
        tracing::info!(%challenge, %team, instance = %record.id, "instance deleted");
        let view = self.view(&record, self.max_renewals(challenge));
        self.changed("deleted", &record);
        Ok(view)
    }

    /// Removes every instance that expired by `now` (seconds since the epoch); returns their
    /// keys. Also the ones that expired while beast was down.
    pub fn reap(&self, now: i64) -> Result<Vec<String>, BookError> {
        let expired: Vec<Record> = {
            let mut book = self.book();
            let expired: Vec<Record> = book
                .live
                .values()
                .filter(|r| r.expires_at <= now)
                .cloned()
                .collect();
            if expired.is_empty() {
                return Ok(Vec::new());
            }
            let mut next = book.clone();
            for r in &expired {
                next.live.remove(&r.id);
            }
            commit(&mut book, next, &self.file)?;
            expired
        };
        let mut keys = Vec::new();
        for r in &expired {
            self.counters.expiries.fetch_add(1, Ordering::Relaxed);
            tracing::info!(challenge = %r.challenge, team = %r.team, instance = %r.id, "instance expired");
            self.changed("expired", r);
            keys.push(instance_key(&r.challenge, &r.id));
        }
        Ok(keys)
    }

    /// Who a dynamic flag was issued to (live or expired instances alike).
    pub fn lookup(&self, flag: &str) -> Option<FlagOwner> {
        self.book().flags.get(flag.trim()).map(|i| FlagOwner {
            challenge: i.challenge.clone(),
            team: i.team.clone(),
            instance: i.instance.clone(),
        })
    }

    /// Live instances per challenge (metrics).
    pub fn live_counts(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for r in self.book().live.values() {
            *out.entry(r.challenge.clone()).or_insert(0) += 1;
        }
        out
    }

    /// The keys of the live instances of `challenge` (to roll a spec change out to them).
    pub fn keys_of(&self, challenge: &str) -> Vec<String> {
        self.book()
            .of(Some(challenge), None)
            .into_iter()
            .map(|r| instance_key(&r.challenge, &r.id))
            .collect()
    }

    /// The desired state of one instance, as the reconciler sees it: the challenge's entry with
    /// a copy of its spec for this team. `None` when the instance is gone (its containers go).
    pub fn entry(&self, key: &str) -> Option<Entry> {
        let (challenge, id) = split_key(key)?;
        let record = self.book().live.get(id).cloned()?;
        if record.challenge != challenge {
            return None;
        }
        self.entry_of(&record)
    }

    fn entry_of(&self, record: &Record) -> Option<Entry> {
        let base = self.store.get(&record.challenge)?;
        let mut entry = base.clone();
        entry.name = instance_key(&record.challenge, &record.id);
        entry.raw = None;
        entry.spec = match base.spec.as_deref() {
            Some(spec) if spec.per_team() => {
                let mut copy = spec.clone();
                copy.team = Some(TeamInstance {
                    team: record.team.clone(),
                    id: record.id.clone(),
                    flag: record.flag.clone(),
                });
                if let (Some(run), Some(flag), Some(env)) = (
                    copy.run.as_mut(),
                    record.flag.as_ref(),
                    spec.instances
                        .as_ref()
                        .and_then(|i| i.flag.as_ref())
                        .and_then(|f| f.env.clone()),
                ) {
                    run.env.insert(env, flag.clone());
                }
                Some(Arc::new(copy))
            }
            // No longer per-team (or never valid): the instance runs nothing.
            _ => None,
        };
        Some(entry)
    }

    /// Every live instance's entry (the resync pass).
    pub fn entries(&self) -> Vec<Entry> {
        let records: Vec<Record> = self.book().live.values().cloned().collect();
        records.iter().filter_map(|r| self.entry_of(r)).collect()
    }
}

#[cfg(test)]
mod tests;
