//! Open connections per client address, for `connections.maxPerSource`.
//!
//! Counted from the moment the client address is known (after the PROXY header) to
//! the connection's close, so that one address cannot hold every admission slot by
//! trickling handshakes either. Off by default: the map is not touched unless a cap is
//! configured.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

/// Open connections by client address.
#[derive(Debug, Default)]
pub struct SourceCounts {
    open: Mutex<HashMap<IpAddr, usize>>,
}

impl SourceCounts {
    fn lock(&self) -> MutexGuard<'_, HashMap<IpAddr, usize>> {
        match self.open.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Count one more connection from `ip`, unless it already has `max` open.
    pub fn hold(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<SourceSlot> {
        let ip = ip.to_canonical();
        let mut open = self.lock();
        let count = open.entry(ip).or_insert(0);
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(SourceSlot {
            counts: self.clone(),
            ip,
        })
    }

    /// Connections open from `ip`.
    pub fn open(&self, ip: IpAddr) -> usize {
        self.lock().get(&ip.to_canonical()).copied().unwrap_or(0)
    }

    /// Addresses with a connection open (the map's size: it never keeps a zero).
    pub fn sources(&self) -> usize {
        self.lock().len()
    }
}

/// One counted connection; dropping it (with the connection) uncounts it.
#[derive(Debug)]
pub struct SourceSlot {
    counts: Arc<SourceCounts>,
    ip: IpAddr,
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut open = self.counts.lock();
        if let Some(count) = open.get_mut(&self.ip) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_address_holds_at_most_max_and_closing_frees_a_slot() {
        let counts = Arc::new(SourceCounts::default());
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        let b: IpAddr = "2001:db8::1".parse().unwrap();
        let first = counts.hold(a, 2).unwrap();
        let _second = counts.hold(mapped, 2).expect("the same address, mapped");
        assert!(counts.hold(a, 2).is_none(), "a third from the same address");
        let _other = counts.hold(b, 2).expect("another address is not affected");
        drop(first);
        assert_eq!(counts.open(a), 1);
        let _again = counts.hold(a, 2).expect("a slot was freed");
        drop(_again);
        drop(_second);
        drop(_other);
        assert_eq!(counts.sources(), 0, "no zero entries are kept");
    }
}
