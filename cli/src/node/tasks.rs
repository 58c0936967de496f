//! I/O: the tasks beside a node's input: receiving, metrics, watches, signals.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cicada::nat::NatMapping;
use cicada::{NatStatus, Received, SwarmPeer};
use serde_json::json;
use tokio::sync::{mpsc, watch};

use crate::output::Out;

/// Answers `GET /metrics` with the peer's metrics, anything else with 404;
/// one request per connection. A client that sends no request line within
/// 5 s, or a longer one than 8 KiB, is dropped.
pub(super) async fn serve_metrics(listener: tokio::net::TcpListener, peer: Arc<SwarmPeer>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    loop {
        let Ok((mut conn, _)) = listener.accept().await else {
            // Out of descriptors, say: try again in a moment, not at once.
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let peer = peer.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 8192];
            let mut len = 0;
            let read = tokio::time::timeout(Duration::from_secs(5), async {
                while len < buf.len() {
                    match conn.read(&mut buf[len..]).await {
                        Ok(0) | Err(_) => return false,
                        Ok(n) => len += n,
                    }
                    if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
                        return true;
                    }
                }
                false
            })
            .await;
            if read != Ok(true) {
                return;
            }
            let request = String::from_utf8_lossy(&buf[..len]);
            let line = request.lines().next().unwrap_or_default();
            let (status, kind, body) = match line.split_whitespace().take(2).collect::<Vec<_>>()[..]
            {
                ["GET", "/metrics"] => match peer.metrics().await {
                    Ok(text) => (
                        "200 OK",
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        text,
                    ),
                    Err(e) => ("503 Service Unavailable", "text/plain", e.to_string()),
                },
                _ => ("404 Not Found", "text/plain", "try /metrics\n".to_string()),
            };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = conn.write_all(head.as_bytes()).await;
            let _ = conn.write_all(body.as_bytes()).await;
            let _ = conn.shutdown().await;
        });
    }
}

/// Prints an `address` event when this peer learns the address it is seen
/// at (bound to all interfaces), and a `nat` event whenever its NAT status
/// changes.
pub(super) async fn watch_self(peer: Arc<SwarmPeer>, out: Out) {
    let mut me = peer.me().ok();
    let mut nat = None;
    loop {
        let now = peer.me().ok();
        if now != me {
            if let Some(m) = &now {
                out.emit(
                    json!({"event": "address", "id": m.id.to_string(), "addr": m.addr.to_string()}),
                );
            }
            me = now;
        }
        let status = peer.nat_status().ok();
        if status != nat {
            if let Some(s) = status {
                out.emit(nat_event(s));
            }
            nat = status;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The `nat` event for `s`.
pub(super) fn nat_event(s: NatStatus) -> serde_json::Value {
    let (addr, mapping) = match s {
        NatStatus::Public { addr } => (Some(addr), None),
        NatStatus::Mapped { external } => (Some(external), None),
        NatStatus::BehindNat { seen, mapping } => (
            Some(seen),
            Some(match mapping {
                NatMapping::Unknown => "unknown",
                NatMapping::EndpointIndependent => "endpoint-independent",
                NatMapping::AddressDependent => "address-dependent",
            }),
        ),
        NatStatus::Unknown | NatStatus::Named => (None, None),
    };
    let status = match s {
        NatStatus::Unknown => "unknown",
        NatStatus::Named => "named",
        NatStatus::Public { .. } => "public",
        NatStatus::Mapped { .. } => "mapped",
        NatStatus::BehindNat { .. } => "nat",
    };
    json!({
        "event": "nat", "status": status,
        "addr": addr.map(|a| a.to_string()), "mapping": mapping,
    })
}

/// Prints every message received, except while held (`hold SECONDS`):
/// then it reads nothing until the hold ends.
pub(super) async fn receive(peer: Arc<SwarmPeer>, out: Out, mut held: watch::Receiver<Instant>) {
    loop {
        let until = *held.borrow_and_update();
        if until > Instant::now() {
            tokio::select! {
                _ = tokio::time::sleep_until(until.into()) => {}
                _ = held.changed() => {}
            }
            continue;
        }
        // A hold that starts while waiting takes effect at once: the
        // queue's `recv` can be given up without losing a message.
        let received = tokio::select! {
            r = peer.recv() => r,
            changed = held.changed() => match changed {
                Ok(()) => continue,
                Err(_) => peer.recv().await,
            },
        };
        let Ok(Received {
            from, data, more, ..
        }) = received
        else {
            return;
        };
        out.emit(json!({
            "event": "recv",
            "from": from.addr.to_string(),
            "from_id": from.id.to_string(),
            "data": String::from_utf8_lossy(&data),
            "more": more,
        }));
    }
}

/// Lines of the script, then of stdin, read on a plain thread (a blocked
/// read of stdin must not hold the runtime up at exit).
pub(super) fn read_lines(script: Option<PathBuf>) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel(64);
    let spawned = std::thread::Builder::new()
        .name("cicada-input".into())
        .spawn(move || {
            if let Some(path) = script {
                match std::fs::read_to_string(&path) {
                    Ok(text) => {
                        for l in text.lines() {
                            if tx.blocking_send(l.to_string()).is_err() {
                                return;
                            }
                        }
                    }
                    Err(e) => {
                        let _ =
                            tx.blocking_send(format!("error cannot read {}: {e}", path.display()));
                    }
                }
            }
            for l in std::io::stdin().lines() {
                let Ok(l) = l else { break };
                if tx.blocking_send(l).is_err() {
                    return;
                }
            }
        });
    if spawned.is_err() {
        tracing::error!("cannot start the input thread");
    }
    rx
}

pub(super) async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
