//! The DHT store through `SwarmPeer`, over UDP on loopback: put and get,
//! signed values, listen, topics, and a read after the key's owner left.
//! Every wait is bounded.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use cicada::{Error, Hash, Hooks, PeerConfig, SwarmPeer};

fn fast() -> PeerConfig {
    PeerConfig::default()
        .stabilize_interval(Duration::from_millis(200))
        .request_timeout(Duration::from_millis(100))
        .lookup_timeout(Duration::from_secs(3))
}

async fn swarm(n: usize) -> Vec<SwarmPeer> {
    let local: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let mut peers: Vec<SwarmPeer> = Vec::new();
    for _ in 0..n {
        let mut p = SwarmPeer::with_config(fast(), Hooks::new());
        p.bind(local).await.expect("bind");
        if let Some(first) = peers.first() {
            p.connect(first.listener().unwrap(), Duration::from_secs(5))
                .await
                .expect("connect");
        }
        peers.push(p);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let mut ok = true;
        for p in &peers {
            ok &= p.peers().await.map_or(0, |v| v.len()) >= n - 1;
        }
        if ok {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    peers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_get_signed_listen_and_topics_over_udp() {
    let peers = swarm(6).await;
    let key = Hash::of("greeting");
    peers[1]
        .put(key, b"hello".to_vec(), Duration::ZERO)
        .await
        .expect("put");
    let got = peers[4].get(key).await.expect("get");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].value, b"hello");
    assert!(peers[4].get(Hash::of("nothing")).await.unwrap().is_empty());

    // Signed: a listener sees each version once; an old one is refused.
    let secret = [5u8; 32];
    let skey = cicada::chord::store::signed_key(&cicada::chord::store::public_key(&secret), b"");
    let mut updates = peers[3].listen(skey).await.expect("listen");
    tokio::time::sleep(Duration::from_millis(500)).await;
    for seq in 1..=3 {
        let k = peers[2]
            .put_signed(&secret, b"", seq, format!("v{seq}"), Some(seq - 1))
            .await
            .expect("put_signed");
        assert_eq!(k, skey);
    }
    match peers[2].put_signed(&secret, b"", 1, "old", None).await {
        Err(Error::StoreRefused(cicada::chord::store::Refused::Stale)) => {}
        other => panic!("{other:?}"),
    }
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let r = tokio::time::timeout(Duration::from_secs(5), updates.recv())
            .await
            .expect("an update in time")
            .expect("open");
        seen.push(r.seq());
    }
    assert_eq!(seen, vec![1, 2, 3]);

    // Topics.
    for p in &peers[..3] {
        p.announce(b"room", Duration::from_secs(60))
            .await
            .expect("announce");
    }
    let mut found: Vec<Hash> = peers[5]
        .find(b"room")
        .await
        .expect("find")
        .iter()
        .map(|n| n.id)
        .collect();
    found.sort();
    let mut want: Vec<Hash> = peers[..3].iter().map(|p| p.hash().unwrap()).collect();
    want.sort();
    assert_eq!(found, want);

    // The owner of `key` goes: a replica still answers.
    let route = peers[0].get_route(key).await.expect("route");
    let mut rest = Vec::new();
    for p in peers {
        if Some(route.owner.id) == p.hash().ok() {
            p.close().await;
        } else {
            rest.push(p);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match rest[0].get(key).await {
            Ok(v) if v.iter().any(|r| r.value == b"hello") => break,
            other => assert!(Instant::now() < deadline, "value lost: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
