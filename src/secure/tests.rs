//! The keyed link's state machine driven by hand: handshakes, loss,
//! reordering, replays, forgeries, restarts, floods and the bounds.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::*;

const A: u32 = 1;
const B: u32 = 2;

fn key(b: u8) -> SwarmKey {
    SwarmKey::from_bytes([b; SWARM_KEY_LEN])
}

fn cfg() -> SecureConfig {
    SecureConfig::default()
}

/// Cores on a virtual network of `u32` addresses, in virtual time.
struct Net {
    now: Instant,
    cores: HashMap<u32, SecureCore<u32>>,
    /// Datagrams on the wire: (from, to, bytes).
    wire: Vec<(u32, u32, Vec<u8>)>,
    /// Delivered plaintexts: (to, from, bytes).
    got: Vec<(u32, u32, Vec<u8>)>,
}

impl Net {
    fn new() -> Net {
        Net {
            now: Instant::now(),
            cores: HashMap::new(),
            wire: Vec::new(),
            got: Vec::new(),
        }
    }

    fn add(&mut self, addr: u32, k: SwarmKey, c: SecureConfig, wall: u64) {
        self.cores
            .insert(addr, SecureCore::new(k, c, wall, self.now));
    }

    fn core(&mut self, a: u32) -> &mut SecureCore<u32> {
        self.cores.get_mut(&a).expect("core")
    }

    /// Moves what every core wants sent onto the wire.
    fn collect(&mut self) {
        for (&from, c) in self.cores.iter_mut() {
            while let Some((to, d)) = c.poll_transmit() {
                self.wire.push((from, to, d));
            }
        }
    }

    fn send(&mut self, from: u32, to: u32, data: &[u8]) {
        let now = self.now;
        self.core(from).send(now, &to, data).expect("send accepted");
        self.collect();
    }

    /// Delivers what is on the wire, keeping those `keep` says, until quiet.
    fn run(&mut self, mut keep: impl FnMut(&(u32, u32, Vec<u8>)) -> bool) {
        for _ in 0..100 {
            self.collect();
            let wire = std::mem::take(&mut self.wire);
            if wire.is_empty() {
                return;
            }
            for d in wire {
                if !keep(&d) {
                    continue;
                }
                let (from, to, bytes) = d;
                let now = self.now;
                if let Some(c) = self.cores.get_mut(&to) {
                    if let Some(p) = c.handle_datagram(now, &from, &bytes) {
                        self.got.push((to, from, p));
                    }
                }
            }
        }
        panic!("the network never went quiet");
    }

    fn deliver_all(&mut self) {
        self.run(|_| true);
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
        let now = self.now;
        for c in self.cores.values_mut() {
            if c.poll_timeout() <= now {
                c.handle_timeout(now);
            }
        }
        self.collect();
    }

    fn received(&self, to: u32) -> Vec<Vec<u8>> {
        self.got
            .iter()
            .filter(|(t, _, _)| *t == to)
            .map(|(_, _, p)| p.clone())
            .collect()
    }
}

