//! Pure: counts kept by the driver, rendered as OpenMetrics text; no I/O.
//!
//! Prometheus metrics of a peer (API: [`crate::SwarmPeer::metrics`]):
//! the core's counters, the driver's, the links', rendered in the
//! OpenMetrics text format by `prometheus-client`.

use std::sync::atomic::{AtomicU64, Ordering};

use chord::{Hash, NodeRef, SendError};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::link::FlowStats;
use crate::secure::SecureStats;

/// Why sends failed, as the `reason` label of `cicada_sends_failed`: one
/// name for each [`SendError`].
pub(crate) const SEND_FAILURES: [&str; 8] = [
    "not_joined",
    "too_large",
    "overloaded",
    "no_such_node",
    "timeout",
    "left",
    "no_route",
    "receiver_busy",
];

/// `e`'s place in [`SEND_FAILURES`].
pub(crate) fn failure_index(e: &SendError) -> usize {
    match e {
        SendError::NotJoined => 0,
        SendError::TooLarge { .. } => 1,
        SendError::Overloaded => 2,
        SendError::NoSuchNode => 3,
        SendError::Timeout => 4,
        SendError::Left => 5,
        SendError::NoRoute => 6,
        SendError::ReceiverBusy => 7,
    }
}

/// The driver's counts of application calls' outcomes.
#[derive(Debug)]
pub(crate) struct Outcomes {
    /// Confirmed sends that the destination confirmed.
    pub sends_confirmed: AtomicU64,
    /// Failed sends, by [`SEND_FAILURES`].
    pub sends_failed: [AtomicU64; SEND_FAILURES.len()],
    /// User lookups answered, and their hops.
    pub lookup_hops: Histogram,
    /// User lookups that failed.
    pub lookups_failed: AtomicU64,
}

impl Default for Outcomes {
    fn default() -> Self {
        Outcomes {
            sends_confirmed: AtomicU64::new(0),
            sends_failed: Default::default(),
            // Hops: 1, 2, ... 16 (a ring of 2^32 peers takes 16 on average).
            lookup_hops: Histogram::new((1..=16).map(f64::from)),
            lookups_failed: AtomicU64::new(0),
        }
    }
}

impl Outcomes {
    pub(crate) fn send_failed(&self, e: &SendError) {
        self.sends_failed[failure_index(e)].fetch_add(1, Ordering::Relaxed);
    }
}

/// Everything a scrape shows, gathered by the peer.
pub(crate) struct Inputs<'a, A> {
    pub me: Hash,
    pub core: &'a chord::Stats,
    pub peers: &'a [NodeRef<A>],
    /// The path to each of `peers`, in the same order.
    pub paths: &'a [chord::Path],
    pub received: u64,
    pub hooks_dropped: u64,
    pub link_errors: u64,
    pub link_sends: u64,
    pub outcomes: &'a Outcomes,
    pub secure: Option<SecureStats>,
    pub flows: Option<FlowStats>,
}

type Labels = Vec<(String, String)>;

fn counter(registry: &mut Registry, name: &str, help: &str, value: u64) {
    let c = Counter::<u64>::default();
    c.inc_by(value);
    registry.register(name, help, c);
}

fn gauge(registry: &mut Registry, name: &str, help: &str, value: i64) {
    let g = Gauge::<i64>::default();
    g.set(value);
    registry.register(name, help, g);
}

/// A family of counters with one label.
fn labelled(registry: &mut Registry, name: &str, help: &str, label: &str, values: &[(&str, u64)]) {
    let f = Family::<Labels, Counter>::default();
    for (v, n) in values {
        f.get_or_create(&vec![(label.to_string(), v.to_string())])
            .inc_by(*n);
    }
    registry.register(name, help, f);
}

/// How many peers the ring has, from how close this peer's nearest
/// successors are: `k` peers within a fraction `d` of the ring make about
/// `k / d` in all.
pub(crate) fn ring_size_estimate<A>(me: Hash, peers: &[NodeRef<A>]) -> u64 {
    let top = |h: Hash| u64::from_be_bytes(h.to_bytes()[..8].try_into().unwrap_or([0; 8]));
    let mine = top(me);
    let mut ahead: Vec<u64> = peers
        .iter()
        .map(|p| top(p.id).wrapping_sub(mine))
        .filter(|d| *d > 0)
        .collect();
    ahead.sort_unstable();
    let k = ahead.len().min(8);
    if k == 0 {
        return 1;
    }
    let fraction = ahead[k - 1] as f64 / 2f64.powi(64);
    (((k as f64) / fraction).round() as u64).max(k as u64 + 1)
}

