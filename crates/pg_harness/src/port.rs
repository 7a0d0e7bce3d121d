//! Choosing TCP ports for servers that must be told their port before they start.
//!
//! Asking the kernel for port 0 and releasing it races with every other socket that
//! binds port 0 meanwhile (daemons under test do), because the kernel hands out the
//! same ephemeral range. Ports here come from below Linux's ephemeral range
//! (32768–60999), walked from a per-process starting point so concurrent tests in
//! one process never pick the same port, and each is checked to be bindable.

use std::net::{Ipv4Addr, TcpListener};
use std::sync::atomic::{AtomicU32, Ordering};

/// The range ports are chosen from: below the kernel's ephemeral ports.
const FIRST_PORT: u32 = 20_000;
const PORT_COUNT: u32 = 12_000;
/// How many candidates to try before giving up.
const MAX_ATTEMPTS: u32 = 200;

static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);

/// A port on 127.0.0.1 that nothing listens on now and that this process has not
/// handed out before (until the range wraps). `None` if none was found.
pub fn unused_port() -> Option<u16> {
    // Start where the process id points, so test processes run one after another
    // do not walk the same ports.
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(7_919) % PORT_COUNT,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    (0..MAX_ATTEMPTS).find_map(|_| {
        let offset = NEXT.fetch_add(1, Ordering::SeqCst) % PORT_COUNT;
        let port = u16::try_from(FIRST_PORT + offset).ok()?;
        TcpListener::bind((Ipv4Addr::LOCALHOST, port))
            .ok()
            .map(|_| port)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct_bindable_and_below_the_ephemeral_range() {
        let ports: Vec<u16> = (0..50).map(|_| unused_port().unwrap()).collect();
        let mut unique = ports.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), ports.len());
        assert!(ports.iter().all(|&p| (20_000..32_000).contains(&p)));
    }
}
