//! Host-port allocation for ports a manifest leaves to beast (`hostPort` omitted).
//!
//! Each (challenge, replica, container port, protocol) gets a host port from the configured range
//! and keeps it: the table is persisted under the state directory (written atomically), and on
//! start it is also seeded from the ports of adopted containers, so players' connection details
//! survive restarts of beast and of the containers. This module decides numbers only; it never
//! talks to the engine.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::model::Protocol;

/// Errors of port allocation.
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    #[error("no free host port left in {lo}-{hi}")]
    Exhausted { lo: u16, hi: u16 },
    #[error("invalid port range {0:?}: expected LO-HI with 1 <= LO <= HI <= 65535")]
    BadRange(String),
    #[error("could not read the port table {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("port table {path} is corrupt: {source}")]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("could not save the port table {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// An inclusive range of host ports, e.g. `30000-32767`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    pub lo: u16,
    pub hi: u16,
}

impl FromStr for PortRange {
    type Err = PortError;
    fn from_str(s: &str) -> Result<PortRange, PortError> {
        let bad = || PortError::BadRange(s.to_string());
        let (lo, hi) = s.split_once('-').ok_or_else(bad)?;
        let lo: u16 = lo.trim().parse().map_err(|_| bad())?;
        let hi: u16 = hi.trim().parse().map_err(|_| bad())?;
        if lo == 0 || lo > hi {
            return Err(bad());
        }
        Ok(PortRange { lo, hi })
    }
}

impl PortRange {
    pub fn contains(&self, port: u16) -> bool {
        (self.lo..=self.hi).contains(&port)
    }
}

impl std::fmt::Display for PortRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.lo, self.hi)
    }
}

/// What an allocated port belongs to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortKey {
    pub challenge: String,
    pub replica: u32,
    pub port: u16,
    pub protocol: Protocol,
}

impl PortKey {
    fn encode(&self) -> String {
        format!(
            "{}/{}/{}/{}",
            self.challenge, self.replica, self.port, self.protocol
        )
    }

    fn decode(s: &str) -> Option<PortKey> {
        let mut parts = s.split('/');
        let challenge = parts.next()?.to_string();
        let replica = parts.next()?.parse().ok()?;
        let port = parts.next()?.parse().ok()?;
        let protocol = match parts.next()? {
            "tcp" => Protocol::Tcp,
            "udp" => Protocol::Udp,
            _ => return None,
        };
        Some(PortKey {
            challenge,
            replica,
            port,
            protocol,
        })
    }
}

/// The allocation table.
#[derive(Debug)]
pub struct PortAllocator {
    range: PortRange,
    assigned: BTreeMap<PortKey, u16>,
    file: Option<PathBuf>,
    /// Probe the host before handing out a port (off in tests of the pure logic).
    probe_host: bool,
    /// Changed since the last [`PortAllocator::take_pending`].
    dirty: bool,
}

impl PortAllocator {
    /// An allocator that keeps its table in memory only.
    pub fn in_memory(range: PortRange) -> PortAllocator {
        PortAllocator {
            range,
            assigned: BTreeMap::new(),
            file: None,
            probe_host: false,
            dirty: false,
        }
    }

