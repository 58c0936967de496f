// `UdpLink::send_segments`: datagrams of one size sent together arrive as
// the same datagrams, in order, whether the kernel cut them (UDP
// segmentation offload) or the link sent them one by one.

use std::net::SocketAddr;
use std::time::Duration;

use cicada::link::{Gro, UdpLink};

use super::require::{self, Need};

/// Whether `link` sends with segmentation offload (Linux, 64 datagrams a
/// call); where it does not, `test`'s offload checks are skipped (need `gso`).
fn offload(link: &UdpLink, test: &str) -> bool {
    let here = cfg!(target_os = "linux") && link.max_segments() >= 64;
    if !here {
        require::skip(
            Need::Gso,
            test,
            format!(
                "no UDP segmentation offload on loopback (a link sends {} datagram(s) a call)",
                link.max_segments()
            ),
        );
    }
    here
}

async fn link() -> UdpLink {
    UdpLink::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("bind on loopback")
}

/// A link that coalesces arriving runs where the system can (Linux): the
/// tests of runs check the receive side of the offload as well.
async fn coalescing_link() -> UdpLink {
    UdpLink::bind_gro(SocketAddr::from(([127, 0, 0, 1], 0)), Gro::On)
        .await
        .expect("bind on loopback")
}

/// Sends `count` datagrams of `size` bytes (byte `i` of datagram `d` is
/// `d * 7 + i`) in one `send_segments`, and checks what arrives.
async fn roundtrip(count: usize, size: usize, last: usize) {
    let (tx, rx) = (link().await, coalescing_link().await);
    let to = rx.local_addr().expect("bound");
    let datagrams: Vec<Vec<u8>> = (0..count)
        .map(|d| {
            let len = if d + 1 == count { last } else { size };
            (0..len).map(|i| (d * 7 + i) as u8).collect()
        })
        .collect();
    let bytes = datagrams.concat();
    tx.send_segments(&bytes, size, &to).await.expect("sent");
    let mut buf = vec![0u8; 65_536];
    for (d, want) in datagrams.iter().enumerate() {
        let (n, from) = tokio::time::timeout(Duration::from_secs(2), rx.recv_from(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("datagram {d} of {count} never came"))
            .expect("received");
        assert_eq!(from, tx.local_addr().expect("bound"));
        assert_eq!(&buf[..n], &want[..], "datagram {d} of {count}");
    }
    assert!(
        tokio::time::timeout(Duration::from_millis(100), rx.recv_from(&mut buf))
            .await
            .is_err(),
        "no datagram more than sent"
    );
    let gso_off = std::env::var_os("CICADA_UDP_GSO").is_some();
    if gso_off || !cfg!(all(target_os = "linux", target_pointer_width = "64")) {
        require::skip(
            Need::Gso,
            "segments_arrive_as_the_datagrams_sent",
            "offload checks: not 64-bit Linux, or CICADA_UDP_GSO is set",
        );
    } else {
        // Linux on loopback takes segmented sends: the link must not have
        // fallen back (a malformed control message is refused with EINVAL).
        assert_eq!(tx.max_segments(), 64, "segmentation offload was refused");
        // And the run arrives in one receive (UDP_GRO), handed out one by one.
        if count > 1 && size <= 1_452 {
            assert_eq!(
                rx.coalesced(),
                count as u64,
                "the run was not received coalesced"
            );
        }
    }
}

#[tokio::test]
async fn segments_arrive_as_the_datagrams_sent() {
    roundtrip(10, 100, 100).await;
    roundtrip(64, 1_160, 1_160).await;
    // A shorter last datagram, as the kernel allows.
    roundtrip(5, 300, 17).await;
    // One datagram: an ordinary send.
    roundtrip(1, 1_000, 1_000).await;
}

/// `try_recv_run` hands a coalesced run over whole, in the caller's buffer
/// (the driver then reads each datagram in place, with no copy aside); a
/// run that an ordinary receive began is handed out one by one after it,
/// so no datagram is lost or repeated between the two.
#[tokio::test]
async fn a_run_is_received_whole_or_after_a_single_receive_one_by_one() {
    let (tx, rx) = (link().await, coalescing_link().await);
    let (to, from) = (
        rx.local_addr().expect("bound"),
        tx.local_addr().expect("bound"),
    );
    let size = 700;
    let datagrams: Vec<Vec<u8>> = (0..12)
        .map(|d| (0..size).map(|i| (d * 13 + i) as u8).collect())
        .collect();
    let mut buf = vec![0u8; 65_536];
    // Waits until something can be taken without waiting.
    async fn ready(rx: &UdpLink, buf: &mut [u8]) -> (usize, usize, SocketAddr) {
        for _ in 0..200 {
            rx.readable().await.expect("readable");
            if let Some(r) = rx.try_recv_run(buf) {
                return r.expect("received");
            }
        }
        panic!("nothing to take");
    }

    // Whole: one run, as sent (coalesced where the system offers it).
    tx.send_segments(&datagrams.concat(), size, &to)
        .await
        .expect("sent");
    let mut got = Vec::new();
    while got.len() < datagrams.len() {
        let (len, stride, who) = ready(&rx, &mut buf).await;
        assert_eq!(who, from);
        got.extend(buf[..len].chunks(stride).map(<[u8]>::to_vec));
    }
    assert_eq!(got, datagrams, "the run as sent, in order");
    if offload(
        &tx,
        "a_run_is_received_whole_or_after_a_single_receive_one_by_one",
    ) {
        assert_eq!(rx.coalesced(), 12, "the run came in one receive");
    }

    // Begun by an ordinary receive: the rest comes one by one, in order.
    tx.send_segments(&datagrams.concat(), size, &to)
        .await
        .expect("sent");
    let (n, _) = rx.recv_from(&mut buf).await.expect("received");
    let mut got = vec![buf[..n].to_vec()];
    while got.len() < datagrams.len() {
        let (len, stride, who) = ready(&rx, &mut buf).await;
        assert_eq!(who, from);
        got.extend(buf[..len].chunks(stride).map(<[u8]>::to_vec));
    }
    assert_eq!(got, datagrams, "the run as sent, in order");
    assert!(
        rx.try_recv_run(&mut buf).is_none(),
        "nothing more than was sent"
    );
}

/// A burst of confirmed sends leaves in runs, and their confirmations come
/// back together: the driver gathers each turn's datagrams per destination
/// and size (ids are varints on the wire, so consecutive datagrams often
/// differ by a byte) and hands each run to the link in one call (taking
/// only consecutive datagrams of one size gave about 1.7 datagrams a
/// call); the receiver confirms the messages of one batch in one
/// `Delivered` (up to 96 each).
///
/// On a current-thread runtime, so that the 512 sends are queued before
/// the driver runs whatever the machine's load (on two workers a loaded
/// machine let the driver take them one at a time).
#[tokio::test(flavor = "current_thread")]
async fn a_burst_of_sends_leaves_in_runs() {
    if !cfg!(target_os = "linux") || std::env::var_os("CICADA_UDP_GSO").is_some_and(|v| v == "0") {
        require::skip(
            Need::Gso,
            "a_burst_of_sends_leaves_in_runs",
            "segmented UDP sends are off here (not Linux, or CICADA_UDP_GSO=0)",
        );
        return;
    }
    let peers = super::swarm(2, super::fast()).await;
    super::settle(&peers).await;
    let peers: Vec<std::sync::Arc<cicada::SwarmPeer>> =
        peers.into_iter().map(std::sync::Arc::new).collect();
    let (a, b) = (peers[0].clone(), peers[1].clone());
    let to = b.listener().expect("bound");
    let (a0, b0) = (
        a.stats().await.expect("stats"),
        b.stats().await.expect("stats"),
    );
    let payload = bytes::Bytes::from(vec![7u8; 1_000]);
    let mut sends = tokio::task::JoinSet::new();
    for _ in 0..512 {
        let (a, to, p) = (a.clone(), to.clone(), payload.clone());
        sends.spawn(async move { a.send(to, p).await });
    }
    while let Some(r) = sends.join_next().await {
        r.expect("task").expect("every send confirmed");
    }
    let (a1, b1) = (
        a.stats().await.expect("stats"),
        b.stats().await.expect("stats"),
    );
    let datagrams = a1.core.datagrams_out - a0.core.datagrams_out;
    let calls = a1.link_sends - a0.link_sends;
    assert!(datagrams >= 512, "sender: {datagrams} datagrams out");
    assert!(
        datagrams >= 4 * calls,
        "sender: {datagrams} datagrams in {calls} sends to the link"
    );
    // The driver hands the core up to 64 datagrams a turn: 512 messages
    // are confirmed in a few Delivered, not one each.
    let back = b1.core.datagrams_out - b0.core.datagrams_out;
    assert!(
        (1..=64).contains(&back),
        "receiver: {back} datagrams back for 512 messages"
    );
}

/// Datagram `d` of a test: 600 bytes (a run's segment size), each
/// `(d * 11 + i) as u8`, so that a run read as one datagram, a datagram
/// lost or one repeated shows.
fn numbered(d: usize) -> Vec<u8> {
    (0..600).map(|i| (d * 11 + i) as u8).collect()
}

/// Receives `want` (in order, each whole), then finds the socket empty:
/// the end of a drain, which is what the adaptive switch counts.
async fn expect(rx: &UdpLink, want: std::ops::Range<usize>) {
    let mut buf = vec![0u8; 2_048];
    for d in want {
        let (n, _) = tokio::time::timeout(Duration::from_secs(2), rx.recv_from(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("datagram {d} never came"))
            .expect("received");
        assert_eq!(&buf[..n], &numbered(d)[..], "datagram {d}");
    }
    assert!(rx.try_recv_from(&mut buf).is_none(), "nothing more");
}

/// A burst of `count` datagrams from `first`, in one segmented send.
async fn burst(tx: &UdpLink, to: SocketAddr, first: usize, count: usize) {
    let bytes: Vec<u8> = (first..first + count).flat_map(numbered).collect();
    tx.send_segments(&bytes, 600, &to).await.expect("sent");
}

/// `Gro::Adaptive` (the default): a link receives plainly (no `UDP_GRO`,
/// the cheapest receive) while datagrams come one at a time, and switches
/// `UDP_GRO` on for good when a burst comes (16 of one size from one
/// sender back to back): the next burst arrives in one receive. Through the switch each datagram arrives
/// once, whole, in order. `Gro::Off` never switches.
#[tokio::test]
async fn adaptive_gro_goes_on_at_the_first_burst_and_loses_nothing() {
    let tx = link().await;
    if !offload(
        &tx,
        "adaptive_gro_goes_on_at_the_first_burst_and_loses_nothing",
    ) {
        return;
    }
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    for mode in [Gro::Adaptive, Gro::Off] {
        let rx = UdpLink::bind_gro(loopback, mode).await.expect("bound");
        let to = rx.local_addr().expect("bound");
        let mut d = 0;
        for _ in 0..100 {
            tx.send_to(&numbered(d), &to).await.expect("sent");
            expect(&rx, d..d + 1).await;
            d += 1;
        }
        assert!(
            !rx.gro_on(),
            "{mode:?}: off while datagrams come one at a time"
        );
        // Less than a burst: the kernel cuts it for the plain socket.
        burst(&tx, to, d, 12).await;
        expect(&rx, d..d + 12).await;
        d += 12;
        assert!(!rx.gro_on(), "{mode:?}: 12 back to back are no burst");
        burst(&tx, to, d, 40).await;
        expect(&rx, d..d + 40).await;
        d += 40;
        assert_eq!(rx.gro_on(), mode == Gro::Adaptive, "{mode:?} after a burst");
        burst(&tx, to, d, 40).await;
        expect(&rx, d..d + 40).await;
        d += 40;
        let coalesced = if mode == Gro::Adaptive { 40 } else { 0 };
        assert_eq!(rx.coalesced(), coalesced, "{mode:?}: the next burst");
        // On for good.
        tx.send_to(&numbered(d), &to).await.expect("sent");
        expect(&rx, d..d + 1).await;
        assert_eq!(rx.gro_on(), mode == Gro::Adaptive, "{mode:?} at the end");
    }
}
