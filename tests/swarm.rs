//! Integration tests of Cicada's SwarmPeer in process: the API, its
//! promises, private swarms, the UDP link, addresses. Every wait is
//! bounded. The tests that run `cicada` processes belong to the command's
//! package (`cli/tests/processes.rs`).

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use cicada::secure::SecureConfig;
use cicada::{
    Error, Hash, Hooks, Operation, PeerConfig, Received, SendOptions, SwarmKey, SwarmPeer,
};
use ports::free_ports;
use require::Need;

#[path = "support/require.rs"]
mod require;

#[path = "support/ports.rs"]
mod ports;

#[path = "swarm/link.rs"]
mod link;

#[path = "swarm/promises.rs"]
mod promises;

#[path = "swarm/addresses.rs"]
mod addresses;

fn fast() -> PeerConfig {
    PeerConfig::default()
        .stabilize_interval(Duration::from_millis(200))
        .request_timeout(Duration::from_millis(100))
        .lookup_timeout(Duration::from_secs(3))
}

fn localhost() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

async fn bound(hooks: Hooks, cfg: PeerConfig) -> SwarmPeer {
    let mut p = SwarmPeer::with_config(cfg, hooks);
    p.bind(localhost()).await.expect("bind");
    p
}

/// `n` peers joined one by one into one swarm.
async fn swarm(n: usize, cfg: PeerConfig) -> Vec<SwarmPeer> {
    let mut peers = vec![bound(Hooks::new(), cfg.clone()).await];
    for _ in 1..n {
        let p = bound(Hooks::new(), cfg.clone()).await;
        p.connect(peers[0].listener().unwrap(), Duration::from_secs(5))
            .await
            .expect("connect");
        peers.push(p);
    }
    peers
}