    /// An allocator persisted at `dir/ports.json`, loading what is already there.
    pub fn open(range: PortRange, dir: &Path) -> Result<PortAllocator, PortError> {
        let file = dir.join("ports.json");
        let mut allocator = PortAllocator {
            range,
            assigned: BTreeMap::new(),
            file: Some(file.clone()),
            probe_host: true,
            dirty: false,
        };
        match std::fs::read(&file) {
            Ok(bytes) => {
                let table: BTreeMap<String, u16> =
                    serde_json::from_slice(&bytes).map_err(|source| PortError::Corrupt {
                        path: file.clone(),
                        source,
                    })?;
                allocator.assigned = table
                    .into_iter()
                    .filter_map(|(k, v)| Some((PortKey::decode(&k)?, v)))
                    .collect();
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(PortError::Read { path: file, source }),
        }
        Ok(allocator)
    }

    /// The same table, no longer written back (for dry runs).
    pub fn detached(mut self) -> PortAllocator {
        self.file = None;
        self
    }

    pub fn range(&self) -> PortRange {
        self.range
    }

    pub fn get(&self, key: &PortKey) -> Option<u16> {
        self.assigned.get(key).copied()
    }

    /// Records a port found on an adopted container (it wins over a stale table entry).
    pub fn adopt(&mut self, key: PortKey, host_port: u16) -> bool {
        let changed = self.assigned.insert(key, host_port) != Some(host_port);
        self.dirty |= changed;
        changed
    }

    /// The port of `key`, allocating one if it has none or if its port is now `reserved`
    /// (claimed as a fixed `hostPort` by some challenge, which wins). Returns the port and
    /// whether the table changed.
    pub fn get_or_allocate(
        &mut self,
        key: &PortKey,
        reserved: &BTreeSet<(u16, Protocol)>,
    ) -> Result<(u16, bool), PortError> {
        if let Some(port) = self.get(key) {
            if !reserved.contains(&(port, key.protocol)) {
                return Ok((port, false));
            }
        }
        let taken: BTreeSet<(u16, Protocol)> = self
            .assigned
            .iter()
            .filter(|(k, _)| *k != key)
            .map(|(k, p)| (*p, k.protocol))
            .collect();
        for port in self.range.lo..=self.range.hi {
            let candidate = (port, key.protocol);
            if taken.contains(&candidate) || reserved.contains(&candidate) {
                continue;
            }
            if self.probe_host && !host_port_free(port, key.protocol) {
                continue;
            }
            self.assigned.insert(key.clone(), port);
            self.dirty = true;
            return Ok((port, true));
        }
        Err(PortError::Exhausted {
            lo: self.range.lo,
            hi: self.range.hi,
        })
    }

    /// Forgets every allocation of `challenge` whose replica is above `keep_replicas`
    /// (0 forgets them all). Returns whether the table changed.
    pub fn release(&mut self, challenge: &str, keep_replicas: u32) -> bool {
        let before = self.assigned.len();
        self.assigned
            .retain(|k, _| k.challenge != challenge || k.replica <= keep_replicas);
        let changed = before != self.assigned.len();
        self.dirty |= changed;
        changed
    }

    /// Challenges that hold allocations.
    pub fn challenges(&self) -> BTreeSet<String> {
        self.assigned.keys().map(|k| k.challenge.clone()).collect()
    }

    /// What must be written to make the table durable, if anything changed since the last call.
    /// Take it under the caller's write lock, then [`write_table`] it without holding the table.
    pub fn take_pending(&mut self) -> Option<(PathBuf, Vec<u8>)> {
        if !std::mem::take(&mut self.dirty) {
            return None;
        }
        let file = self.file.clone()?;
        let table: BTreeMap<String, u16> = self
            .assigned
            .iter()
            .map(|(k, v)| (k.encode(), *v))
            .collect();
        let bytes = serde_json::to_vec_pretty(&table).unwrap_or_default();
        Some((file, bytes))
    }

    /// Writes the table now if it changed (temp file, fsync, rename).
    pub fn save(&mut self) -> Result<(), PortError> {
        match self.take_pending() {
            Some((file, bytes)) => write_table(&file, &bytes),
            None => Ok(()),
        }
    }
}

/// Writes the table durably (see [`crate::durable`]).
pub fn write_table(file: &Path, bytes: &[u8]) -> Result<(), PortError> {
    crate::durable::write_atomically(file, bytes).map_err(|source| PortError::Write {
        path: file.to_path_buf(),
        source,
    })
}

/// Whether nothing on this host listens on `port` (a bind probe, released at once).
fn host_port_free(port: u16, protocol: Protocol) -> bool {
    match protocol {
        Protocol::Tcp => TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).is_ok(),
        Protocol::Udp => UdpSocket::bind((Ipv4Addr::UNSPECIFIED, port)).is_ok(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn key(challenge: &str, replica: u32, port: u16) -> PortKey {
        PortKey {
            challenge: challenge.into(),
            replica,
            port,
            protocol: Protocol::Tcp,
        }
    }

    #[test]
    fn ranges_parse_and_reject_nonsense() {
        assert_eq!(
            "30000-32767".parse::<PortRange>().unwrap(),
            PortRange {
                lo: 30000,
                hi: 32767
            }
        );
        assert!("5-1".parse::<PortRange>().is_err());
        assert!("0-10".parse::<PortRange>().is_err());
        assert!("abc".parse::<PortRange>().is_err());
    }

    #[test]
    fn allocation_is_stable_and_distinct() {
        let mut a = PortAllocator::in_memory(PortRange {
            lo: 40000,
            hi: 40010,
        });
        let none = BTreeSet::new();
        let (p1, changed) = a.get_or_allocate(&key("a", 1, 80), &none).unwrap();
        assert!(changed);
        let (p2, _) = a.get_or_allocate(&key("a", 2, 80), &none).unwrap();
        assert_ne!(p1, p2);
        assert_eq!(
            a.get_or_allocate(&key("a", 1, 80), &none).unwrap(),
            (p1, false)
        );
    }

    #[test]
    fn reserved_ports_are_skipped_and_move_an_allocation() {
        let mut a = PortAllocator::in_memory(PortRange {
            lo: 40000,
            hi: 40010,
        });
        let reserved = BTreeSet::from([(40000, Protocol::Tcp)]);
        let (p, _) = a.get_or_allocate(&key("a", 1, 80), &reserved).unwrap();
        assert_eq!(p, 40001);
        let mut b = PortAllocator::in_memory(PortRange {
            lo: 40000,
            hi: 40010,
        });
        b.adopt(key("a", 1, 80), 40000);
        let (moved, changed) = b.get_or_allocate(&key("a", 1, 80), &reserved).unwrap();
        assert!(changed);
        assert_eq!(moved, 40001);
    }

    #[test]
    fn exhaustion_is_an_error() {
        let mut a = PortAllocator::in_memory(PortRange {
            lo: 40000,
            hi: 40000,
        });
        a.get_or_allocate(&key("a", 1, 80), &BTreeSet::new())
            .unwrap();
        assert!(matches!(
            a.get_or_allocate(&key("b", 1, 80), &BTreeSet::new()),
            Err(PortError::Exhausted { .. })
        ));
    }

    #[test]
    fn table_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let range = PortRange {
            lo: 40100,
            hi: 40200,
        };
        let mut a = PortAllocator::open(range, dir.path()).unwrap();
        a.probe_host = false;
        let (p, _) = a
            .get_or_allocate(&key("web", 1, 80), &BTreeSet::new())
            .unwrap();
        a.save().unwrap();
        let b = PortAllocator::open(range, dir.path()).unwrap();
        assert_eq!(b.get(&key("web", 1, 80)), Some(p));
    }

    #[test]
    fn release_forgets_scaled_down_replicas() {
        let mut a = PortAllocator::in_memory(PortRange {
            lo: 40000,
            hi: 40010,
        });
        a.adopt(key("a", 1, 80), 40000);
        a.adopt(key("a", 2, 80), 40001);
        assert!(a.release("a", 1));
        assert_eq!(a.get(&key("a", 2, 80)), None);
        assert_eq!(a.get(&key("a", 1, 80)), Some(40000));
    }
}
