//! The address pool challenge networks are carved from (`run --network-pool`), and the choice of
//! a free block in it. Pure: the caller lists the subnets in use on the engine.
//!
//! beast chooses subnets itself rather than leaving it to the engine: Docker's default pools
//! hold about 30 networks, far fewer than an event's challenges and per-team instances.

use std::net::Ipv4Addr;
use std::str::FromStr;

/// A pool of IPv4 addresses split into equal blocks, one per network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetPool {
    base: u32,
    /// Prefix length of the pool.
    pool_len: u8,
    /// Prefix length of each network.
    block_len: u8,
}

/// Default pool: 10.213.0.0/16 in /26 blocks (1,024 networks of 61 containers each).
pub const DEFAULT_POOL: &str = "10.213.0.0/16";
/// Default prefix length of one challenge network.
pub const DEFAULT_BLOCK: u8 = 26;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    #[error("{0:?} is not an IPv4 CIDR such as 10.213.0.0/16")]
    Cidr(String),
    #[error("network size /{block} must be between the pool's /{pool} and /29")]
    BlockSize { pool: u8, block: u8 },
}

/// Parses `a.b.c.d/n` into (network address, n).
pub fn parse_cidr(text: &str) -> Option<(u32, u8)> {
    let (addr, len) = text.trim().split_once('/')?;
    let addr = Ipv4Addr::from_str(addr).ok()?;
    let len: u8 = len.parse().ok()?;
    if len > 32 {
        return None;
    }
    let mask = mask(len);
    Some((u32::from(addr) & mask, len))
}

fn mask(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len))
    }
}

fn range(base: u32, len: u8) -> (u64, u64) {
    let size = 1u64 << (32 - u32::from(len));
    (u64::from(base), u64::from(base) + size - 1)
}

impl Default for NetPool {
    /// [`DEFAULT_POOL`] in blocks of [`DEFAULT_BLOCK`].
    fn default() -> NetPool {
        let Some((base, pool_len)) = parse_cidr(DEFAULT_POOL) else {
            unreachable!("the default pool is a valid CIDR")
        };
        NetPool {
            base,
            pool_len,
            block_len: DEFAULT_BLOCK,
        }
    }
}

impl NetPool {
    pub fn new(pool: &str, block_len: u8) -> Result<NetPool, PoolError> {
        let (base, pool_len) = parse_cidr(pool).ok_or_else(|| PoolError::Cidr(pool.to_string()))?;
        if block_len < pool_len || block_len > 29 {
            return Err(PoolError::BlockSize {
                pool: pool_len,
                block: block_len,
            });
        }
        Ok(NetPool {
            base,
            pool_len,
            block_len,
        })
    }

    /// How many networks the pool holds.
    pub fn capacity(&self) -> u64 {
        1u64 << (self.block_len - self.pool_len)
    }

    /// The `skip`-th free block (subnet CIDR, gateway) that overlaps none of `in_use` (CIDRs;
    /// unparsable and IPv6 entries are ignored), or `None` when the pool is full.
    pub fn choose(&self, in_use: &[String], skip: usize) -> Option<(String, String)> {
        let taken: Vec<(u64, u64)> = in_use
            .iter()
            .filter_map(|c| parse_cidr(c))
            .map(|(b, l)| range(b, l))
            .collect();
        let step = 1u64 << (32 - u32::from(self.block_len));
        (0..self.capacity())
            .map(|i| u64::from(self.base) + i * step)
            .filter(|start| {
                let (lo, hi) = (*start, start + step - 1);
                !taken.iter().any(|(a, b)| lo <= *b && *a <= hi)
            })
            .nth(skip)
            .and_then(|start| {
                let start = u32::try_from(start).ok()?;
                let subnet = format!("{}/{}", Ipv4Addr::from(start), self.block_len);
                let gateway = Ipv4Addr::from(start.checked_add(1)?).to_string();
                Some((subnet, gateway))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_carved_in_order_around_what_is_taken() {
        let pool = NetPool::new("10.213.0.0/16", 26).unwrap();
        assert_eq!(pool.capacity(), 1024);
        assert_eq!(
            pool.choose(&[], 0),
            Some(("10.213.0.0/26".into(), "10.213.0.1".into()))
        );
        let taken = vec!["10.213.0.0/26".to_string(), "172.17.0.0/16".to_string()];
        assert_eq!(pool.choose(&taken, 0).unwrap().0, "10.213.0.64/26");
        assert_eq!(pool.choose(&taken, 1).unwrap().0, "10.213.0.128/26");
        // A wide network overlapping the start of the pool.
        let wide = vec!["10.213.0.0/24".to_string(), "fd00::/64".to_string()];
        assert_eq!(pool.choose(&wide, 0).unwrap().0, "10.213.1.0/26");
    }

    #[test]
    fn a_full_pool_and_bad_input_are_reported() {
        let pool = NetPool::new("10.0.0.0/28", 28).unwrap();
        assert!(pool.choose(&["10.0.0.0/8".into()], 0).is_none());
        assert!(NetPool::new("10.0.0.0", 26).is_err());
        assert!(NetPool::new("10.0.0.0/16", 12).is_err());
        assert!(NetPool::new("10.0.0.0/16", 30).is_err());
        assert_eq!(parse_cidr("10.1.2.3/16"), Some((0x0A01_0000, 16)));
    }
}
