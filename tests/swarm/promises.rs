//! Promises of the API kept under load: a confirmed send is a received
//! message (slow receivers hold senders back instead of losing what was
//! confirmed), hooks are exact.

use super::*;

/// Counts each payload: how many times it was received.
fn tally(payloads: impl IntoIterator<Item = String>) -> std::collections::HashMap<String, usize> {
    let mut t = std::collections::HashMap::new();
    for p in payloads {
        *t.entry(p).or_insert(0) += 1;
    }
    t
}

/// A receiver with a queue of 4 that reads nothing for 2 s, then drains:
/// 32 concurrent confirmed sends (some split in fragments, some with
/// duplicates) all succeed, and each is received exactly once. Then a
/// receiver that reads nothing past the senders' deadline: the sends that
/// returned `Ok` are exactly the ones received, and every other one
/// failed with `ReceiverBusy`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_receiver_loses_no_confirmed_send() {
    let cfg = fast().recv_queue(4).send_timeout(Duration::from_secs(4));
    let peers = swarm(3, cfg).await;
    settle(&peers).await;
    let peers: Vec<Arc<SwarmPeer>> = peers.into_iter().map(Arc::new).collect();
    let to = peers[1].listener().unwrap();
    let big = 3000; // more than one fragment

    for (round, hold) in [(0, Duration::from_secs(2)), (1, Duration::from_secs(6))] {
        let mut sends = Vec::new();
        for i in 0..32 {
            let from = peers[if i % 2 == 0 { 0 } else { 2 }].clone();
            let mut data = format!("r{round}-m{i}-").into_bytes();
            if i % 4 == 1 {
                data.resize(big, b'x');
            }
            let dups = if i % 8 == 3 { 2 } else { 0 };
            let key = String::from_utf8_lossy(&data[..data.len().min(12)]).to_string();
            let to = to.clone();
            sends.push(tokio::spawn(async move {
                let r = from
                    .send_with(to, data, SendOptions::new().duplicates(dups))
                    .await;
                (key, r)
            }));
        }
        tokio::time::sleep(hold).await;
        // Drain everything that comes within the senders' deadline.
        let mut got = Vec::new();
        while let Some(Received { data, .. }) = peers[1]
            .recv_timeout(Duration::from_millis(1500))
            .await
            .unwrap()
        {
            got.push(String::from_utf8_lossy(&data[..data.len().min(12)]).to_string());
        }
        let mut ok = Vec::new();
        let mut failed = Vec::new();
        for s in sends {
            let (key, r) = s.await.unwrap();
            match r {
                Ok(_) => ok.push(key),
                Err(Error::Send(chord::SendError::ReceiverBusy)) => failed.push(key),
                Err(e) => panic!("round {round}: {key}: unexpected error {e}"),
            }
        }
        let received = tally(got);
        assert!(
            received.values().all(|&n| n == 1),
            "round {round}: a message received twice: {received:?}"
        );
        let mut ok_sorted = ok.clone();
        ok_sorted.sort();
        let mut received_sorted: Vec<String> = received.keys().cloned().collect();
        received_sorted.sort();
        assert_eq!(
            ok_sorted, received_sorted,
            "round {round}: the sends that returned Ok are the messages received"
        );
        assert_eq!(ok.len() + failed.len(), 32);
        if round == 0 {
            assert!(
                failed.is_empty(),
                "a 2 s pause within a 4 s deadline: {failed:?}"
            );
        } else {
            // Past the deadline: the 4 queued made it, the rest were refused.
            assert_eq!(ok.len(), 4, "the queue's 4 places: {ok:?}");
        }
    }
    let stats = peers[1].stats().await.unwrap();
    assert!(stats.core.refused_busy > 0, "{stats:?}");
    assert_eq!(stats.recv_overflow, 0);
    for p in &peers {
        p.close().await;
    }
}

/// With a `recv` hook slower than the traffic, every message still reaches
/// both the hook and `recv`, each once: senders are held back while the
/// hook's queue is full.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_recv_hook_sees_every_message() {
    let seen: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
    let s = seen.clone();
    let hooks = Hooks::new().on_recv(move |_from, data| {
        thread::sleep(Duration::from_millis(20));
        s.lock().unwrap().push(data.to_vec());
    });
    let cfg = fast().hook_queue(2).send_timeout(Duration::from_secs(8));
    let receiver = Arc::new(bound(hooks, cfg.clone()).await);
    let sender = Arc::new(bound(Hooks::new(), cfg).await);
    sender
        .connect(receiver.listener().unwrap(), Duration::from_secs(5))
        .await
        .unwrap();
    let reader = {
        let r = receiver.clone();
        tokio::spawn(async move {
            let mut got = Vec::new();
            while let Ok(Some(Received { data: d, .. })) =
                r.recv_timeout(Duration::from_secs(3)).await
            {
                got.push(d.to_vec());
            }
            got
        })
    };
    let mut sends = Vec::new();
    for i in 0..40 {
        let (p, to) = (sender.clone(), receiver.listener().unwrap());
        sends.push(tokio::spawn(async move {
            p.send(to, format!("h{i}").into_bytes()).await
        }));
    }
    for s in sends {
        s.await.unwrap().expect("confirmed");
    }
    let mut got = reader.await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut hooked = seen.lock().unwrap().clone();
    got.sort();
    hooked.sort();
    assert_eq!(got.len(), 40, "recv got each message");
    assert_eq!(hooked, got, "the hook saw each message recv returned, once");
    let stats = receiver.stats().await.unwrap();
    assert!(stats.core.refused_busy > 0, "the hook held senders back");
    assert_eq!(stats.hooks_dropped, 0);
    receiver.close().await;
    sender.close().await;
}

/// A `send` hook slower than the traffic: calls beyond the hook queue are
/// dropped, and every one of them is reported to `on_dropped`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_hook_calls_are_reported() {
    let calls = Arc::new(AtomicUsize::new(0));
    let reported: Arc<Mutex<Vec<cicada::hooks::HooksDropped>>> = Arc::default();
    let (c, r) = (calls.clone(), reported.clone());
    let hooks = Hooks::new()
        .on_send(move |_, _| {
            thread::sleep(Duration::from_millis(5));
            c.fetch_add(1, Ordering::Relaxed);
        })
        .on_dropped(move |d| r.lock().unwrap().push(d));
    let cfg = fast().hook_queue(4);
    let a = bound(hooks, cfg.clone()).await;
    let b = bound(Hooks::new(), cfg).await;
    b.connect(a.listener().unwrap(), Duration::from_secs(5))
        .await
        .unwrap();
    // A sends datagrams to B only once it knows B (before, it refuses them
    // at once with NoSuchNode).
    let b_id = b.hash().unwrap();
    for _ in 0..100 {
        if a.peers().await.unwrap().iter().any(|p| p.id == b_id) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for i in 0..50 {
        a.send_datagram(b.listener().unwrap(), format!("d{i}").as_bytes())
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let dropped = a.stats().await.unwrap().hooks_dropped;
    // Let the hook thread catch up and report.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let total: u64 = reported
        .lock()
        .unwrap()
        .iter()
        .map(|d| d.send + d.new_peer)
        .sum();
    assert!(dropped > 0, "a 5 ms hook cannot keep up with 50 datagrams");
    assert!(
        total >= dropped,
        "every drop is reported: {total} reported, {dropped} dropped"
    );
    assert!(calls.load(Ordering::Relaxed) > 0);
    a.close().await;
    b.close().await;
}
