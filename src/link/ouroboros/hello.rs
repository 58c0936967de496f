//! I/O: the hello handshake on a new flow: allocate and write the hello,
//! or accept and read it (on blocking threads, never on the driver's task).

use super::*;

/// The hello of a flow of `class` (version 2), or of a flow for every class
/// (`None`, version 1).
pub(super) fn hello(me: &str, class: Option<Class>) -> Vec<u8> {
    let mut h = Vec::with_capacity(HELLO_MAGIC.len() + 2 + me.len());
    h.extend_from_slice(HELLO_MAGIC);
    match class {
        Some(c) => {
            h.push(HELLO_VERSION_CLASS);
            h.push(c.byte());
        }
        None => h.push(HELLO_VERSION),
    }
    h.extend_from_slice(me.as_bytes());
    h
}

/// The name and class (`None`: every class) in a hello, if `p` is a valid one.
pub(super) fn parse_hello(p: &[u8]) -> Option<(String, Option<Class>)> {
    let rest = p.strip_prefix(HELLO_MAGIC.as_slice())?;
    let (&v, rest) = rest.split_first()?;
    let (class, name) = match v {
        HELLO_VERSION => (None, rest),
        HELLO_VERSION_CLASS => {
            let (&c, name) = rest.split_first()?;
            (Some(Class::from_byte(c)?), name)
        }
        _ => return None,
    };
    let name = std::str::from_utf8(name).ok()?;
    valid_name(name).then(|| (name.to_owned(), class))
}

/// Allocates a flow of `class` (`None`: one for every class) to `peer` and
/// sends the hello (blocking; run off the runtime).
pub(super) fn allocate(peer: &str, me: &str, class: Option<Class>) -> ouro::Result<Flow> {
    let qos = class.map_or_else(flow_qos, Class::qos);
    let flow = ouro::flow_alloc(peer, Some(qos), Some(ALLOC_TIMEOUT))?;
    if let Err(e) = flow.write(&hello(me, class)) {
        // The peer may be gone: not deallocated (see `Slot`).
        std::mem::forget(flow);
        return Err(e);
    }
    Ok(flow)
}

pub(super) fn accept_loop(s: Arc<Shared>) {
    while !s.stop.load(Ordering::Acquire) {
        match ouro::flow_accept(Some(ACCEPT_SLICE)) {
            Ok(flow) => {
                if s.counters.live.load(Ordering::Relaxed) >= MAX_FLOWS {
                    tracing::debug!("too many flows: accepted flow deallocated");
                    continue;
                }
                s.counters.live.fetch_add(1, Ordering::Relaxed);
                let s2 = s.clone();
                drop(s.runtime.spawn_blocking(move || accepted(s2, flow)));
            }
            Err(ouro::Error::Timeout { .. }) => {}
            Err(e) => {
                tracing::debug!(error = %e, "flow_accept failed");
                std::thread::sleep(ACCEPT_SLICE);
            }
        }
    }
}

/// Reads the hello of an accepted flow, then registers it (blocking).
///
/// A flow whose allocator asked for in-order delivery has an FRCT instance
/// on this side too (the QoS is the allocator's): it is deallocated unread,
/// so that nothing of 0.23's FRCT (which can free a pool block twice) runs
/// in this process.
pub(super) fn accepted(s: Arc<Shared>, flow: Flow) {
    if flow.qos().in_order {
        tracing::debug!("accepted flow asks for FRCT (in-order delivery): deallocated unread");
        drop(flow);
        s.counters.refused.fetch_add(1, Ordering::Relaxed);
        s.counters.live.fetch_sub(1, Ordering::Relaxed);
        return;
    }
    let first = flow
        .set_rcv_timeout(Some(HELLO_TIMEOUT))
        .and_then(|_| flow.recv())
        .and_then(|first| flow.set_rcv_timeout(None).map(|_| first));
    let first = match first {
        Ok(first) => first,
        Err(e) => {
            tracing::debug!(error = %e, "accepted flow sent no hello");
            // No hello: the peer may be gone, so not deallocated (see `Slot`).
            s.counters.leaked.fetch_add(1, Ordering::Relaxed);
            std::mem::forget(flow);
            s.counters.live.fetch_sub(1, Ordering::Relaxed);
            return;
        }
    };
    let Some((peer, class)) = parse_hello(&first).filter(|(p, _)| *p != s.me) else {
        tracing::debug!("accepted flow without a valid hello: left to the library");
        s.counters.leaked.fetch_add(1, Ordering::Relaxed);
        std::mem::forget(flow);
        s.counters.live.fetch_sub(1, Ordering::Relaxed);
        return;
    };
    s.counters.accepted.fetch_add(1, Ordering::Relaxed);
    tracing::debug!(from = %peer, ?class, "flow accepted");
    let class = s.route_class(class);
    s.register(flow, peer, class, None);
}
