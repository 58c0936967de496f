//! I/O: one input line of a node carried out, its outcome on stdout.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cicada::{Hash, PeerAddr, SendOptions, SendTarget, SwarmPeer};
use serde_json::json;
use tokio::sync::watch;

use super::tasks::nat_event;
use crate::output::Out;

/// Most datagrams one `flood` command sends.
const MAX_FLOOD: usize = 10_000_000;

/// Largest datagram payload a `flood` command takes (what `send_datagram`
/// accepts is smaller still, see `PeerConfig::max_fragment`).
const MAX_FLOOD_SIZE: usize = 65_536;

#[derive(PartialEq, Eq)]
pub(super) enum Flow {
    Go,
    Quit,
}

fn parse_target(s: &str) -> Result<SendTarget, String> {
    if s.len() == 64 {
        if let Ok(h) = s.parse::<Hash>() {
            return Ok(SendTarget::Key(h));
        }
    }
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(SendTarget::Addr(a.into()));
    }
    if let Some((host, port)) = s.rsplit_once(':') {
        if let Ok(p) = port.parse::<u16>() {
            return Ok(SendTarget::Host(host.to_string(), p));
        }
    }
    PeerAddr::ouroboros(s)
        .map(SendTarget::Addr)
        .map_err(|_| format!("bad target {s:?}: want host:port, a name or 64 hex digits"))
}

fn parse_key(s: &str) -> Hash {
    s.parse::<Hash>().unwrap_or_else(|_| Hash::of(s))
}

fn split_word(s: &str) -> (&str, &str) {
    let s = s.trim_start();
    match s.split_once(char::is_whitespace) {
        Some((w, rest)) => (w, rest.trim_start()),
        None => (s, ""),
    }
}

