//! I/O: the raw UDP baselines: `UdpLink` alone, and plain tokio sockets.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;

use super::{local, R};

/// Messages per second the link alone moves: two [`cicada::link::UdpLink`]s
/// (the socket buffers, GSO sends and adaptive GRO receives of every
/// peer's link) with no protocol above them. The sender hands the link
/// runs of as many datagrams as it sends in one call
/// ([`Link::max_segments`], 64 at most), as the driver does with a queue
/// of datagrams of one size to one address; the receiver waits until the
/// socket is readable and drains it run by run, as the driver does. Counted
/// at the receiver, from its first receive to its last; also the fraction
/// of `count` that arrived (datagrams the receiver has no room for are
/// dropped by the system, and the rate is then the receiver's).
pub(super) async fn raw_throughput(size: usize, count: usize) -> R<(f64, f64)> {
    let rx = Arc::new(
        cicada::link::UdpLink::bind(local())
            .await
            .map_err(|e| e.to_string())?,
    );
    let tx = cicada::link::UdpLink::bind(local())
        .await
        .map_err(|e| e.to_string())?;
    let to = rx.local_addr().map_err(|e| e.to_string())?;
    let reader = tokio::spawn(async move {
        let mut buf = vec![0u8; cicada::config::RECV_BUFFER];
        // All datagrams, and those after the first receive: the rate
        // counts only those that arrived after its time (a run of 64
        // arrives in one receive).
        let (mut after, mut n, mut first, mut last) = (0usize, 0usize, None, Instant::now());
        while let Ok(Ok(())) = tokio::time::timeout(Duration::from_millis(300), rx.readable()).await
        {
            while let Some(Ok((len, stride, _))) = rx.try_recv_run(&mut buf) {
                last = Instant::now();
                let count = len.div_ceil(stride.max(1));
                if first.is_some() {
                    after += count;
                }
                first.get_or_insert(last);
                n += count;
            }
        }
        (after, n, first, last)
    });
    let run = tx.max_segments().max(1);
    let payload = vec![0x5au8; size * run];
    let mut sent = 0;
    while sent < count {
        let k = run.min(count - sent);
        tx.send_segments(&payload[..k * size], size, &to)
            .await
            .map_err(|e| e.to_string())?;
        sent += k;
        tokio::task::yield_now().await;
    }
    let (after, n, first, last) = reader.await.map_err(|e| e.to_string())?;
    let secs = first.map_or(0.0, |f| last.duration_since(f).as_secs_f64());
    let rate = if secs > 0.0 { after as f64 / secs } else { 0.0 };
    Ok((rate, n as f64 / count as f64))
}

/// Messages per second a pair of plain tokio sockets moves with one
/// `send_to` per datagram and the system's default socket buffers, counted
/// at the receiver: the unbatched extra row, below what the machine can do.
pub(super) async fn raw_unbatched_throughput(size: usize, count: usize) -> R<f64> {
    let rx = UdpSocket::bind(local()).await.map_err(|e| e.to_string())?;
    let tx = UdpSocket::bind(local()).await.map_err(|e| e.to_string())?;
    let to = rx.local_addr().map_err(|e| e.to_string())?;
    let reader = tokio::spawn(async move {
        let mut buf = vec![0u8; 65_536];
        let (mut n, mut first, mut last) = (0u64, None, Instant::now());
        while let Ok(Ok(_)) =
            tokio::time::timeout(Duration::from_millis(300), rx.recv(&mut buf)).await
        {
            last = Instant::now();
            first.get_or_insert(last);
            n += 1;
        }
        (n, first, last)
    });
    let payload = vec![0x5au8; size];
    for i in 0..count {
        tx.send_to(&payload, to).await.map_err(|e| e.to_string())?;
        if i % 64 == 63 {
            tokio::task::yield_now().await;
        }
    }
    let (n, first, last) = reader.await.map_err(|e| e.to_string())?;
    let secs = first.map_or(0.0, |f| last.duration_since(f).as_secs_f64());
    Ok(if secs > 0.0 { n as f64 / secs } else { 0.0 })
}

/// A raw UDP ping-pong of 64 bytes on loopback between two
/// [`cicada::link::UdpLink`]s (the socket buffers and receives of a peer's link,
/// coalescing as asked): a client link and an echo task, kept for the
/// whole latency row.
pub(super) struct RawPing {
    client: cicada::link::UdpLink,
    echo: SocketAddr,
    server: tokio::task::JoinHandle<()>,
}

impl RawPing {
    pub(super) async fn start(gro: cicada::link::Gro) -> R<RawPing> {
        let echo = cicada::link::UdpLink::bind_gro(local(), gro)
            .await
            .map_err(|e| e.to_string())?;
        let to = echo.local_addr().map_err(|e| e.to_string())?;
        let server = tokio::spawn(async move {
            let mut buf = vec![0u8; cicada::config::RECV_BUFFER];
            while let Ok((len, from)) = echo.recv_from(&mut buf).await {
                let _ = echo.send_to(&buf[..len], &from).await;
            }
        });
        let client = cicada::link::UdpLink::bind_gro(local(), gro)
            .await
            .map_err(|e| e.to_string())?;
        Ok(RawPing {
            client,
            echo: to,
            server,
        })
    }

    /// Round-trip times (seconds) of `n` pings.
    pub(super) async fn round_trips(&self, n: usize) -> R<Vec<f64>> {
        let mut buf = vec![0u8; cicada::config::RECV_BUFFER];
        let mut times = Vec::with_capacity(n);
        for _ in 0..n {
            let t = Instant::now();
            self.client
                .send_to(&[7u8; 64], &self.echo)
                .await
                .map_err(|e| e.to_string())?;
            tokio::time::timeout(Duration::from_secs(1), self.client.recv_from(&mut buf))
                .await
                .map_err(|_| "raw ping lost".to_string())?
                .map_err(|e| e.to_string())?;
            times.push(t.elapsed().as_secs_f64());
        }
        Ok(times)
    }
}

impl Drop for RawPing {
    fn drop(&mut self) {
        self.server.abort();
    }
}
