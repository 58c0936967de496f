//! What the keyed link costs in CPU, measured: a whole handshake (both
//! sides), and sealing plus opening one datagram, beside two baselines of
//! the same run: bare Noise transport (snow's seal and open alone, without
//! the link's sessions, replay window and copies) and copying the datagram.
//! Run with `cargo run --release --example secure_cost`.

use std::time::Instant;

use cicada::secure::{SecureConfig, SecureCore};
use cicada::SwarmKey;

fn main() {
    let key = SwarmKey::generate().expect("OS randomness");
    let now = Instant::now();
    let cfg = SecureConfig {
        max_peers: 100_000,
        handshake_rate: u32::MAX,
        handshake_burst: u32::MAX,
        ..SecureConfig::default()
    };
    let mut a = SecureCore::new(key.clone(), cfg.clone(), 1, now);
    let mut b = SecureCore::new(key, cfg, 2, now);

    // Handshakes: A initiates to n addresses, B answers from n addresses.
    let n = 2000u32;
    let rss_before = rss();
    let t = Instant::now();
    for i in 0..n {
        a.send(now, &i, b"x").expect("queued");
        let (_, init) = a.poll_transmit().expect("an Init");
        b.handle_datagram(now, &(i + 1_000_000), &init);
        let (_, resp) = b.poll_transmit().expect("a Response");
        a.handle_datagram(now, &i, &resp);
        while a.poll_transmit().is_some() {}
    }
    let hs = t.elapsed().as_secs_f64() / f64::from(n);
    println!("{:<40} {:>10.1} us", "handshake, both sides", hs * 1e6);
    println!(
        "{:<40} {:>10.0} /s",
        "handshakes a core completes",
        1.0 / hs
    );
    // Both cores now hold n peers with one session each (A's confirmed, B's
    // waiting for a first datagram).
    if let (Some(before), Some(after)) = (rss_before, rss()) {
        println!(
            "{:<40} {:>10.0} B",
            "resident per peer with a session",
            after.saturating_sub(before) as f64 / f64::from(2 * n)
        );
    }

    // One session, datagrams of three sizes.
    let mut a = SecureCore::new(
        SwarmKey::from_bytes([1; 32]),
        SecureConfig::default(),
        1,
        now,
    );
    let mut b = SecureCore::new(
        SwarmKey::from_bytes([1; 32]),
        SecureConfig::default(),
        2,
        now,
    );
    a.send(now, &2u32, b"hello").expect("queued");
    let (_, init) = a.poll_transmit().expect("an Init");
    b.handle_datagram(now, &1, &init);
    let (_, resp) = b.poll_transmit().expect("a Response");
    a.handle_datagram(now, &2, &resp);
    let (_, first) = a.poll_transmit().expect("the queued datagram");
    assert_eq!(
        b.handle_datagram(now, &1, &first).as_deref(),
        Some(&b"hello"[..])
    );
    let (ta, tb) = bare_noise();
    println!(
        "{:<24} {:>10} {:>10} {:>8} {:>10} {:>8}",
        "seal + open", "keyed", "bare Noise", "ratio", "copy", "ratio"
    );
    for size in [64usize, 1024, 16 * 1024] {
        let payload = vec![0x5au8; size];
        let rounds: u32 = 20_000;
        let t = Instant::now();
        for _ in 0..rounds {
            a.send(now, &2u32, &payload).expect("sealed");
            let (_, d) = a.poll_transmit().expect("a datagram");
            let p = b.handle_datagram(now, &1, &d).expect("opened");
            assert_eq!(p.len(), size);
        }
        let keyed = t.elapsed().as_secs_f64() / f64::from(rounds);
        // Baseline: the two copies a plain link's path makes of the bytes.
        let t = Instant::now();
        let mut sink = 0usize;
        for _ in 0..rounds {
            let d = std::hint::black_box(payload.clone());
            let p = std::hint::black_box(d.clone());
            sink += p.len();
        }
        let copy = t.elapsed().as_secs_f64() / f64::from(rounds);
        assert_eq!(sink, size * rounds as usize);
        let (mut sealed, mut opened) = (vec![0u8; size + 16], vec![0u8; size]);
        let t = Instant::now();
        for i in 0..u64::from(rounds) {
            let n = ta.write_message(i, &payload, &mut sealed).expect("sealed");
            let m = tb
                .read_message(i, &sealed[..n], &mut opened)
                .expect("opened");
            assert_eq!(m, size);
        }
        let bare = t.elapsed().as_secs_f64() / f64::from(rounds);
        println!(
            "{:<24} {:>7.2} us {:>7.2} us {:>8.2} {:>7.2} us {:>8.1}",
            format!("{size} B"),
            keyed * 1e6,
            bare * 1e6,
            keyed / bare,
            copy * 1e6,
            keyed / copy
        );
    }
}

/// Two ends of a bare Noise session of the same protocol.
fn bare_noise() -> (snow::StatelessTransportState, snow::StatelessTransportState) {
    let params: snow::params::NoiseParams = cicada::secure::NOISE_PARAMS.parse().expect("params");
    let psk = [3u8; 32];
    let mut i = snow::Builder::new(params.clone())
        .psk(0, &psk)
        .and_then(|b| b.build_initiator())
        .expect("initiator");
    let mut r = snow::Builder::new(params)
        .psk(0, &psk)
        .and_then(|b| b.build_responder())
        .expect("responder");
    let (mut m, mut p) = ([0u8; 128], [0u8; 128]);
    let n = i.write_message(&[], &mut m).expect("message 1");
    r.read_message(&m[..n], &mut p).expect("message 1");
    let n = r.write_message(&[], &mut m).expect("message 2");
    i.read_message(&m[..n], &mut p).expect("message 2");
    (
        i.into_stateless_transport_mode().expect("transport"),
        r.into_stateless_transport_mode().expect("transport"),
    )
}

/// Resident bytes of this process (Linux), if known.
fn rss() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}