pub(super) async fn execute(
    peer: &Arc<SwarmPeer>,
    out: Out,
    line: &str,
    hold: &watch::Sender<Instant>,
) -> Flow {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return Flow::Go;
    }
    let (cmd, rest) = split_word(line);
    match cmd.to_ascii_lowercase().as_str() {
        "send" => spawn_send(peer, out, 0, rest),
        "send-dup" => {
            let (n, rest) = split_word(rest);
            match n.parse::<u8>() {
                Ok(n) => spawn_send(peer, out, n, rest),
                Err(_) => out.error(format!("send-dup: bad count {n:?}")),
            }
        }
        "datagram" => {
            let (target_text, data) = split_word(rest);
            let target = match parse_target(target_text) {
                Ok(t) => t,
                Err(e) => {
                    out.error(e);
                    return Flow::Go;
                }
            };
            let (p, target_text, data) = (peer.clone(), target_text.to_string(), data.to_string());
            tokio::spawn(async move {
                let r = p.send_datagram(target, data.as_bytes()).await;
                out.emit(json!({
                    "event": "sent", "target": target_text, "data": data, "unconfirmed": true,
                    "ok": r.is_ok(), "error": r.err().map(|e| e.to_string()),
                }));
            });
        }
        "flood" => {
            // flood COUNT SIZE TARGET: COUNT unconfirmed datagrams of SIZE
            // bytes, back to back, as a load generator.
            let (count, rest) = split_word(rest);
            let (size, target_text) = split_word(rest);
            let (Ok(count), Ok(size)) = (count.parse::<usize>(), size.parse::<usize>()) else {
                out.error(format!("flood: want COUNT SIZE TARGET, got {rest:?}"));
                return Flow::Go;
            };
            if count == 0 || count > MAX_FLOOD || size > MAX_FLOOD_SIZE {
                out.error(format!(
                    "flood: COUNT in 1..={MAX_FLOOD}, SIZE at most {MAX_FLOOD_SIZE}"
                ));
                return Flow::Go;
            }
            let target = match parse_target(target_text.trim()) {
                Ok(t) => t,
                Err(e) => {
                    out.error(e);
                    return Flow::Go;
                }
            };
            let (p, target_text) = (peer.clone(), target_text.trim().to_string());
            tokio::spawn(async move {
                let started = Instant::now();
                let (mut failed, mut error) = (0usize, None);
                for k in 0..count {
                    let mut data = format!("flood-{k}-").into_bytes();
                    data.resize(size.max(data.len()), b'x');
                    if let Err(e) = p.send_datagram(target.clone(), &data).await {
                        failed += 1;
                        error.get_or_insert_with(|| e.to_string());
                    }
                }
                out.emit(json!({
                    "event": "flood", "target": target_text, "count": count, "size": size,
                    "failed": failed, "seconds": started.elapsed().as_secs_f64(), "error": error,
                }));
            });
        }
        "broadcast" | "bcast" => {
            let (p, data) = (peer.clone(), rest.to_string());
            tokio::spawn(async move {
                let r = p.broadcast(data.clone().into_bytes()).await;
                out.emit(json!({
                    "event": "sent", "target": "broadcast", "data": data,
                    "ok": r.is_ok(), "error": r.err().map(|e| e.to_string()),
                }));
            });
        }
        "lookup" => {
            let key = parse_key(rest.trim());
            let p = peer.clone();
            tokio::spawn(async move {
                match p.get_route(key).await {
                    Ok(r) => out.emit(json!({
                        "event": "lookup", "key": key.to_string(), "ok": true,
                        "owner": r.owner.addr.to_string(), "owner_id": r.owner.id.to_string(), "hops": r.hops,
                    })),
                    Err(e) => out.emit(json!({
                        "event": "lookup", "key": key.to_string(), "ok": false, "error": e.to_string(),
                    })),
                }
            });
        }
        "put" => {
            let (key, text) = split_word(rest);
            let (key, text, p) = (parse_key(key), text.to_string(), peer.clone());
            tokio::spawn(async move {
                let r = p.put(key, text.as_bytes().to_vec(), Duration::ZERO).await;
                out.emit(json!({
                    "event": "put", "key": key.to_string(), "ok": r.is_ok(),
                    "error": r.err().map(|e| e.to_string()),
                }));
            });
        }
        "put-signed" => {
            let (name, rest) = split_word(rest);
            let (seq, text) = split_word(rest);
            let Ok(seq) = seq.parse::<u64>() else {
                out.error(format!("put-signed: want NAME SEQ TEXT, got {rest:?}"));
                return Flow::Go;
            };
            let secret = Hash::of(name).to_bytes();
            let (text, p) = (text.to_string(), peer.clone());
            tokio::spawn(async move {
                let r = p
                    .put_signed(&secret, b"", seq, text.into_bytes(), None)
                    .await;
                out.emit(json!({
                    "event": "put", "key": r.as_ref().ok().map(|k| k.to_string()), "seq": seq,
                    "ok": r.is_ok(), "error": r.err().map(|e| e.to_string()),
                }));
            });
        }
        "get" => {
            let (key, p) = (parse_key(rest.trim()), peer.clone());
            tokio::spawn(async move {
                match p.get(key).await {
                    Ok(records) => {
                        let values: Vec<_> = records
                            .iter()
                            .map(|r| json!({"value": String::from_utf8_lossy(&r.value), "seq": r.seq()}))
                            .collect();
                        out.emit(json!({"event": "get", "key": key.to_string(), "ok": true, "values": values}));
                    }
                    Err(e) => out.emit(json!({
                        "event": "get", "key": key.to_string(), "ok": false, "error": e.to_string(),
                    })),
                }
            });
        }
        "listen" => {
            let (key, p) = (parse_key(rest.trim()), peer.clone());
            tokio::spawn(async move {
                match p.listen(key).await {
                    Ok(mut updates) => {
                        out.emit(json!({"event": "listen", "key": key.to_string(), "ok": true}));
                        while let Some(r) = updates.recv().await {
                            out.emit(json!({
                                "event": "update", "key": key.to_string(),
                                "value": String::from_utf8_lossy(&r.value), "seq": r.seq(),
                            }));
                        }
                    }
                    Err(e) => out.emit(json!({
                        "event": "listen", "key": key.to_string(), "ok": false, "error": e.to_string(),
                    })),
                }
            });
        }
        "announce" => {
            let (topic, p) = (rest.trim().to_string(), peer.clone());
            tokio::spawn(async move {
                let r = p.announce(topic.as_bytes(), Duration::ZERO).await;
                out.emit(json!({
                    "event": "announce", "topic": topic, "ok": r.is_ok(),
                    "error": r.err().map(|e| e.to_string()),
                }));
            });
        }
        "find" => {
            let (topic, p) = (rest.trim().to_string(), peer.clone());
            tokio::spawn(async move {
                match p.find(topic.as_bytes()).await {
                    Ok(peers) => {
                        let list: Vec<_> = peers.iter().map(|n| n.addr.to_string()).collect();
                        out.emit(
                            json!({"event": "found", "topic": topic, "ok": true, "peers": list}),
                        );
                    }
                    Err(e) => out.emit(json!({
                        "event": "found", "topic": topic, "ok": false, "error": e.to_string(),
                    })),
                }
            });
        }
        "peers" => match (
            peer.paths().await,
            peer.successor().await,
            peer.predecessor().await,
        ) {
            (Ok(peers), Ok(succ), Ok(pred)) => {
                let list: Vec<_> = peers
                    .iter()
                    .map(|(p, path)| {
                        json!({"id": p.id.to_string(), "addr": p.addr.to_string(), "path": path.to_string()})
                    })
                    .collect();
                out.emit(json!({
                    "event": "peers", "peers": list,
                    "successor": succ.map(|s| s.addr.to_string()),
                    "predecessor": pred.map(|s| s.addr.to_string()),
                }));
            }
            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => out.error(e),
        },
        "fingers" => match peer.fingers().await {
            Ok(f) => {
                let list: Vec<_> = f
                    .iter()
                    .map(|p| json!({"id": p.id.to_string(), "addr": p.addr.to_string()}))
                    .collect();
                out.emit(json!({"event": "fingers", "fingers": list}));
            }
            Err(e) => out.error(e),
        },
        "nat" => match peer.nat_status() {
            Ok(st) => out.emit(nat_event(st)),
            Err(e) => out.error(e),
        },
        "observe" => {
            let target = rest.trim().to_string();
            let addr = match parse_target(&target) {
                Ok(SendTarget::Addr(a)) => a,
                Ok(SendTarget::Host(host, port)) => {
                    match (host.as_str(), port)
                        .to_socket_addrs()
                        .map(|mut a| a.next())
                    {
                        Ok(Some(a)) => PeerAddr::Udp(a),
                        _ => {
                            out.error(format!("observe: cannot resolve {target:?}"));
                            return Flow::Go;
                        }
                    }
                }
                Ok(_) => {
                    out.error(format!("observe: want an address, got {target:?}"));
                    return Flow::Go;
                }
                Err(e) => {
                    out.error(e);
                    return Flow::Go;
                }
            };
            let p = peer.clone();
            tokio::spawn(async move {
                let r = p.observe(addr, Duration::from_secs(5)).await;
                out.emit(json!({
                    "event": "observed", "target": target, "ok": r.is_ok(),
                    "seen": r.as_ref().ok().map(|a| a.to_string()),
                    "error": r.err().map(|e| e.to_string()),
                }));
            });
        }
        "stats" => match peer.stats().await {
            Ok(s) => out.emit(json!({
                "event": "stats",
                "datagrams_in": s.core.datagrams_in,
                "datagrams_out": s.core.datagrams_out,
                "dropped_malformed": s.core.dropped_malformed,
                "dropped_version": s.core.dropped_version,
                "dropped_unexpected": s.core.dropped_unexpected,
                "peers_failed": s.core.peers_failed,
                "broadcast_sent": s.core.broadcast_sent,
                "received": s.received,
                "recv_overflow": s.recv_overflow,
                "hooks_dropped": s.hooks_dropped,
                "link_errors": s.link_errors,
                "link_parked": s.link_parked,
                "driver_wakeups": s.driver_wakeups,
                "stale_successor_hints": s.core.stale_successor_hints,
                "retransmits_held": s.core.retransmits_held,
                "punches_started": s.core.punches_started,
                "punches_succeeded": s.core.punches_succeeded,
                "punches_failed": s.core.punches_failed,
                "punches_introduced": s.core.punches_introduced,
                "punches_answered": s.core.punches_answered,
                "keepalives_sent": s.core.keepalives_sent,
                "relay": relay_stats(&s.core),
                "secure": s.secure.map(|k| json!({
                    "sessions": k.sessions,
                    "handshakes_completed": k.handshakes_completed,
                    "handshakes_answered": k.handshakes_answered,
                    "handshakes_failed": k.handshakes_failed,
                    "dropped_malformed": k.dropped_malformed,
                    "dropped_unkeyed": k.dropped_unkeyed,
                    "dropped_bad_mac": k.dropped_bad_mac,
                    "dropped_replay": k.dropped_replay,
                    "dropped_unknown_session": k.dropped_unknown_session,
                    "dropped_rate_limited": k.dropped_rate_limited,
                })),
                "ouroboros": s.ouroboros.map(|f| json!({
                    "open": f.open,
                    "allocated": f.allocated,
                    "accepted": f.accepted,
                    "alloc_failed": f.alloc_failed,
                    "dropped": f.dropped,
                    "closed": f.closed,
                    "most_events": f.most_events,
                    "handed": f.handed,
                    "queued": f.queued,
                    "write_waits": f.write_waits,
                    "control_sent": f.control_sent,
                    "bulk_sent": f.bulk_sent,
                    "refused": f.refused,
                })),
            })),
            Err(e) => out.error(e),
        },
        "wait" | "sleep" => match rest.trim().parse::<f64>() {
            Ok(s) if s.is_finite() && s >= 0.0 => {
                tokio::time::sleep(Duration::from_secs_f64(s)).await
            }
            _ => out.error(format!("wait: bad number of seconds {rest:?}")),
        },
        "hold" => match rest.trim().parse::<f64>() {
            Ok(s) if s.is_finite() && (0.0..=86_400.0).contains(&s) => {
                hold.send_replace(Instant::now() + Duration::from_secs_f64(s));
                out.emit(json!({"event": "hold", "seconds": s}));
            }
            _ => out.error(format!("hold: want seconds in 0..=86400, got {rest:?}")),
        },
        "leave" | "disconnect" => match peer.disconnect().await {
            Ok(()) => out.emit(json!({"event": "left"})),
            Err(e) => out.error(e),
        },
        "quit" | "exit" => return Flow::Quit,
        "error" => out.error(rest),
        other => out.error(format!("unknown command {other:?}")),
    }
    Flow::Go
}

