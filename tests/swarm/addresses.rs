//! Peers bound to all interfaces (`0.0.0.0`, `[::]`) learn the address
//! others see them at, announce it, and derive their ids from it.

use super::*;

/// Three peers bound to all interfaces (IPv4, and dual-stack IPv6 reached
/// over IPv4 and over IPv6): the first learns its address from its first
/// contact, the others from their bootstrap; all sends arrive, ids follow
/// the addresses, and each peer says it is public.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_bound_to_all_interfaces_announce_where_they_are_seen() {
    let key = SwarmKey::generate().unwrap();
    for (any, contact_ip, keyed) in [
        ("0.0.0.0:0", "127.0.0.1", false),
        ("[::]:0", "127.0.0.1", false),
        ("[::]:0", "::1", false),
        ("0.0.0.0:0", "127.0.0.1", true),
    ] {
        let cfg = if keyed {
            fast().swarm_key(key.clone())
        } else {
            fast()
        };
        let any: SocketAddr = any.parse().unwrap();
        let ip: std::net::IpAddr = contact_ip.parse().unwrap();
        let mut peers = Vec::new();
        for _ in 0..3 {
            let mut p = SwarmPeer::with_config(cfg.clone(), Hooks::new());
            p.bind(any).await.expect("bind to all interfaces");
            assert_eq!(
                p.nat_status().unwrap(),
                cicada::NatStatus::Unknown,
                "nobody has seen it yet"
            );
            peers.push(p);
        }
        let port = |p: &SwarmPeer| p.local_addr().unwrap().udp().unwrap().port();
        let contact = SocketAddr::new(ip, port(&peers[0]));
        for p in &peers[1..] {
            p.connect(contact, Duration::from_secs(5))
                .await
                .unwrap_or_else(|e| panic!("{any} via {ip}: join: {e}"));
        }
        settle(&peers).await;
        for p in &peers {
            let me = p.me().unwrap();
            assert_eq!(
                me.addr.udp(),
                Some(SocketAddr::new(ip, port(p))),
                "{any} via {ip}: announces where it is seen"
            );
            assert_eq!(
                me.id,
                Hash::of(me.addr.to_string()),
                "id follows the address"
            );
            assert_eq!(p.peers().await.unwrap().len(), 2, "{any} via {ip}");
        }
        // All pairs, by the learned addresses.
        for (i, from) in peers.iter().enumerate() {
            for (j, to) in peers.iter().enumerate() {
                if i != j {
                    from.send(to.listener().unwrap(), format!("{i}>{j}").into_bytes())
                        .await
                        .unwrap_or_else(|e| panic!("{any} via {ip}: send {i}>{j}: {e}"));
                }
            }
        }
        for (j, p) in peers.iter().enumerate() {
            let mut got = Vec::new();
            while let Some(Received { data: d, .. }) =
                p.recv_timeout(Duration::from_millis(300)).await.unwrap()
            {
                got.push(String::from_utf8_lossy(&d).to_string());
            }
            got.sort();
            let want: Vec<String> = (0..3)
                .filter(|i| *i != j)
                .map(|i| format!("{i}>{j}"))
                .collect();
            assert_eq!(got, want, "{any} via {ip}");
        }
        // The joiners asked their bootstrap: they know they are public.
        for p in &peers[1..] {
            assert!(
                matches!(p.nat_status().unwrap(), cicada::NatStatus::Public { addr } if addr == p.listener().unwrap().udp().unwrap()),
                "{any} via {ip}: {:?}",
                p.nat_status()
            );
        }
        for p in &peers {
            p.close().await;
        }
    }
}

/// `connect` to an address of the other family than the socket's fails at
/// once with `Error::AddressFamily`, not after a join timeout; a
/// dual-stack `[::]` socket reaches both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_across_address_families_is_refused_clearly() {
    let mut v4 = SwarmPeer::with_config(fast(), Hooks::new());
    v4.bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let started = Instant::now();
    let e = v4
        .connect(
            "[::1]:9".parse::<SocketAddr>().unwrap(),
            Duration::from_secs(5),
        )
        .await
        .expect_err("an IPv4 socket cannot join over IPv6");
    assert!(matches!(e, Error::AddressFamily { .. }), "{e}");
    assert!(e.to_string().contains("IPv4 and IPv6 do not mix"), "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "refused at once"
    );
    if require::or_skip(
        Need::Ipv6,
        "connect_across_address_families_is_refused_clearly",
        std::net::UdpSocket::bind("[::1]:0")
            .map(drop)
            .map_err(|e| e.to_string()),
    )
    .is_none()
    {
        return;
    }
    let mut v6 = SwarmPeer::with_config(fast(), Hooks::new());
    v6.bind("[::1]:0".parse().unwrap()).await.unwrap();
    let e = v6
        .connect(
            "127.0.0.1:9".parse::<SocketAddr>().unwrap(),
            Duration::from_secs(5),
        )
        .await
        .expect_err("a socket bound to ::1 cannot join over IPv4");
    assert!(matches!(e, Error::AddressFamily { .. }), "{e}");
    // Dual-stack: the attempt is made (and fails on its own: nobody there).
    let mut any = SwarmPeer::with_config(fast(), Hooks::new());
    any.bind("[::]:0".parse().unwrap()).await.unwrap();
    let e = any
        .connect(
            "127.0.0.1:9".parse::<SocketAddr>().unwrap(),
            Duration::from_secs(5),
        )
        .await
        .expect_err("nobody listens on port 9");
    assert!(!matches!(e, Error::AddressFamily { .. }), "{e}");
}

/// `observe` asks any peer (here one of another swarm) where it sees this
/// one; nobody there is a timeout. The answer counts towards the NAT status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observe_asks_any_peer_where_it_sees_this_one() {
    let mut a = SwarmPeer::with_config(fast(), Hooks::new());
    a.bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let mut b = SwarmPeer::with_config(fast(), Hooks::new());
    b.bind("0.0.0.0:0".parse().unwrap()).await.unwrap();
    let b_port = b.local_addr().unwrap().udp().unwrap().port();
    let seen = b
        .observe(a.listener().unwrap(), Duration::from_secs(5))
        .await
        .expect("a answers");
    assert_eq!(
        seen.udp(),
        Some(SocketAddr::from(([127, 0, 0, 1], b_port))),
        "a sees b at loopback and b's port"
    );
    assert!(
        matches!(b.nat_status().unwrap(), cicada::NatStatus::Public { addr } if addr.port() == b_port),
        "{:?}",
        b.nat_status()
    );
    let nobody = UdpSocket::bind("127.0.0.1:0").unwrap();
    let started = Instant::now();
    let e = b
        .observe(nobody.local_addr().unwrap(), Duration::from_millis(500))
        .await
        .expect_err("nobody answers");
    assert!(
        matches!(e, Error::Timeout { op: Operation::Observe, after } if after == Duration::from_millis(500)),
        "{e}"
    );
    assert_eq!(e.to_string(), "observe timed out after 500ms");
    assert!(started.elapsed() < Duration::from_secs(3));
}