async fn settle(peers: &[SwarmPeer]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let mut ok = true;
        for p in peers {
            if p.peers().await.map_or(0, |v| v.len()) < peers.len() - 1 {
                ok = false;
            }
        }
        if ok {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn calls_before_bind_are_clear_errors() {
    let p = SwarmPeer::new(Hooks::new());
    assert!(matches!(p.hash(), Err(Error::NotBound)));
    assert!(matches!(p.listener(), Err(Error::NotBound)));
    assert!(matches!(p.peers().await, Err(Error::NotBound)));
    assert!(matches!(p.recv().await, Err(Error::NotBound)));
    assert!(matches!(p.try_recv(), Err(Error::NotBound)));
    assert!(matches!(
        p.send(Hash::of("k"), &b"x"[..]).await,
        Err(Error::NotBound)
    ));
    assert!(matches!(
        p.connect(localhost(), Duration::from_secs(1)).await,
        Err(Error::NotBound)
    ));
    let unbound = SwarmPeer::new(Hooks::new());
    let mut q = bound(Hooks::new(), fast()).await;
    assert!(matches!(
        q.send(&unbound, &b"x"[..]).await,
        Err(Error::NotBound)
    ));
    assert!(matches!(
        q.bind(localhost()).await,
        Err(Error::AlreadyBound)
    ));
    q.close().await;
    p.close().await; // closing an unbound peer is harmless
}

#[tokio::test]
async fn close_releases_the_port_and_is_idempotent() {
    let p = bound(Hooks::new(), fast()).await;
    let addr = p.local_addr().unwrap().udp().unwrap();
    p.close().await;
    p.close().await;
    assert!(p.is_closed());
    assert!(matches!(p.peers().await, Err(Error::Closed)));
    assert!(matches!(p.recv().await, Err(Error::Closed)));
    let mut again = SwarmPeer::with_config(fast(), Hooks::new());
    again
        .bind(addr)
        .await
        .expect("the port is free at once after close");
    // Dropping releases it too (shortly, without waiting).
    drop(again);
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let mut third = SwarmPeer::with_config(fast(), Hooks::new());
        match third.bind(addr).await {
            Ok(()) => break,
            Err(e) if Instant::now() > deadline => panic!("port not released after drop: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// A lone call over UDP receives its own reply (and any other datagram
/// meanwhile) on its own task: the sender's background task is not woken
/// once per confirmation. Were both tasks waiting on the socket, tokio
/// would wake both, and this would count one wake-up per send.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lone_sends_do_not_wake_the_background_task() {
    // Maintenance every 30 s: nothing but the sends and their replies.
    let cfg = fast().stabilize_interval(Duration::from_secs(30));
    let a = bound(Hooks::new(), cfg.clone()).await;
    let b = bound(Hooks::new(), cfg).await;
    b.connect(a.listener().unwrap(), Duration::from_secs(5))
        .await
        .unwrap();
    let to = b.listener().unwrap();
    a.send(&to, &b"warm"[..]).await.unwrap();
    let before = a.stats().await.unwrap();
    for _ in 0..500 {
        a.send(&to, &b"x"[..]).await.unwrap();
    }
    let after = a.stats().await.unwrap();
    let replies = after.core.datagrams_in - before.core.datagrams_in;
    let wakeups = after.driver_wakeups - before.driver_wakeups;
    assert!(replies >= 500, "{replies} datagrams in for 500 sends");
    assert!(
        wakeups < 50,
        "the background task woke {wakeups} times for 500 lone sends"
    );
}

/// Up to four calls at once are lone (they run on their callers' tasks)
/// but only one at a time holds the claim to receive: the others wait
/// for replies the claimant or the background task completes. Callers
/// that come and go, with other traffic arriving meanwhile, must all
/// finish: a reply no one is woken for would hang its call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_lone_calls_share_the_claim_without_losing_a_reply() {
    let cfg = fast();
    let a = Arc::new(bound(Hooks::new(), cfg.clone()).await);
    let b = Arc::new(bound(Hooks::new(), cfg).await);
    b.connect(a.listener().unwrap(), Duration::from_secs(5))
        .await
        .unwrap();
    let (to_b, to_a) = (b.listener().unwrap(), a.listener().unwrap());
    // B's application reads what it gets (a send is confirmed only once
    // it is queued for B's application, so a queue nobody reads would
    // hold the senders back).
    let reader = {
        let b = b.clone();
        tokio::spawn(async move { while b.recv().await.is_ok() {} })
    };
    // Unconfirmed traffic towards A all along: datagrams a claimant
    // receives that answer no call.
    let noise = {
        let b = b.clone();
        tokio::spawn(async move {
            for _ in 0..2_000 {
                let _ = b.send_datagram(&to_a, &b"noise"[..]).await;
                tokio::task::yield_now().await;
            }
        })
    };
    let mut callers = Vec::new();
    for k in 0..4u32 {
        let (a, to_b) = (a.clone(), to_b.clone());
        callers.push(tokio::spawn(async move {
            for i in 0..300u32 {
                let r = tokio::time::timeout(
                    Duration::from_secs(5),
                    a.send(&to_b, format!("{k}/{i}").into_bytes()),
                )
                .await;
                match r {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => panic!("caller {k}, send {i}: {e}"),
                    Err(_) => panic!("caller {k}, send {i}: no answer in 5 s"),
                }
                if i % 10 == k {
                    // Calls that stop and start again, so that the claim
                    // changes hands in every state.
                    tokio::task::yield_now().await;
                }
            }
        }));
    }
    for c in callers {
        c.await.expect("a caller failed");
    }
    noise.await.unwrap();
    reader.abort();
}

/// A lone call receiving for itself does not wait on its reply's channel
/// (completing it on its own task would wake it needlessly); a reply
/// completed elsewhere must still end the call: a timeout on the
/// background task, or closing the peer.
#[test]
fn a_receiving_lone_call_ends_on_a_timeout_and_on_close() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // B lives on a runtime of its own, driven by a thread until `stop`:
    // then it is silent without closing its socket (no ICMP error wakes
    // anyone).
    let rt_b = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let quiet = fast().stabilize_interval(Duration::from_secs(30));
    let b = rt_b.block_on(bound(Hooks::new(), quiet.clone()));
    let b_addr = b.listener().unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let driver = {
        let stop = stop.clone();
        thread::spawn(move || {
            rt_b.block_on(async {
                while !stop.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            });
            (rt_b, b)
        })
    };
    // A1 gives up on a request after 100 ms and on a send after 2 s
    // (failing it as `NoSuchNode` or `Timeout`, by what it learnt first);
    // A2 on a request after 5 s.
    let mut short = quiet.clone();
    short.chord.send_attempt_timeout = Duration::from_millis(500);
    short.chord.send_timeout = Duration::from_secs(2);
    let a1 = rt.block_on(bound(Hooks::new(), short));
    let a2 = Arc::new(rt.block_on(bound(
        Hooks::new(),
        quiet.request_timeout(Duration::from_secs(5)),
    )));
    for a in [&a1, &*a2] {
        rt.block_on(a.connect(b_addr.clone(), Duration::from_secs(5)))
            .expect("join B");
        rt.block_on(a.send(&b_addr, &b"hello"[..]))
            .expect("B answers while driven");
    }
    stop.store(true, Ordering::Relaxed);
    let (_rt_b, _b) = driver.join().unwrap();

    // The request times out on A1's background task.
    let t = Instant::now();
    let r = rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(10), a1.send(&b_addr, &b"lost"[..])).await
    });
    let r = r.expect("the call did not end when its request timed out");
    assert!(r.is_err(), "a send to a silent peer succeeded: {r:?}");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());

    // A2 is closed while its call waits (its request would time out only
    // after 5 s).
    let closer = {
        let a2 = a2.clone();
        rt.spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            a2.close().await;
        })
    };
    let t = Instant::now();
    let r = rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(10), a2.send(&b_addr, &b"lost"[..])).await
    });
    let r = r.expect("the call did not end when its peer closed");
    assert!(matches!(r, Err(Error::Closed)), "{r:?}");
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    rt.block_on(closer).unwrap();
}

