//! Connection limits: the counter a listener admits connections against, and the permit each
//! connection holds. A leaf: nothing here knows of sessions or actors.

use std::{
    collections::HashMap,
    fmt,
    net::IpAddr,
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
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
    /// Connections refused by the per-IP limit after their PROXY header named the client
    /// (counted on the workers; the listener counts its own refusals).
    pub(crate) rejected_per_ip_late: AtomicU64,
    /// Told when the count falls to 0 ([`Limiter::wait_idle`]).
    pub(crate) idle: tokio::sync::Notify,
}

impl Limiter {
    /// Resolves once no connection holds a permit.
    pub(crate) async fn wait_idle(&self) {
        loop {
            let idle = self.idle.notified();
            tokio::pin!(idle);
            // Enabled before the count is read: a permit dropped in between still wakes it.
            idle.as_mut().enable();
            if self.active.load(Ordering::Acquire) == 0 {
                return;
            }
            idle.await;
        }
    }

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
            limiter: Some(self.clone()),
            ip,
            per_ip_counted,
        })
    }
}

impl ConnectionPermit {
    /// Counts this connection against `ip`'s per-IP limit now that its real client is known
    /// (from a PROXY header; the listener admitted it without an address). False, and nothing
    /// counted, when `ip` is at its limit. A permit already counted against an address is left
    /// as it is.
    pub(crate) fn count_ip(&mut self, ip: IpAddr) -> bool {
        let Some(limiter) = self.limiter.as_deref().filter(|_| !self.per_ip_counted) else {
            return true;
        };
        let max_per_ip = limiter.max_per_ip.load(Ordering::Acquire);
        if max_per_ip == 0 {
            return true;
        }
        let mut per_ip = limiter.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        let count = per_ip.entry(ip).or_insert(0);
        if *count >= max_per_ip {
            drop(per_ip);
            limiter.rejected_per_ip_late.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        *count += 1;
        self.ip = ip;
        self.per_ip_counted = true;
        true
    }

    /// The permit as a session keeps it: the limiter, and the address it is counted under
    /// per IP, if any. A session's record holds its peer's address already, so the session
    /// keeps the 8-byte limiter and releases with [`Limiter::release`] itself.
    pub(crate) fn into_parts(mut self) -> (Arc<Limiter>, Option<IpAddr>) {
        let limiter = self
            .limiter
            .take()
            .expect("a permit holds its limiter until now");
        (limiter, self.per_ip_counted.then_some(self.ip))
    }
}

/// One connection's place under its listener's limits; given back when dropped (the session
/// ends, or a pending connection is dropped).
pub struct ConnectionPermit {
    /// Taken only by `into_parts`, which consumes the permit.
    limiter: Option<Arc<Limiter>>,
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

impl Limiter {
    /// Gives back one admission; `counted_ip` is the address it was counted under per IP.
    pub(crate) fn release(&self, counted_ip: Option<IpAddr>) {
        if let Some(ip) = counted_ip {
            let mut per_ip = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(count) = per_ip.get_mut(&ip) {
                *count -= 1;
                if *count == 0 {
                    per_ip.remove(&ip);
                }
            }
        }
        let before = self.active.fetch_sub(1, Ordering::AcqRel);
        if before >= self.max.load(Ordering::Acquire) {
            self.waker.wake();
        }
        if before == 1 {
            self.idle.notify_waiters();
        }
    }
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        if let Some(limiter) = self.limiter.take() {
            limiter.release(self.per_ip_counted.then_some(self.ip));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(max_per_ip: usize) -> Arc<Limiter> {
        Arc::new(Limiter {
            active: AtomicUsize::new(0),
            max: AtomicUsize::new(100),
            max_per_ip: AtomicUsize::new(max_per_ip),
            per_ip: Mutex::new(HashMap::new()),
            waker: AtomicWaker::new(),
            rejected_per_ip_late: AtomicU64::new(0),
            idle: tokio::sync::Notify::new(),
        })
    }

    #[tokio::test]
    async fn wait_idle_resolves_when_the_last_permit_is_dropped() {
        let limiter = limiter(0);
        limiter.wait_idle().await;
        let first = limiter.admit(None).unwrap();
        let second = limiter.admit(None).unwrap();
        let waiting = tokio::spawn({
            let limiter = limiter.clone();
            async move { limiter.wait_idle().await }
        });
        drop(first);
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "one permit is still held");
        drop(second);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .expect("woken by the last permit")
            .unwrap();
    }

    #[test]
    fn a_permit_admitted_without_an_address_counts_the_one_named_later() {
        let limiter = limiter(1);
        let client: IpAddr = "192.0.2.1".parse().unwrap();
        let mut first = limiter.admit(None).unwrap();
        let mut second = limiter.admit(None).unwrap();
        assert!(first.count_ip(client));
        assert!(!second.count_ip(client), "over the per-IP limit");
        assert!(
            second.count_ip("192.0.2.2".parse().unwrap()),
            "another client has room"
        );
        assert_eq!(limiter.rejected_per_ip_late.load(Ordering::Relaxed), 1);
        drop(first);
        let mut third = limiter.admit(None).unwrap();
        assert!(third.count_ip(client), "the slot came back with the permit");
        drop((second, third));
        assert!(limiter.per_ip.lock().unwrap().is_empty());
        assert_eq!(limiter.active.load(Ordering::Relaxed), 0);
    }
}