fn pair() -> Net {
    let mut n = Net::new();
    n.add(A, key(7), cfg(), 1_000);
    n.add(B, key(7), cfg(), 2_000);
    n
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn a_handshake_then_sealed_datagrams_both_ways() {
    let mut n = pair();
    n.send(A, B, b"first secret");
    n.send(A, B, b"second secret");
    // One Init on the wire; the datagrams wait for the handshake.
    assert_eq!(n.wire.len(), 1);
    assert_eq!(n.wire[0].2.len(), INIT_LEN);
    let mut seen = Vec::new();
    n.run(|d| {
        seen.push(d.clone());
        true
    });
    assert_eq!(
        n.received(B),
        vec![b"first secret".to_vec(), b"second secret".to_vec()]
    );
    let response = seen.iter().find(|d| d.0 == B).expect("a response");
    assert_eq!(response.2.len(), RESPONSE_LEN);
    assert!(response.2.len() <= seen[0].2.len(), "no amplification");
    for (_, _, bytes) in &seen {
        assert!(!contains(bytes, b"secret"), "plaintext on the wire");
    }
    let data: Vec<_> = seen.iter().filter(|d| d.0 == A && d.2[0] == 3).collect();
    assert_eq!(data[0].2.len(), b"first secret".len() + DATA_OVERHEAD);
    n.send(B, A, b"reply");
    n.deliver_all();
    assert_eq!(n.received(A), vec![b"reply".to_vec()]);
    let (sa, sb) = (n.core(A).stats(), n.core(B).stats());
    assert_eq!(sa.handshakes_initiated, 1);
    assert_eq!(sa.handshakes_completed, 1);
    assert_eq!(sb.handshakes_answered, 1);
    assert_eq!(
        sb.handshakes_initiated, 0,
        "B answers with the session A made"
    );
    assert_eq!((sa.sessions, sb.sessions), (1, 1));
    assert_eq!(sb.datagrams_opened, 2);
}

#[test]
fn another_key_cannot_handshake_read_or_inject() {
    let mut n = Net::new();
    n.add(A, key(7), cfg(), 1);
    n.add(B, key(8), cfg(), 2);
    n.send(A, B, b"hello");
    n.deliver_all();
    let sb = n.core(B).stats();
    assert_eq!(sb.dropped_bad_mac, 1);
    assert_eq!(sb.handshakes_answered, 0);
    assert_eq!(sb.peers, 0, "a failed Init leaves no state");
    // A retries, then gives up and drops what it queued.
    for _ in 0..DEFAULT_HANDSHAKE_ATTEMPTS + 1 {
        n.advance(DEFAULT_HANDSHAKE_RETRY);
        n.deliver_all();
    }
    let sa = n.core(A).stats();
    assert_eq!(
        sa.handshake_retries,
        u64::from(DEFAULT_HANDSHAKE_ATTEMPTS) - 1
    );
    assert_eq!(sa.handshakes_failed, 1);
    assert_eq!(sa.dropped_handshake_failed, 1);
    assert_eq!(sa.peers, 0);
    assert_eq!(
        n.core(B).stats().dropped_bad_mac,
        u64::from(DEFAULT_HANDSHAKE_ATTEMPTS)
    );
    assert!(n.got.is_empty());
}

#[test]
fn forged_tampered_replayed_and_stray_datagrams_are_counted() {
    let mut n = pair();
    n.send(A, B, b"one");
    let mut data = Vec::new();
    let mut init = None;
    n.run(|d| {
        if d.2[0] == 3 && d.0 == A {
            data.push(d.2.clone());
        }
        if d.2[0] == 1 {
            init = Some(d.2.clone());
        }
        true
    });
    let (data, init) = (data[0].clone(), init.expect("an init"));
    let now = n.now;
    let b = n.core(B);
    // The same datagram again: a replay.
    assert_eq!(b.handle_datagram(now, &A, &data), None);
    assert_eq!(b.stats().dropped_replay, 1);
    // The Init again, from A or from anyone: a replay, no DH, no answer.
    assert_eq!(b.handle_datagram(now, &A, &init), None);
    assert_eq!(b.handle_datagram(now, &99, &init), None);
    assert_eq!(b.stats().dropped_replay, 3);
    assert_eq!(b.stats().handshakes_answered, 1);
    assert!(b.poll_transmit().is_none());
    // One bit flipped in the ciphertext (a fresh nonce so the window passes).
    let mut t = data.clone();
    t[5..13].copy_from_slice(&7u64.to_be_bytes());
    assert_eq!(b.handle_datagram(now, &A, &t), None);
    assert_eq!(b.stats().dropped_bad_mac, 1);
    // The right index from another address: not that peer's session.
    assert_eq!(b.handle_datagram(now, &3, &data), None);
    // An index nobody has.
    let mut u = data.clone();
    u[1..5].copy_from_slice(&0xdead_beefu32.to_be_bytes());
    assert_eq!(b.handle_datagram(now, &A, &u), None);
    assert_eq!(b.stats().dropped_unknown_session, 2);
    // Garbage, truncated, and a plain Cicada datagram.
    for g in [
        &b""[..],
        &[9, 9, 9],
        &data[..20],
        &init[..40],
        &[0xC1, 0xCA, 1, 1],
    ] {
        assert_eq!(b.handle_datagram(now, &A, g), None);
    }
    let s = b.stats();
    assert_eq!(s.dropped_malformed, 4);
    assert_eq!(s.dropped_unkeyed, 1);
    assert_eq!(s.datagrams_opened, 1);
    // Still working.
    n.send(A, B, b"two");
    n.deliver_all();
    assert_eq!(n.received(B), vec![b"one".to_vec(), b"two".to_vec()]);
}

/// A run sealed in one call (for a segmented send) opens in one call (as a
/// coalesced receive hands it over), in place: each datagram the overhead
/// longer on the wire, the plaintexts back to back at one stride after;
/// one that fails (tampered, replayed) is dropped and counted and the
/// others close up behind it.
#[test]
fn runs_are_sealed_and_opened_whole() {
    let mut n = pair();
    let mut out = Vec::new();
    let now = n.now;
    // No session yet: nothing sealed, for the caller to send one by one.
    assert!(!n.core(A).seal_segments(now, &B, b"abcdef", 3, &mut out));
    assert!(out.is_empty());
    n.send(A, B, b"hello");
    n.deliver_all();
    assert_eq!(n.received(B), vec![b"hello".to_vec()]);

    // Five datagrams of 100 bytes, the last of 40.
    let plain: Vec<u8> = (0..440u32).map(|i| (i * 7) as u8).collect();
    let chunks: Vec<&[u8]> = plain.chunks(100).collect();
    let a = n.core(A);
    assert!(!a.seal_segments(now, &B, &plain, MAX_PLAINTEXT + 1, &mut out));
    assert!(!a.seal_segments(now, &B, b"", 100, &mut out));
    assert!(a.seal_segments(now, &B, &plain, 100, &mut out));
    let stride = 100 + DATA_OVERHEAD;
    assert_eq!(out.len(), 440 + 5 * DATA_OVERHEAD);
    assert!(!contains(&out, &plain[..16]), "plaintext on the wire");
    // Each datagram of the run is an ordinary one.
    let sealed = out.clone();
    let mut b_again = SecureCore::new(key(7), cfg(), 3_000, now);
    assert_eq!(
        b_again.handle_datagram(now, &A, &sealed[..stride]),
        None,
        "a core without the session opens nothing"
    );

    // Opened whole, in place.
    let mut buf = vec![0u8; 4096];
    buf[..sealed.len()].copy_from_slice(&sealed);
    let mut scratch = Vec::new();
    let b = n.core(B);
    let (len, plain_stride) = b.open_run(now, &A, &mut buf, sealed.len(), stride, &mut scratch);
    assert_eq!((len, plain_stride), (440, 100));
    assert_eq!(&buf[..len], &plain[..]);
    assert_eq!(b.stats().datagrams_opened, 6);

    // Two of that run replayed, then a fresh run with its third tampered:
    // only the four fresh ones that authenticate come out, closed up.
    let mut run = sealed[..2 * stride].to_vec();
    assert!(n.core(A).seal_segments(now, &B, &plain, 100, &mut run));
    run[4 * stride + 20] ^= 1;
    buf[..run.len()].copy_from_slice(&run);
    let b = n.core(B);
    let (len, _) = b.open_run(now, &A, &mut buf, run.len(), stride, &mut scratch);
    let want: Vec<u8> = [chunks[0], chunks[1], chunks[3], chunks[4]].concat();
    assert_eq!(len, want.len());
    assert_eq!(&buf[..len], &want[..]);
    let s = b.stats();
    assert_eq!((s.dropped_bad_mac, s.dropped_replay), (1, 2));
    assert_eq!(s.datagrams_opened, 10);

    // A plaintext buffer too short for a datagram: dropped and counted,
    // nothing written out of bounds.
    let mut one = Vec::new();
    assert!(n
        .core(A)
        .seal_segments(now, &B, &plain[..100], 100, &mut one));
    let mut short = [0u8; 50];
    let b = n.core(B);
    assert_eq!(b.handle_datagram_into(now, &A, &one, &mut short), None);
    assert_eq!(b.stats().dropped_malformed, 1);
}

#[test]
fn reordered_datagrams_are_each_delivered_once() {
    let mut n = pair();
    n.send(A, B, b"warm up");
    n.deliver_all();
    for i in 0..50u32 {
        n.send(A, B, &i.to_be_bytes());
    }
    n.wire.reverse();
    let dup = n.wire[10].clone();
    n.wire.push(dup);
    n.deliver_all();
    let mut got: Vec<u32> = n.received(B)[1..]
        .iter()
        .map(|p| u32::from_be_bytes(p[..4].try_into().unwrap()))
        .collect();
    assert_eq!(got.len(), 50);
    got.sort();
    assert_eq!(got, (0..50).collect::<Vec<_>>());
    assert_eq!(n.core(B).stats().dropped_replay, 1);
}

#[test]
fn lost_inits_and_responses_are_retried() {
    let mut n = pair();
    n.send(A, B, b"x");
    // Lose the first Init, then the first Response.
    let mut lost_init = false;
    n.run(|d| {
        let lose = d.2[0] == 1 && !lost_init;
        lost_init |= lose;
        !lose
    });
    assert!(n.got.is_empty());
    n.advance(DEFAULT_HANDSHAKE_RETRY);
    let mut lost_resp = false;
    n.run(|d| {
        let lose = d.2[0] == 2 && !lost_resp;
        lost_resp |= lose;
        !lose
    });
    assert!(lost_init && lost_resp && n.got.is_empty());
    n.advance(DEFAULT_HANDSHAKE_RETRY);
    n.deliver_all();
    assert_eq!(n.received(B), vec![b"x".to_vec()]);
    let sa = n.core(A).stats();
    assert_eq!(sa.handshake_retries, 2);
    assert_eq!(sa.handshakes_completed, 1);
    // B answered two Inits; the session of the lost Response is never used.
    assert_eq!(n.core(B).stats().handshakes_answered, 2);
}

#[test]
fn both_sides_initiating_at_once_still_talk() {
    let mut n = pair();
    n.send(A, B, b"from a");
    n.send(B, A, b"from b");
    assert_eq!(n.wire.len(), 2, "two Inits cross");
    n.deliver_all();
    assert_eq!(n.received(B), vec![b"from a".to_vec()]);
    assert_eq!(n.received(A), vec![b"from b".to_vec()]);
    for i in 0..10u8 {
        n.send(A, B, &[b'a', i]);
        n.send(B, A, &[b'b', i]);
        n.deliver_all();
    }
    assert_eq!(n.received(B).len(), 11);
    assert_eq!(n.received(A).len(), 11);
    let (sa, sb) = (n.core(A).stats(), n.core(B).stats());
    assert_eq!(sa.dropped_unknown_session + sb.dropped_unknown_session, 0);
}

#[test]
fn a_restarted_peer_handshakes_again_and_replaces_the_old_session() {
    let mut n = pair();
    n.send(A, B, b"before");
    n.send(B, A, b"before too");
    n.deliver_all();
    // B restarts: a new core at the same address, its clock later.
    n.add(B, key(7), cfg(), 3_000_000_000);
    n.send(B, A, b"after restart");
    n.deliver_all();
    assert_eq!(n.received(A).last().unwrap(), b"after restart");
    n.send(A, B, b"to the new b");
    n.deliver_all();
    assert_eq!(n.received(B).last().unwrap(), b"to the new b");

    // B restarts again, and this time only A talks: B does not know A's
    // index, answers with a handshake of its own, and A's next datagram
    // goes under it.
    n.add(B, key(7), cfg(), 6_000_000_000);
    n.send(A, B, &[b'z'; 64]);
    n.deliver_all();
    let sb = n.core(B).stats();
    assert_eq!(sb.dropped_unknown_session, 1);
    assert_eq!(sb.handshakes_completed, 1);
    n.send(A, B, b"after the second restart");
    n.deliver_all();
    assert_eq!(n.received(B).last().unwrap(), b"after the second restart");
}

#[test]
fn a_short_datagram_under_an_unknown_index_draws_nothing() {
    let mut n = pair();
    let mut d = vec![3u8; DATA_OVERHEAD];
    d[1..5].copy_from_slice(&5u32.to_be_bytes());
    let now = n.now;
    assert_eq!(n.core(B).handle_datagram(now, &A, &d), None);
    assert!(n.core(B).poll_transmit().is_none(), "no amplification");
    // A large one draws one Init, no larger than it.
    let big = vec![3u8; INIT_LEN];
    n.core(B).handle_datagram(now, &9, &big);
    let (_, init) = n.core(B).poll_transmit().expect("an init");
    assert!(init.len() <= big.len());
    // And not again within the retry period, and never retried.
    n.core(B).handle_datagram(now, &9, &big);
    assert!(n.core(B).poll_transmit().is_none());
    for _ in 0..DEFAULT_HANDSHAKE_ATTEMPTS {
        n.advance(DEFAULT_HANDSHAKE_RETRY);
    }
    assert!(n.wire.iter().all(|d| d.1 != 9), "the Init was retried");
    assert_eq!(n.core(B).stats().peers, 0, "the stranger is forgotten");
}

#[test]
fn a_flood_of_inits_costs_at_most_the_handshake_budget() {
    let mut n = Net::new();
    let c = SecureConfig {
        handshake_rate: 10,
        handshake_burst: 5,
        ..cfg()
    };
    n.add(B, key(7), c, 0);
    // 200 valid Inits from 200 addresses (an insider's flood, or replays
    // the seen-key cache cannot know), all at once.
    let now = n.now;
    let mut inits = Vec::new();
    for i in 0..200u32 {
        let mut c = SecureCore::new(key(7), cfg(), 0, now);
        c.send(now, &B, b"x").unwrap();
        let (_, init) = c.poll_transmit().unwrap();
        inits.push((1000 + i, init));
    }
    for (from, init) in &inits {
        n.core(B).handle_datagram(now, from, init);
    }
    let s = n.core(B).stats();
    assert_eq!(s.handshakes_answered, 5);
    assert_eq!(s.dropped_rate_limited, 195);
    // One second later, ten more.
    let later = now + Duration::from_secs(1);
    let mut more = Vec::new();
    for i in 0..50u32 {
        let mut c = SecureCore::new(key(7), cfg(), 0, now);
        c.send(now, &B, b"x").unwrap();
        more.push((5000 + i, c.poll_transmit().unwrap().1));
    }
    for (from, init) in &more {
        n.core(B).handle_datagram(later, from, init);
    }
    assert_eq!(n.core(B).stats().handshakes_answered, 10);
    // Inits under another key never reach the budget.
    let mut c = SecureCore::new(key(1), cfg(), 0, now);
    c.send(now, &B, b"x").unwrap();
    let bad = c.poll_transmit().unwrap().1;
    for i in 0..100u32 {
        n.core(B).handle_datagram(later, &(9000 + i), &bad);
    }
    let s = n.core(B).stats();
    assert_eq!(s.dropped_bad_mac, 100);
    assert_eq!(s.dropped_rate_limited, 195 + 45);
}

#[test]
fn the_peer_table_and_the_queues_are_bounded() {
    let mut n = Net::new();
    let c = SecureConfig {
        max_peers: 8,
        queue_per_peer: 3,
        queue_bytes: 100,
        ..cfg()
    };
    n.add(A, key(7), c, 0);
    let now = n.now;
    // Sends to 20 silent addresses: at most 8 tracked.
    for to in 100..120u32 {
        let _ = n.core(A).send(now, &to, b"hi");
    }
    let s = n.core(A).stats();
    assert_eq!(s.peers, 8);
    assert_eq!(s.peers_evicted, 12);
    assert_eq!(s.dropped_handshake_failed, 12);
    // A fourth datagram for one peer is refused, and bytes are capped.
    assert_eq!(n.core(A).send(now, &119, b"2"), Ok(()));
    assert_eq!(n.core(A).send(now, &119, b"3"), Ok(()));
    assert_eq!(n.core(A).send(now, &119, b"4"), Err(SendRefused::QueueFull));
    assert_eq!(
        n.core(A).send(now, &118, &[0u8; 100]),
        Err(SendRefused::QueueFull)
    );
    assert_eq!(
        n.core(A).send(now, &118, &vec![0u8; MAX_PLAINTEXT + 1]),
        Err(SendRefused::TooLarge)
    );
    let s = n.core(A).stats();
    assert_eq!((s.dropped_queue_full, s.dropped_too_large), (2, 1));
}

#[test]
fn idle_peers_are_forgotten_and_talk_again_after_a_new_handshake() {
    let mut n = pair();
    n.send(A, B, b"one");
    n.deliver_all();
    n.advance(DEFAULT_IDLE_TIMEOUT + Duration::from_secs(2));
    assert_eq!(n.core(A).stats().peers, 0);
    assert_eq!(n.core(B).stats().peers_expired, 1);
    n.send(A, B, b"two");
    n.deliver_all();
    assert_eq!(n.received(B), vec![b"one".to_vec(), b"two".to_vec()]);
    assert_eq!(n.core(A).stats().handshakes_completed, 2);
}

/// The datagrams dropped or delivered, summed: each datagram handled adds
/// exactly one (handshake messages that succeed add to their own counters).
fn outcomes(s: &SecureStats) -> u64 {
    s.dropped_malformed
        + s.dropped_unkeyed
        + s.dropped_bad_mac
        + s.dropped_replay
        + s.dropped_unknown_session
        + s.dropped_rate_limited
        + s.datagrams_opened
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

    /// A run of anything, at any length and stride (a length past the
    /// buffer, a stride of 0 or past the run), mixed with real sealed
    /// datagrams: `open_run` never panics, never reports more than the
    /// run held, and delivers exactly the real datagrams it was given, in
    /// order, each once.
    #[test]
    fn hostile_runs_never_panic_and_deliver_only_what_was_sealed(
        junk in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600),
        real in 0usize..4,
        len_extra in 0usize..50,
        stride in 0usize..300,
    ) {
        let mut n = pair();
        n.send(A, B, b"warm up");
        n.deliver_all();
        let now = n.now;
        // `real` sealed datagrams of 40 bytes (69 on the wire), then junk.
        let plain: Vec<u8> = (0..40 * real).map(|i| i as u8).collect();
        let mut buf = Vec::new();
        if real > 0 {
            proptest::prop_assert!(n.core(A).seal_segments(now, &B, &plain, 40, &mut buf));
        }
        buf.extend_from_slice(&junk);
        let len = buf.len() + len_extra;
        let mut scratch = Vec::new();
        let before = n.core(B).stats().datagrams_opened;
        let (out, plain_stride) = n.core(B).open_run(now, &A, &mut buf, len, stride, &mut scratch);
        proptest::prop_assert!(out <= buf.len());
        proptest::prop_assert!(plain_stride >= 1);
        let opened = n.core(B).stats().datagrams_opened - before;
        if stride == 40 + DATA_OVERHEAD {
            // The real ones line up with the stride: all of them come out.
            proptest::prop_assert_eq!(opened as usize, real);
            proptest::prop_assert_eq!(&buf[..out], &plain[..]);
        } else {
            // Otherwise only what lines up can open, never more than sent.
            proptest::prop_assert!(opened as usize <= real);
            proptest::prop_assert!(out <= plain.len());
        }
    }

    /// Arbitrary datagrams, and real ones with a byte changed or cut short,
    /// from arbitrary addresses, between working traffic: no panic, each
    /// counted exactly once, nothing delivered that was not sent, and the
    /// pair still talks afterwards.
    #[test]
    fn hostile_datagrams_never_panic_and_are_each_counted_once(
        ops in proptest::collection::vec(
            (0u8..4, proptest::collection::vec(proptest::prelude::any::<u8>(), 0..100),
             0usize..200, proptest::prelude::any::<u8>(), 1u32..4),
            1..40,
        )
    ) {
        let mut n = pair();
        n.send(A, B, b"warm up");
        let mut real = Vec::new();
        n.run(|d| { real.push(d.2.clone()); true });
        for (kind, bytes, at, byte, from) in ops {
            let mut d = match kind {
                0 => bytes,
                1 => {
                    let mut d = bytes;
                    d.insert(0, [1u8, 2, 3, 0xC1][at % 4]);
                    d.resize([INIT_LEN, RESPONSE_LEN, DATA_OVERHEAD + 5, 8][at % 4], 0);
                    d
                }
                _ => real[at % real.len()].clone(),
            };
            if kind == 2 && !d.is_empty() {
                let i = at % d.len();
                d[i] ^= byte.max(1);
            } else if kind == 3 {
                d.truncate(at % (d.len() + 1));
            }
            let now = n.now;
            let before = outcomes(&n.core(B).stats());
            let got = n.core(B).handle_datagram(now, &from, &d);
            let after = n.core(B).stats();
            proptest::prop_assert_eq!(outcomes(&after), before + 1, "{:?}", after);
            proptest::prop_assert!(got.is_none(), "delivered {:?}", got);
            while n.core(B).poll_transmit().is_some() {}
        }
        n.send(A, B, b"still working");
        n.deliver_all();
        let last = n.received(B).last().cloned();
        proptest::prop_assert_eq!(last, Some(b"still working".to_vec()));
    }
}