/// The OpenMetrics text of a scrape.
pub(crate) fn render<A>(i: Inputs<'_, A>) -> String {
    let mut r = Registry::with_prefix("cicada");
    let s = i.core;
    counter(&mut r, "datagrams_in", "Datagrams received", s.datagrams_in);
    counter(&mut r, "datagrams_out", "Datagrams sent", s.datagrams_out);
    counter(&mut r, "bytes_in", "Bytes received", s.bytes_in);
    counter(&mut r, "bytes_out", "Bytes sent", s.bytes_out);
    counter(
        &mut r,
        "messages_received",
        "Application messages delivered to this peer",
        i.received,
    );
    counter(
        &mut r,
        "sends_confirmed",
        "Confirmed sends the destination confirmed",
        i.outcomes.sends_confirmed.load(Ordering::Relaxed),
    );
    let failed: Vec<(&str, u64)> = SEND_FAILURES
        .iter()
        .zip(&i.outcomes.sends_failed)
        .map(|(n, c)| (*n, c.load(Ordering::Relaxed)))
        .collect();
    labelled(
        &mut r,
        "sends_failed",
        "Confirmed sends that failed, by reason",
        "reason",
        &failed,
    );
    counter(
        &mut r,
        "datagrams_sent_unconfirmed",
        "Unconfirmed datagrams sent",
        s.datagrams_sent,
    );
    counter(
        &mut r,
        "broadcasts_forwarded",
        "Broadcast datagrams sent to children",
        s.broadcast_sent,
    );
    r.register(
        "lookup_hops",
        "Hops of the lookups this peer's application made",
        i.outcomes.lookup_hops.clone(),
    );
    counter(
        &mut r,
        "lookups_failed",
        "Lookups of this peer's application that failed",
        i.outcomes.lookups_failed.load(Ordering::Relaxed),
    );
    counter(
        &mut r,
        "lookups_forwarded",
        "Lookups forwarded for others",
        s.lookups_forwarded,
    );
    gauge(
        &mut r,
        "ring_size_estimate",
        "Peers in the ring, estimated from the spacing of this peer's successors",
        ring_size_estimate(i.me, i.peers) as i64,
    );
    let neighbours = Family::<Labels, Gauge>::default();
    let count = |path: chord::Path| i.paths.iter().filter(|p| **p == path).count();
    let (punched, relayed) = (count(chord::Path::Punched), count(chord::Path::Relayed));
    for (kind, n) in [
        ("direct", i.peers.len() - punched - relayed),
        ("punched", punched),
        ("relayed", relayed),
    ] {
        neighbours
            .get_or_create(&vec![("path".to_string(), kind.to_string())])
            .set(n as i64);
    }
    r.register(
        "neighbours",
        "Peers in the routing state, by path kind",
        neighbours,
    );
    counter(
        &mut r,
        "peers_failed",
        "Peers declared dead",
        s.peers_failed,
    );
    labelled(
        &mut r,
        "dropped",
        "Datagrams or messages dropped, by reason",
        "reason",
        &[
            ("malformed", s.dropped_malformed),
            ("version", s.dropped_version),
            ("unexpected", s.dropped_unexpected),
            ("overload", s.dropped_overload),
            ("hop_limit", s.dropped_hop_limit),
            ("rate_limited", s.dropped_rate_limited),
            ("amplification", s.dropped_amplification),
            ("bad_identity", s.dropped_bad_identity),
            ("provisional", s.dropped_provisional),
            ("no_room", s.dropped_no_room),
            ("duplicate", s.duplicates_suppressed),
            ("reassembly", s.reassembly_refused),
            ("datagram", s.datagrams_dropped),
            ("hooks", i.hooks_dropped),
        ],
    );
    labelled(
        &mut r,
        "punches",
        "Hole punches, by outcome (docs/nat.md)",
        "outcome",
        &[
            ("started", s.punches_started),
            ("succeeded", s.punches_succeeded),
            ("failed", s.punches_failed),
            ("suppressed", s.punches_suppressed),
            ("introduced", s.punches_introduced),
            ("answered", s.punches_answered),
            ("relayed", s.punches_relayed),
        ],
    );
    labelled(
        &mut r,
        "relay",
        "Relays (docs/nat.md): reservations held and relays lost as a relayed peer; frames forwarded, dropped and places refused as a relay",
        "event",
        &[
            ("reserved", s.relay_reservations),
            ("lost", s.relays_lost),
            ("forwarded", s.relayed_frames),
            ("dropped", s.relay_dropped),
            ("refused", s.relay_refused),
        ],
    );
    counter(
        &mut r,
        "relayed_bytes",
        "Bytes forwarded as a relay",
        s.relayed_bytes,
    );
    counter(
        &mut r,
        "keepalives",
        "Keepalives sent on quiet punched paths",
        s.keepalives_sent,
    );
    counter(
        &mut r,
        "refused_busy",
        "Messages refused because the application had no room",
        s.refused_busy,
    );
    counter(
        &mut r,
        "link_errors",
        "Errors the link reported",
        i.link_errors,
    );
    counter(
        &mut r,
        "link_sends",
        "Sends handed to the link (a datagram or a run)",
        i.link_sends,
    );
    if let Some(k) = &i.secure {
        gauge(
            &mut r,
            "keyed_sessions",
            "Keyed sessions open",
            k.sessions as i64,
        );
        gauge(
            &mut r,
            "keyed_peers",
            "Peers the keyed link knows",
            k.peers as i64,
        );
        counter(
            &mut r,
            "keyed_handshakes_completed",
            "Keyed handshakes completed",
            k.handshakes_completed,
        );
        counter(
            &mut r,
            "keyed_handshakes_failed",
            "Keyed handshakes that failed",
            k.handshakes_failed,
        );
        labelled(
            &mut r,
            "keyed_dropped",
            "Datagrams the keyed link refused, by reason",
            "reason",
            &[
                ("malformed", k.dropped_malformed),
                ("unkeyed", k.dropped_unkeyed),
                ("bad_mac", k.dropped_bad_mac),
                ("replay", k.dropped_replay),
                ("unknown_session", k.dropped_unknown_session),
                ("rate_limited", k.dropped_rate_limited),
                ("queue_full", k.dropped_queue_full),
            ],
        );
    }
    if let Some(f) = &i.flows {
        gauge(
            &mut r,
            "ouroboros_flows_open",
            "Ouroboros flows open",
            f.open as i64,
        );
        counter(
            &mut r,
            "ouroboros_flows_allocated",
            "Ouroboros flows allocated",
            f.allocated,
        );
        counter(
            &mut r,
            "ouroboros_flows_accepted",
            "Ouroboros flows accepted",
            f.accepted,
        );
        counter(
            &mut r,
            "ouroboros_flows_alloc_failed",
            "Ouroboros flow allocations that failed",
            f.alloc_failed,
        );
        counter(
            &mut r,
            "ouroboros_dropped",
            "Datagrams the Ouroboros link dropped",
            f.dropped,
        );
    }
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = encode(&mut out, &r);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_size_estimate_is_near_the_truth_for_an_even_ring() {
        // 1,000 peers evenly spaced: the estimate from any peer is exact.
        let ids: Vec<Hash> = (0..1000u64)
            .map(|i| {
                let mut b = [0u8; 32];
                b[..8].copy_from_slice(&(i.wrapping_mul(u64::MAX / 1000)).to_be_bytes());
                Hash::from_bytes(b)
            })
            .collect();
        let peers: Vec<NodeRef<u32>> = ids[1..12].iter().map(|h| NodeRef::new(*h, 0)).collect();
        let n = ring_size_estimate(ids[0], &peers);
        assert!((990..=1010).contains(&n), "{n}");
        assert_eq!(ring_size_estimate::<u32>(ids[0], &[]), 1);
    }

    #[test]
    fn every_send_failure_has_a_name() {
        let all = [
            SendError::NotJoined,
            SendError::TooLarge { size: 1, max: 0 },
            SendError::Overloaded,
            SendError::NoSuchNode,
            SendError::Timeout,
            SendError::Left,
            SendError::NoRoute,
            SendError::ReceiverBusy,
        ];
        let mut seen: Vec<usize> = all.iter().map(failure_index).collect();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), SEND_FAILURES.len());
    }
}
