//! Connection limits: the counter a listener admits connections against, and the permit each
//! connection holds. A leaf: nothing here knows of sessions or actors.

use std::{
    collections::HashMap,
    fmt,
    net::IpAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
};

use futures::task::AtomicWaker;

/// Connection counting for one listener: global and per-peer-IP limits, both changeable while
/// running. The count is released by [`ConnectionPermit`]'s `Drop`, so it cannot leak.
pub(crate) struct Limiter {
    pub(crate) active: AtomicUsize,
    pub(crate) max: AtomicUsize,
    /// 0 means off.
    pub(crate) max_per_ip: AtomicUsize,
    pub(crate) per_ip: Mutex<HashMap<IpAddr, usize>>,
    /// The accept loop, parked at the limit.
    pub(crate) waker: AtomicWaker,
}

impl Limiter {
    pub(crate) fn has_room(&self) -> bool {
        self.active.load(Ordering::Acquire) < self.max.load(Ordering::Acquire)
    }

    /// Counts a new connection from `ip`, or refuses it when that peer is at its limit. Peers
    /// without an IP address (Unix sockets) count against the global limit only.
    pub(crate) fn admit(self: &Arc<Self>, ip: Option<IpAddr>) -> Option<ConnectionPermit> {
        let max_per_ip = self.max_per_ip.load(Ordering::Acquire);
        let per_ip_counted = max_per_ip > 0 && ip.is_some();
        let ip = ip.unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
        if per_ip_counted {
            let mut per_ip = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
            let count = per_ip.entry(ip).or_insert(0);
            if *count >= max_per_ip {
                return None;
            }
            *count += 1;
        }
        self.active.fetch_add(1, Ordering::AcqRel);
        Some(ConnectionPermit {
            limiter: self.clone(),
            ip,
            per_ip_counted,
        })
    }
}

/// One connection's place under its listener's limits; given back when dropped (the session
/// ends, or a pending connection is dropped).
pub struct ConnectionPermit {
    limiter: Arc<Limiter>,
    ip: IpAddr,
    per_ip_counted: bool,
}

impl fmt::Debug for ConnectionPermit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionPermit")
            .field("ip", &self.ip)
            .finish()
    }
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        let limiter = &self.limiter;
        if self.per_ip_counted {
            let mut per_ip = limiter.per_ip.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(count) = per_ip.get_mut(&self.ip) {
                *count -= 1;
                if *count == 0 {
                    per_ip.remove(&self.ip);
                }
            }
        }
        let before = limiter.active.fetch_sub(1, Ordering::AcqRel);
        if before >= limiter.max.load(Ordering::Acquire) {
            limiter.waker.wake();
        }
    }
}