/// A peer's entry in the keyed core's table stays small: sessions and
/// handshakes are boxed, so empty slots of the table and absent sessions
/// cost a pointer. Inline they made an entry 2,152 bytes, and a keyed peer
/// of a 1,000-peer swarm held about 200 KB resident in its table.
#[test]
fn a_peer_table_entry_is_small() {
    let entry = std::mem::size_of::<super::core::Peer>();
    assert!(entry <= 160, "a peer entry is {entry} bytes");
    // The replay window's bitmap is not inline: a session whose datagrams
    // come in order holds none.
    let session = std::mem::size_of::<super::core::Session>();
    assert!(session <= 200, "a session is {session} bytes");
}

/// The keyed link's cipher (`ring`'s ChaCha20-Poly1305, `cipher.rs`)
/// and snow's RustCrypto one (snow's default) are the
/// same cipher on the wire: peers built with either complete a handshake
/// and read each other's datagrams both ways, so a swarm may mix them.
#[test]
fn the_ring_cipher_and_the_rustcrypto_one_talk() {
    use snow::resolvers::DefaultResolver;
    let params: snow::params::NoiseParams = NOISE_PARAMS.parse().expect("params");
    let psk = [7u8; 32];
    let build = |ring: bool| {
        let b = if ring {
            snow::Builder::with_resolver(params.clone(), Box::new(super::cipher::Resolver))
        } else {
            snow::Builder::with_resolver(params.clone(), Box::new(DefaultResolver))
        };
        b.psk(0, &psk)
            .expect("psk")
            .prologue(super::core::PROLOGUE)
            .expect("prologue")
    };
    for (initiator_ring, responder_ring) in [(true, false), (false, true)] {
        let mut i = build(initiator_ring).build_initiator().expect("initiator");
        let mut r = build(responder_ring).build_responder().expect("responder");
        let (mut wire, mut plain) = ([0u8; 256], [0u8; 256]);
        let n = i.write_message(b"stamp", &mut wire).expect("init");
        let m = r.read_message(&wire[..n], &mut plain).expect("init read");
        assert_eq!(&plain[..m], b"stamp");
        let n = r.write_message(&[], &mut wire).expect("response");
        i.read_message(&wire[..n], &mut plain)
            .expect("response read");
        let ti = i.into_stateless_transport_mode().expect("transport");
        let tr = r.into_stateless_transport_mode().expect("transport");
        let n = ti.write_message(5, b"one way", &mut wire).expect("seal");
        let m = tr.read_message(5, &wire[..n], &mut plain).expect("open");
        assert_eq!(&plain[..m], b"one way");
        let n = tr.write_message(9, b"and back", &mut wire).expect("seal");
        let m = ti.read_message(9, &wire[..n], &mut plain).expect("open");
        assert_eq!(&plain[..m], b"and back");
        // A flipped bit is refused by either.
        wire[3] ^= 1;
        assert!(ti.read_message(9, &wire[..n], &mut plain).is_err());
    }
}