#[tokio::test]
async fn connect_to_nobody_fails_with_an_error_in_bounded_time() {
    let p = bound(Hooks::new(), fast()).await;
    let nobody: SocketAddr = format!("127.0.0.1:{}", free_ports(1)[0]).parse().unwrap();
    let t = Instant::now();
    let r = p.connect(nobody, Duration::from_secs(5)).await;
    assert!(
        matches!(
            r,
            Err(Error::Join(chord::JoinError::Unreachable))
                | Err(Error::Timeout {
                    op: Operation::Connect,
                    ..
                })
        ),
        "{r:?}"
    );
    assert!(t.elapsed() < Duration::from_secs(6));
    // Still usable as the first member of its own swarm.
    let q = bound(Hooks::new(), fast()).await;
    q.connect(p.listener().unwrap(), Duration::from_secs(5))
        .await
        .expect("joins the failed one");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_claiming_an_id_its_address_does_not_give_is_ignored() {
    use cicada::chord::wire::{GetNeighbors, Message, NodeRef};
    let peers = swarm(2, fast()).await;
    settle(&peers).await;
    let target = peers[0].listener().unwrap().udp().unwrap();
    let liar = UdpSocket::bind("127.0.0.1:0").unwrap();
    let at = liar.local_addr().unwrap();
    // A notify from a stranger claiming an id of its choosing (just below
    // the peer's own, to become its predecessor), then the same with the
    // id its address really gives.
    let mut chosen = peers[0].hash().unwrap().to_bytes();
    chosen[31] = chosen[31].wrapping_sub(1);
    for id in [Hash::from_bytes(chosen), cicada::node_id(&at.into())] {
        let msg = Message::GetNeighbors(GetNeighbors {
            txn: 1,
            sender: NodeRef::new(id, at),
            notify: true,
            want_fingers: false,
        });
        liar.send_to(&msg.encode(), target).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    let stats = loop {
        let s = peers[0].stats().await.unwrap();
        if s.core.dropped_bad_identity >= 1 && s.core.admission_probes >= 1
            || Instant::now() > deadline
        {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(stats.core.dropped_bad_identity, 1, "{stats:?}");
    // The honest claim is probed, not taken: the socket never answers the
    // Ping, so the stranger never becomes a neighbour.
    assert!(stats.core.admission_probes >= 1, "{stats:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let known = peers[0].peers().await.unwrap();
    assert!(known.iter().all(|p| p.addr != at), "{known:?}");
}

#[tokio::test]
async fn malformed_datagrams_are_dropped_and_counted_and_the_peer_keeps_working() {
    let peers = swarm(2, fast()).await;
    let target = peers[0].listener().unwrap();
    let junk = UdpSocket::bind("127.0.0.1:0").unwrap();
    let garbage: [&[u8]; 5] = [
        b"hello",
        &[0xC1],
        &[0xC1, 0xCA, cicada::chord::VERSION, 250, 1, 2, 3],
        &[
            0xC1,
            0xCA,
            cicada::chord::VERSION,
            2,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
        ],
        &[0u8; 2000],
    ];
    for g in garbage {
        junk.send_to(g, &target).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    let stats = loop {
        let s = peers[0].stats().await.unwrap();
        if s.core.dropped_malformed >= 5 || Instant::now() > deadline {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(stats.core.dropped_malformed >= 5, "{stats:?}");
    let route = peers[1]
        .get_route(peers[0].hash().unwrap())
        .await
        .expect("still routing");
    assert_eq!(route.owner.addr, target);
    let route = peers[0]
        .get_route(peers[1].hash().unwrap())
        .await
        .expect("still routing");
    assert_eq!(route.owner.addr, peers[1].listener().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_fire_and_cannot_deadlock_the_peer() {
    let sent = Arc::new(AtomicUsize::new(0));
    let bad_magic = Arc::new(AtomicUsize::new(0));
    let new_peers: Arc<Mutex<Vec<Hash>>> = Arc::default();
    let received: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
    let (s, b, np, r) = (
        sent.clone(),
        bad_magic.clone(),
        new_peers.clone(),
        received.clone(),
    );
    // A hook that calls back into its own peer, and one that blocks a while.
    let me: Arc<OnceLock<Arc<SwarmPeer>>> = Arc::default();
    let me_in_hook = me.clone();
    let handle = tokio::runtime::Handle::current();
    let hooks = Hooks::new()
        .on_send(move |_to, bytes| {
            s.fetch_add(1, Ordering::Relaxed);
            if !bytes.starts_with(&chord::MAGIC) {
                b.fetch_add(1, Ordering::Relaxed);
            }
        })
        .on_new_peer(move |p| {
            np.lock().unwrap().push(p.id);
            if let Some(me) = me_in_hook.get() {
                let me = me.clone();
                // Waits on the peer from the hook thread: must not deadlock.
                let _ = handle.block_on(me.peers());
            }
            thread::sleep(Duration::from_millis(20));
        })
        .on_recv(move |_from, data| r.lock().unwrap().push(data.to_vec()));
    let hooked = Arc::new(bound(hooks, fast()).await);
    let _ = me.set(hooked.clone());
    let mut others = Vec::new();
    for _ in 0..3 {
        let p = bound(Hooks::new(), fast()).await;
        p.connect(hooked.listener().unwrap(), Duration::from_secs(5))
            .await
            .expect("connect");
        others.push(p);
    }
    // The peer answers promptly while its hooks are busy.
    let t = Instant::now();
    hooked.peers().await.unwrap();
    assert!(t.elapsed() < Duration::from_secs(1));
    tokio::time::sleep(Duration::from_secs(2)).await;

    assert!(
        sent.load(Ordering::Relaxed) > 0,
        "send hook fires for maintenance traffic"
    );
    assert_eq!(
        bad_magic.load(Ordering::Relaxed),
        0,
        "send hook sees whole datagrams"
    );
    let mut ids = new_peers.lock().unwrap().clone();
    let calls = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(calls, ids.len(), "new_peer fires once per peer");
    let mut want: Vec<Hash> = others.iter().map(|p| p.hash().unwrap()).collect();
    want.sort();
    assert_eq!(
        ids, want,
        "new_peer fired for each peer that entered the routing state"
    );

    // The recv hook sees every application message recv returns.
    for (i, p) in others.iter().enumerate() {
        p.send(&*hooked, format!("hi {i}").into_bytes())
            .await
            .expect("send to the hooked peer");
    }
    let mut got = Vec::new();
    for _ in 0..3 {
        let Received { data, .. } = hooked
            .recv_timeout(Duration::from_secs(5))
            .await
            .unwrap()
            .expect("a message");
        got.push(data.to_vec());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut seen = received.lock().unwrap().clone();
    seen.sort();
    got.sort();
    assert_eq!(seen, got);
    hooked.close().await;
}

/// `recv` says whether more are queued; a full queue refuses what it
/// cannot hold (the sender learns it), and drops nothing it confirmed.
#[tokio::test]
async fn recv_reports_more_and_a_full_queue_refuses() {
    let cfg = fast().recv_queue(3).send_timeout(Duration::from_secs(1));
    let peers = swarm(2, cfg).await;
    settle(&peers).await;
    let (a, b) = (&peers[0], &peers[1]);
    for i in 0..3 {
        a.send(b.listener().unwrap(), format!("m{i}").into_bytes())
            .await
            .expect("delivered");
    }
    let full = a.send(b.listener().unwrap(), b"m3".to_vec()).await;
    assert!(
        matches!(full, Err(Error::Send(chord::SendError::ReceiverBusy))),
        "{full:?}"
    );
    let mut mores = Vec::new();
    let mut datas = Vec::new();
    while let Some(Received {
        from, data, more, ..
    }) = b.try_recv().unwrap()
    {
        assert_eq!(from.addr, a.listener().unwrap());
        assert_eq!(from.id, a.hash().unwrap());
        mores.push(more);
        datas.push(String::from_utf8_lossy(&data).to_string());
    }
    assert_eq!(datas, ["m0", "m1", "m2"]);
    assert_eq!(mores, [true, true, false]);
    let stats = b.stats().await.unwrap();
    assert_eq!(stats.recv_overflow, 0);
    assert_eq!(stats.received, 3);
    assert!(stats.core.refused_busy > 0);
    assert!(b
        .recv_timeout(Duration::from_millis(100))
        .await
        .unwrap()
        .is_none());
}

/// `send_with`'s timeout bounds the call, names the operation, and
/// withdraws the message: a receiver that has room only later never gets
/// it (its peer gave it up at the timeout, well inside `send_timeout`).
#[tokio::test]
async fn send_with_a_timeout_fails_as_a_send_timeout_and_withdraws_the_message() {
    let cfg = fast().recv_queue(1).send_timeout(Duration::from_secs(10));
    let peers = swarm(2, cfg).await;
    settle(&peers).await;
    let (a, b) = (&peers[0], &peers[1]);
    let to = b.listener().unwrap();
    a.send(&to, &b"fills the queue"[..])
        .await
        .expect("delivered");
    let after = Duration::from_millis(300);
    let started = Instant::now();
    let r = a
        .send_with(&to, &b"late"[..], SendOptions::new().timeout(after))
        .await;
    let e = r.expect_err("the receiver's queue is full");
    assert!(
        matches!(e, Error::Timeout { op: Operation::Send, after: a } if a == after),
        "{e:?}"
    );
    assert!(e.is_timeout());
    assert_eq!(e.to_string(), "send timed out after 300ms");
    assert!(started.elapsed() < Duration::from_secs(3));
    let first = b.recv().await.unwrap();
    assert_eq!(&first.data[..], b"fills the queue");
    let late = b.recv_timeout(Duration::from_secs(3)).await.unwrap();
    assert!(late.is_none(), "a withdrawn message arrived: {late:?}");
}

#[tokio::test]
async fn send_by_key_reaches_the_owner_and_to_a_closed_peer_fails() {
    let peers = swarm(3, fast()).await;
    settle(&peers).await;
    let key = Hash::of("some key");
    let route = peers[0].get_route(key).await.unwrap();
    let d = peers[0]
        .send(key, &b"keyed"[..])
        .await
        .expect("delivered to the owner");
    assert_eq!(d.to, route.owner);
    let owner = peers
        .iter()
        .find(|p| p.hash().unwrap() == route.owner.id)
        .unwrap();
    let Received { data, .. } = owner
        .recv_timeout(Duration::from_secs(5))
        .await
        .unwrap()
        .expect("owner got it");
    assert_eq!(&data[..], b"keyed");
    let gone = peers[2].listener().unwrap();
    peers[2].close().await;
    let t = Instant::now();
    let r = peers[0].send(gone, &b"late"[..]).await;
    assert!(r.is_err(), "send to a closed peer must fail: {r:?}");
    assert!(t.elapsed() < Duration::from_secs(15));
}

#[test]
fn bind_outside_a_runtime_is_an_error_not_a_panic() {
    let mut p = SwarmPeer::new(Hooks::new());
    let r = futures_lite_block_on(p.bind(localhost()));
    assert!(matches!(r, Err(Error::NoRuntime)), "{r:?}");
}

/// Polls a future to completion on this thread, without any runtime.
fn futures_lite_block_on<F: std::future::Future>(f: F) -> F::Output {
    use std::task::{Context, Poll, Wake, Waker};
    struct Unpark(thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        thread::park();
    }
}

#[test]
fn blocking_facade_wraps_the_async_peer() {
    use cicada::blocking;
    let mut a = blocking::SwarmPeer::with_config(fast(), Hooks::new()).unwrap();
    a.bind(localhost()).unwrap();
    let mut b = blocking::SwarmPeer::with_config(fast(), Hooks::new()).unwrap();
    assert!(matches!(b.peers(), Err(Error::NotBound)));
    b.bind(localhost()).unwrap();
    b.connect(a.listener().unwrap(), Duration::from_secs(5))
        .unwrap();
    let route = b.get_route(a.hash().unwrap()).unwrap();
    assert_eq!(route.owner.addr, a.listener().unwrap());
    assert!(b.recv_timeout(Duration::from_millis(50)).unwrap().is_none());
    let d = b.send(a.listener().unwrap(), "to a").unwrap();
    assert_eq!(d.to.addr, a.listener().unwrap());
    let d = b
        .send_with(
            a.listener().unwrap(),
            "again",
            SendOptions::new().duplicates(1),
        )
        .unwrap();
    assert_eq!(d.to.addr, a.listener().unwrap());
    let addr = a.listener().unwrap().udp().unwrap();
    // A peer shared between threads: one waits in `recv` until another
    // closes it.
    let a = Arc::new(a);
    let (done, results) = std::sync::mpsc::channel();
    let receiver = a.clone();
    thread::spawn(move || {
        let got = [receiver.recv(), receiver.recv(), receiver.recv()];
        let _ = done.send(got);
    });
    thread::sleep(Duration::from_millis(300));
    a.close();
    a.close();
    let [first, second, after] = results
        .recv_timeout(Duration::from_secs(5))
        .expect("close ends a recv waiting on another thread");
    assert_eq!(&first.unwrap().data[..], b"to a");
    assert_eq!(&second.unwrap().data[..], b"again");
    assert!(matches!(after, Err(Error::Closed)), "{after:?}");
    assert!(matches!(a.peers(), Err(Error::Closed)));
    assert!(matches!(a.try_recv(), Err(Error::Closed)));
    let mut c = blocking::SwarmPeer::new(Hooks::new()).unwrap();
    c.bind(addr).expect("port released by close");
}

#[tokio::test]
async fn ipv6_peers_join_when_the_host_has_ipv6() {
    let any6: SocketAddr = "[::1]:0".parse().unwrap();
    if let Err(e) = std::net::UdpSocket::bind(any6) {
        require::skip(
            Need::Ipv6,
            "ipv6_peers_join_when_the_host_has_ipv6",
            format!("cannot bind [::1]: {e}"),
        );
        return;
    }
    let mut a = SwarmPeer::with_config(fast(), Hooks::new());
    a.bind(any6).await.unwrap();
    let mut b = SwarmPeer::with_config(fast(), Hooks::new());
    b.bind(any6).await.unwrap();
    assert!(a.listener().unwrap().is_ipv6());
    b.connect(a.listener().unwrap(), Duration::from_secs(5))
        .await
        .unwrap();
    let r = b.get_route(a.hash().unwrap()).await.unwrap();
    assert_eq!(r.owner.addr, a.listener().unwrap());
}

#[tokio::test]
async fn connect_reports_a_version_mismatch() {
    // A fake bootstrap that answers anything with "I speak versions 7..=9".
    let fake = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let fake_addr = fake.local_addr().unwrap();
    let answer =
        chord::wire::Message::<SocketAddr>::VersionMismatch(chord::wire::VersionMismatch {
            min: 7,
            max: 9,
        })
        .encode();
    let server = tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        while let Ok((_, from)) = fake.recv_from(&mut buf).await {
            let _ = fake.send_to(&answer, from).await;
        }
    });
    let p = bound(Hooks::new(), fast()).await;
    let r = p.connect(fake_addr, Duration::from_secs(5)).await;
    assert!(
        matches!(
            r,
            Err(Error::Join(chord::JoinError::VersionMismatch {
                min: 7,
                max: 9,
                ..
            }))
        ),
        "{r:?}"
    );
    server.abort();
}

#[tokio::test]
async fn oversized_sends_fail_with_a_typed_error() {
    let mut cfg = fast().max_payload(1000);
    cfg.chord.max_fragment = 200; // 1000 bytes travel as several fragments
    let peers = swarm(2, cfg).await;
    let r = peers[0]
        .send(peers[1].listener().unwrap(), vec![0u8; 1001])
        .await;
    assert!(
        matches!(
            r,
            Err(Error::Send(chord::SendError::TooLarge {
                size: 1001,
                max: 1000
            }))
        ),
        "{r:?}"
    );
    // Large but allowed payloads are fragmented by the core and arrive whole.
    let big: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
    peers[0]
        .send(peers[1].listener().unwrap(), big.clone())
        .await
        .expect("delivered");
    let Received { data, .. } = peers[1]
        .recv_timeout(Duration::from_secs(5))
        .await
        .unwrap()
        .expect("arrives");
    assert_eq!(&data[..], &big[..]);
}

#[tokio::test]
async fn disconnect_leaves_gracefully_and_the_others_notice() {
    let peers = swarm(3, fast()).await;
    settle(&peers).await;
    let leaver = peers[2].me().unwrap();
    peers[2].disconnect().await.expect("leaves");
    assert!(matches!(
        peers[2].get_route(Hash::of("k")).await,
        Err(Error::NotJoined)
    ));
    assert!(peers[2]
        .send(peers[0].listener().unwrap(), &b"x"[..])
        .await
        .is_err());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut gone = true;
        for p in &peers[..2] {
            if p.peers().await.unwrap().contains(&leaver) {
                gone = false;
            }
        }
        if gone {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the others still list the peer that left"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = peers[0].send(leaver.addr, &b"late"[..]).await;
    assert!(r.is_err(), "{r:?}");
}

// ------------------------------------------------------------- private swarm

fn keyed(key: &SwarmKey) -> PeerConfig {
    fast().swarm_key(key.clone()).secure_config(SecureConfig {
        handshake_retry: Duration::from_millis(100),
        ..SecureConfig::default()
    })
}

/// Waits until every peer of `peers` received one message each of `want`
/// (and then a little longer, to catch duplicates); returns what each got.
async fn collect(peers: &[&SwarmPeer], want: usize) -> Vec<Vec<String>> {
    let mut got = vec![Vec::new(); peers.len()];
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline && got.iter().any(|g| g.len() < want) {
        for (i, p) in peers.iter().enumerate() {
            while let Some(Received { data, .. }) = p.try_recv().unwrap() {
                got[i].push(String::from_utf8_lossy(&data).to_string());
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (i, p) in peers.iter().enumerate() {
        while let Some(Received { data, .. }) = p.try_recv().unwrap() {
            got[i].push(String::from_utf8_lossy(&data).to_string());
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_swarm_forms_a_ring_and_delivers_sends_and_broadcasts_exactly_once() {
    let key = SwarmKey::generate().unwrap();
    let peers = swarm(5, keyed(&key)).await;
    settle(&peers).await;
    // The ring: following successors from any peer visits all five.
    let mut seen = vec![peers[0].listener().unwrap()];
    for _ in 0..5 {
        let at = peers
            .iter()
            .find(|p| p.listener().unwrap() == *seen.last().unwrap())
            .unwrap();
        seen.push(at.successor().await.unwrap().expect("a successor").addr);
    }
    assert_eq!(seen[5], seen[0], "successors close a ring: {seen:?}");
    let mut distinct = seen[..5].to_vec();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 5, "{seen:?}");
    // Each peer sends to the next; then one broadcast.
    for (i, p) in peers.iter().enumerate() {
        let to = peers[(i + 1) % 5].listener().unwrap();
        p.send(to, format!("send {i}").into_bytes())
            .await
            .expect("delivered");
    }
    peers[0].broadcast(&b"to all"[..]).await.expect("accepted");
    let refs: Vec<&SwarmPeer> = peers.iter().collect();
    let got = collect(&refs, 2).await;
    for (i, g) in got.iter().enumerate() {
        let mut want = vec![format!("send {}", (i + 4) % 5)];
        if i != 0 {
            want.push("to all".into());
        }
        let mut g = g.clone();
        g.sort();
        want.sort();
        assert_eq!(g, want, "peer {i}");
    }
    for p in &peers {
        let s = p.stats().await.unwrap().secure.expect("keyed");
        assert!(s.sessions >= 1, "{s:?}");
        assert_eq!(
            s.dropped_bad_mac + s.dropped_replay + s.dropped_unkeyed,
            0,
            "{s:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_without_the_key_cannot_join_and_what_strangers_inject_is_dropped_and_counted() {
    let key = SwarmKey::generate().unwrap();
    let peers = swarm(3, keyed(&key)).await;
    settle(&peers).await;
    let target = peers[0].listener().unwrap();
    let members: Vec<cicada::PeerAddr> = peers.iter().map(|p| p.listener().unwrap()).collect();

    let other = bound(Hooks::new(), keyed(&SwarmKey::generate().unwrap())).await;
    let t = Instant::now();
    let r = other.connect(target.clone(), Duration::from_secs(5)).await;
    assert!(
        matches!(&r, Err(Error::NoHandshake(a)) if *a == target),
        "{r:?}"
    );
    assert!(r.unwrap_err().to_string().contains("swarm key"));
    assert!(t.elapsed() < Duration::from_secs(6));

    let plain = bound(Hooks::new(), fast()).await;
    let r = plain.connect(target.clone(), Duration::from_secs(5)).await;
    assert!(r.is_err(), "{r:?}");

    tokio::time::sleep(Duration::from_millis(800)).await;
    let before = peers[0].stats().await.unwrap();
    let s = before.secure.clone().unwrap();
    assert!(s.dropped_bad_mac >= 1, "the other key's Inits: {s:?}");
    assert!(
        s.dropped_unkeyed >= 1,
        "the unkeyed peer's datagrams: {s:?}"
    );
    assert_eq!(s.handshakes_answered as usize, s.peers as usize, "{s:?}");

    // Raw datagrams from a stranger: a plain Cicada header, a Data datagram
    // under an invented index, an Init of random bytes, garbage.
    let junk = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut data = [3u8; 80];
    data[1..5].copy_from_slice(&0x1234_5678u32.to_be_bytes());
    let mut init = [0x5au8; cicada::secure::INIT_LEN];
    init[0] = 1;
    let sent: [&[u8]; 4] = [&[0xC1, 0xCA, 1, 1, 0, 0], &data[..], &init[..], b"hello"];
    let target = target.udp().unwrap();
    for d in sent {
        junk.send_to(d, target).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    let after = loop {
        let a = peers[0].stats().await.unwrap().secure.unwrap();
        if a.dropped_malformed > s.dropped_malformed || Instant::now() > deadline {
            break a;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(after.dropped_unkeyed, s.dropped_unkeyed + 1, "{after:?}");
    assert_eq!(after.dropped_unknown_session, s.dropped_unknown_session + 1);
    assert_eq!(after.dropped_bad_mac, s.dropped_bad_mac + 1);
    assert_eq!(after.dropped_malformed, s.dropped_malformed + 1);
    // The Data datagram was large enough to draw one Init back, no more.
    let mut buf = [0u8; 200];
    junk.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut back = Vec::new();
    while let Ok((n, _)) = junk.recv_from(&mut buf) {
        back.push(n);
    }
    assert!(back.iter().all(|&n| n <= data.len()), "{back:?}");
    assert!(back.len() <= 1, "{back:?}");

    // Nobody outside got in, nothing was delivered.
    for p in &peers {
        let st = p.stats().await.unwrap();
        assert_eq!(st.received, 0);
        for q in p.peers().await.unwrap() {
            assert!(members.contains(&q.addr), "a stranger in the tables: {q:?}");
        }
    }
    assert!(other.peers().await.unwrap().is_empty());
    assert!(plain.peers().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_peer_at_the_same_address_handshakes_again() {
    let key = SwarmKey::generate().unwrap();
    let peers = swarm(3, keyed(&key)).await;
    settle(&peers).await;
    let addr = peers[2].listener().unwrap().udp().unwrap();
    for p in &peers[..2] {
        p.send(addr, &b"before"[..]).await.expect("delivered");
    }
    peers[2].close().await;
    let mut again = SwarmPeer::with_config(keyed(&key), Hooks::new());
    again.bind(addr).await.expect("the same port");
    again
        .connect(peers[0].listener().unwrap(), Duration::from_secs(5))
        .await
        .expect("rejoins");
    for p in &peers[..2] {
        p.send(addr, &b"to the new one"[..])
            .await
            .expect("reaches the restarted peer");
        again
            .send(p.listener().unwrap(), &b"from the new one"[..])
            .await
            .expect("from the restarted peer");
    }
    let got = collect(&[&again], 2).await.remove(0);
    assert_eq!(got, ["to the new one", "to the new one"]);
    let s = again.stats().await.unwrap().secure.unwrap();
    assert_eq!(s.dropped_bad_mac, 0, "{s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_handshakes_is_bounded_and_members_keep_talking() {
    let key = SwarmKey::generate().unwrap();
    let peers = swarm(2, keyed(&key)).await;
    settle(&peers).await;
    let target = peers[0].listener().unwrap().udp().unwrap();
    let flooder = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    // 3,000 forged Inits (no key), then 1,000 valid ones from an insider's
    // state machine (each newer than the last, so none is a replay).
    let now = Instant::now();
    let mut insider = cicada::secure::SecureCore::new(key.clone(), SecureConfig::default(), 1, now);
    let mut sent_bytes = 0usize;
    let t = Instant::now();
    for i in 0..4000u32 {
        let d = if i < 3000 {
            let mut d = vec![(i % 251) as u8; cicada::secure::INIT_LEN];
            d[0] = 1;
            d
        } else {
            insider.send(now, &i, b"x").unwrap();
            insider.poll_transmit().unwrap().1
        };
        sent_bytes += d.len();
        flooder.send_to(&d, target).await.unwrap();
        if i % 200 == 199 {
            // Members talk during the flood.
            peers[1]
                .send(target, &b"during the flood"[..])
                .await
                .expect("a member is served during the flood");
        }
    }
    let secs = t.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let s = peers[0].stats().await.unwrap().secure.unwrap();
    eprintln!("flood of 4,000 Inits in {secs:.2} s: {s:?}");
    // The forged ones cost no DH; the valid ones at most the budget.
    assert!(s.dropped_bad_mac >= 2900, "{s:?}");
    let budget = f64::from(cicada::secure::DEFAULT_HANDSHAKE_BURST)
        + f64::from(cicada::secure::DEFAULT_HANDSHAKE_RATE) * (secs + 0.5);
    assert!(
        (s.handshakes_answered as f64) <= budget + 1.0,
        "{s:?} in {secs:.2} s"
    );
    assert!(
        s.dropped_rate_limited > 0 || s.handshakes_answered >= 1000,
        "{s:?}"
    );
    assert!(s.peers <= cicada::secure::DEFAULT_MAX_PEERS as u64, "{s:?}");
    // No amplification: the flooder got back fewer bytes than it sent.
    let mut buf = [0u8; 200];
    let mut back = 0usize;
    while let Ok(Ok((n, _))) =
        tokio::time::timeout(Duration::from_millis(200), flooder.recv_from(&mut buf)).await
    {
        back += n;
    }
    assert!(back <= sent_bytes, "{back} back for {sent_bytes}");
    assert_eq!(
        back % cicada::secure::RESPONSE_LEN,
        0,
        "only Responses come back"
    );
    assert_eq!(
        peers[0].stats().await.unwrap().received,
        20,
        "every member's message, nothing else"
    );
    peers[1]
        .send(target, &b"after the flood"[..])
        .await
        .expect("a member is served after the flood");
}

#[tokio::test]
async fn unconfirmed_datagrams_reach_every_peer_once() {
    let peers = swarm(8, fast()).await;
    settle(&peers).await;
    for (i, from) in peers.iter().enumerate() {
        for (j, to) in peers.iter().enumerate() {
            if i != j {
                from.send_datagram(to.listener().unwrap(), format!("{i}->{j}"))
                    .await
                    .expect("sent");
            }
        }
    }
    // To a key: whichever peer owns it.
    peers[0]
        .send_datagram(Hash::of("a key"), b"keyed")
        .await
        .expect("sent");
    let mut keyed = 0;
    for (j, p) in peers.iter().enumerate() {
        let mut got = Vec::new();
        while let Some(Received { from, data, .. }) =
            p.recv_timeout(Duration::from_millis(500)).await.unwrap()
        {
            if &data[..] == b"keyed" {
                keyed += 1;
                continue;
            }
            let text = String::from_utf8(data.to_vec()).unwrap();
            let i: usize = text.split("->").next().unwrap().parse().unwrap();
            assert_eq!(from.addr, peers[i].listener().unwrap());
            assert!(text.ends_with(&format!("->{j}")), "{text} at {j}");
            got.push(i);
        }
        got.sort();
        let expect: Vec<usize> = (0..peers.len()).filter(|i| *i != j).collect();
        assert_eq!(got, expect, "at peer {j}");
    }
    assert_eq!(keyed, 1);
    let stats = peers[0].stats().await.unwrap();
    assert_eq!(stats.core.datagrams_sent, peers.len() as u64);
    // Larger than one datagram: refused, not split.
    let max = chord::Config::default().max_fragment;
    assert!(matches!(
        peers[0]
            .send_datagram(peers[1].listener().unwrap(), vec![0u8; max + 1])
            .await,
        Err(Error::Send(chord::SendError::TooLarge { .. }))
    ));
}