fn spawn_send(peer: &Arc<SwarmPeer>, out: Out, duplicates: u8, rest: &str) {
    let (target_text, data) = split_word(rest);
    let target = match parse_target(target_text) {
        Ok(t) => t,
        Err(e) => return out.error(e),
    };
    let (p, target_text, data) = (peer.clone(), target_text.to_string(), data.to_string());
    tokio::spawn(async move {
        match p
            .send_with(
                target,
                data.clone().into_bytes(),
                SendOptions::new().duplicates(duplicates),
            )
            .await
        {
            Ok(d) => out.emit(json!({
                "event": "sent", "target": target_text, "data": data, "ok": true,
                "to": d.to.addr.to_string(), "hops": d.hops,
            })),
            Err(e) => out.emit(json!({
                "event": "sent", "target": target_text, "data": data, "ok": false,
                "error": e.to_string(),
            })),
        }
    });
}

/// The relay counters of a `stats` event.
fn relay_stats(c: &cicada::chord::Stats) -> serde_json::Value {
    json!({
        "punches_relayed": c.punches_relayed,
        "reservations": c.relay_reservations,
        "lost": c.relays_lost,
        "frames": c.relayed_frames,
        "bytes": c.relayed_bytes,
        "dropped": c.relay_dropped,
        "refused": c.relay_refused,
    })
}
