//! The address pool challenge networks are carved from (`run --network-pool`), and the choice of
//! a free block in it. Pure: the caller lists the subnets in use on the engine.
//!
//! beast chooses subnets itself rather than leaving it to the engine: Docker's default pools
//! hold about 30 networks, far fewer than an event's challenges and per-team instances.

use ipnet::Ipv4Net;

/// A pool of IPv4 addresses split into equal blocks, one per network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetPool {
    pool: Ipv4Net,
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

/// Whether two IPv4 CIDRs share an address; anything that is not an IPv4 CIDR overlaps nothing.
pub fn subnets_overlap(a: &str, b: &str) -> bool {
    match (a.parse::<Ipv4Net>(), b.parse::<Ipv4Net>()) {
        (Ok(a), Ok(b)) => overlap(&a, &b),
        _ => false,
    }
}

fn overlap(a: &Ipv4Net, b: &Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

impl Default for NetPool {
    /// [`DEFAULT_POOL`] in blocks of [`DEFAULT_BLOCK`].
    fn default() -> NetPool {
        let Ok(pool) = DEFAULT_POOL.parse() else {
            unreachable!("the default pool is a valid CIDR")
        };
        NetPool {
            pool,
            block_len: DEFAULT_BLOCK,
        }
    }
}

impl NetPool {
    pub fn new(pool: &str, block_len: u8) -> Result<NetPool, PoolError> {
        let pool = pool
            .trim()
            .parse::<Ipv4Net>()
            .map_err(|_| PoolError::Cidr(pool.to_string()))?
            .trunc();
        if block_len < pool.prefix_len() || block_len > 29 {
            return Err(PoolError::BlockSize {
                pool: pool.prefix_len(),
                block: block_len,
            });
        }
        Ok(NetPool { pool, block_len })
    }

    /// How many networks the pool holds.
    pub fn capacity(&self) -> u64 {
        1u64 << (self.block_len - self.pool.prefix_len())
    }

    /// The `skip`-th free block (subnet CIDR, gateway) that overlaps none of `in_use` (CIDRs;
    /// unparsable and IPv6 entries are ignored), or `None` when the pool is full.
    pub fn choose(&self, in_use: &[String], skip: usize) -> Option<(String, String)> {
        let taken: Vec<Ipv4Net> = in_use.iter().filter_map(|c| c.parse().ok()).collect();
        let block = self
            .pool
            .subnets(self.block_len)
            .ok()?
            .filter(|block| !taken.iter().any(|t| overlap(block, t)))
            .nth(skip)?;
        let gateway = block.hosts().next()?;
        Some((block.to_string(), gateway.to_string()))
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
        // Host bits of the pool are cleared.
        let pool = NetPool::new("10.1.2.3/16", 24).unwrap();
        assert_eq!(pool.choose(&[], 0).unwrap().0, "10.1.0.0/24");
    }

    #[test]
    fn overlapping_subnets_are_told_apart() {
        assert!(subnets_overlap("10.0.0.0/24", "10.0.0.128/25"));
        assert!(subnets_overlap("10.0.0.128/25", "10.0.0.0/24"));
        assert!(subnets_overlap("10.0.0.0/28", "10.0.0.0/28"));
        assert!(!subnets_overlap("10.0.0.0/28", "10.0.0.16/28"));
        assert!(!subnets_overlap("fd00::/64", "fd00::/64"));
        assert!(!subnets_overlap("junk", "10.0.0.0/8"));
    }
}
