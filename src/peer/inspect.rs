//! API: what a peer tells of itself and its swarm; no protocol state here.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chord::{Hash, Path};

use super::SwarmPeer;
use crate::addr::PeerAddr;
use crate::driver::{Command, Snapshot};
use crate::error::{Error, Operation, Result};
use crate::link::{FlowStats, FlowStatsHandle};
use crate::nat::NatStatus;
use crate::remote::RemoteNode;
use crate::secure::SecureStats;

/// Counters of a peer: the core's and the peer's own.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerStats {
    /// The Chord core's counters (datagrams, malformed ones dropped, …).
    pub core: chord::Stats,
    /// Application messages received.
    pub received: u64,
    /// Broadcasts and unconfirmed datagrams (`send_datagram`) dropped
    /// because the receive queue was full (`core.dropped_no_room`). A
    /// confirmed message is never dropped so: it is refused as busy and
    /// its sender retries (`core.refused_busy` counts those refusals).
    pub recv_overflow: u64,
    /// `send` and `new_peer` hook calls dropped because the hook queue was
    /// full (each reported to [`crate::Hooks::on_dropped`]); `recv` hook
    /// calls are never dropped.
    pub hooks_dropped: u64,
    /// Errors the link reported on sending or receiving.
    pub link_errors: u64,
    /// Sends handed to the link: one per datagram, or one per run of
    /// datagrams of one size to one address (a single system call where
    /// the system segments them, UDP GSO). Against
    /// `core.datagrams_out`, how well sends were batched.
    pub link_sends: u64,
    /// Datagrams the link could not take on the thread that sent them and
    /// that waited for the background task instead (an Ouroboros reader
    /// thread finding a flow's ring full: it must not wait, since it is the
    /// thread that reads). They are sent, not lost. Counted each time a
    /// datagram is left so (one the reader thread takes up again and finds
    /// the ring still full counts twice).
    pub link_parked: u64,
    /// Times the peer's background task woke: for a datagram, a timer, a
    /// call handed to it under load, or a wake-up from a call (a deadline
    /// moved earlier). A lone call over UDP receives its own reply and
    /// does not wake it, so against `core.datagrams_in` this shows how
    /// much of the traffic cost a task wake-up (a thread wake-up, where
    /// the runtime's threads are idle).
    pub driver_wakeups: u64,
    /// The keyed link's counters (handshakes, datagrams dropped for a bad
    /// MAC, a replay, an unknown session…); `None` without a swarm key.
    pub secure: Option<SecureStats>,
    /// The Ouroboros link's counters (flows allocated and accepted,
    /// datagrams dropped, the largest batch of flow events, …); `None`
    /// over UDP.
    pub ouroboros: Option<FlowStats>,
}

impl SwarmPeer {
    async fn snapshot(&self) -> Result<Snapshot<PeerAddr>> {
        self.ask(|reply| Command::Snapshot { reply }).await
    }

    /// Every peer in this peer's routing state, sorted by id.
    pub async fn peers(&self) -> Result<Vec<RemoteNode>> {
        Ok(self.snapshot().await?.peers)
    }

    /// Every peer in this peer's routing state, sorted by id, with the
    /// path this peer reaches it by: [`Path::Direct`] (at the address it
    /// announces: public, or a port mapped on its gateway),
    /// [`Path::Punched`] (through a hole punched in the NATs between them)
    /// or [`Path::Relayed`] (through a relay: the peer, or this one, sits
    /// behind a NAT that maps per destination; see `docs/nat.md`).
    pub async fn paths(&self) -> Result<Vec<(RemoteNode, Path)>> {
        let snap = self.snapshot().await?;
        Ok(snap.peers.into_iter().zip(snap.paths).collect())
    }

    /// The distinct fingers of this peer's routing table, nearest first
    /// (what `cicada demo` draws for its chosen node).
    pub async fn fingers(&self) -> Result<Vec<RemoteNode>> {
        Ok(self.snapshot().await?.fingers)
    }

    /// The next peer on the ring; `None` while alone.
    pub async fn successor(&self) -> Result<Option<RemoteNode>> {
        Ok(self.snapshot().await?.successor)
    }

    /// The previous peer on the ring, when known.
    pub async fn predecessor(&self) -> Result<Option<RemoteNode>> {
        Ok(self.snapshot().await?.predecessor)
    }

    /// This peer's metrics in the OpenMetrics text format (what Prometheus
    /// scrapes; `cicada node --metrics ADDR` serves it on `/metrics`):
    /// datagrams and bytes in and out, confirmed and failed sends (by
    /// reason), the hops of lookups, the ring's estimated size, neighbours,
    /// drops by reason, keyed sessions and Ouroboros flows. Every name
    /// starts with `cicada_`.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> cicada::Result<()> {
    /// let mut peer = cicada::SwarmPeer::new(cicada::Hooks::new());
    /// peer.bind("127.0.0.1:0".parse().unwrap()).await?;
    /// let text = peer.metrics().await?;
    /// assert!(text.contains("cicada_datagrams_out_total"));
    /// # Ok(()) }
    /// ```
    pub async fn metrics(&self) -> Result<String> {
        let snap = self.snapshot().await?;
        let b = self.bound()?;
        let c = &b.counters;
        Ok(crate::metrics::render(crate::metrics::Inputs {
            me: b.view.me().id,
            core: &snap.stats,
            peers: &snap.peers,
            paths: &snap.paths,
            received: c.received.load(Ordering::Relaxed),
            hooks_dropped: c.hooks_dropped.load(Ordering::Relaxed),
            link_errors: c.link_errors.load(Ordering::Relaxed),
            link_sends: c.link_sends.load(Ordering::Relaxed),
            outcomes: &c.outcomes,
            secure: snap.secure.clone(),
            flows: b.ouroboros.as_ref().map(FlowStatsHandle::get),
        }))
    }

    /// Whether this peer is reachable at its own address, through a port
    /// mapped on its NAT gateway, or only from behind a NAT, and how that
    /// NAT maps; from where its bootstrap and its successor see it (each is
    /// asked once the peer has joined, see [`NatStatus`]). Over Ouroboros,
    /// [`NatStatus::Named`].
    ///
    /// A peer bound to all interfaces (`0.0.0.0:P`, `[::]:P`) announces
    /// the address its bootstrap sees it at (or, when it starts a swarm,
    /// the one its first contact sees it at) and derives its id from it;
    /// behind a NAT that is the NAT's mapping, which other peers can reach
    /// only if the NAT lets them.
    pub fn nat_status(&self) -> Result<NatStatus> {
        let b = self.bound()?;
        let Some(local) = b.local.udp() else {
            return Ok(NatStatus::Named);
        };
        let observations: Vec<(SocketAddr, SocketAddr)> = b
            .view
            .observations()
            .into_iter()
            .filter_map(|(by, seen)| Some((by.udp()?, seen.udp()?)))
            .collect();
        let own = if local.ip().is_unspecified() {
            crate::nat::own_ips()
        } else {
            Vec::new()
        };
        Ok(crate::nat::classify(local, &own, b.mapped, &observations))
    }

    /// Asks the peer at `to` where it sees this one (as STUN does) and
    /// returns that address, waiting at most `timeout` for the answer
    /// ([`Error::Timeout`] with [`Operation::Observe`] without one). The answer also counts towards
    /// [`nat_status`](Self::nat_status): a peer behind a NAT learns how
    /// its NAT maps once two observers at different IP addresses have
    /// answered, and asking one more (for example a peer on another host
    /// than its bootstrap and successor) settles it. `to` need not be a
    /// member of this peer's swarm, only a Cicada peer on the same
    /// transport.
    pub async fn observe(&self, to: impl Into<PeerAddr>, timeout: Duration) -> Result<PeerAddr> {
        let to = to.into();
        let asked = self.ask(|reply| Command::Observe { to, reply });
        tokio::time::timeout(timeout, asked)
            .await
            .unwrap_or(Err(Error::Timeout {
                op: Operation::Observe,
                after: timeout,
            }))
    }

    /// This peer's id.
    pub fn hash(&self) -> Result<Hash> {
        Ok(self.bound()?.view.me().id)
    }

    /// This peer as others know it: its id and external address.
    pub fn me(&self) -> Result<RemoteNode> {
        Ok(self.bound()?.view.me())
    }

    /// The address other peers reach this one at (the external address, or
    /// the Ouroboros name).
    pub fn listener(&self) -> Result<PeerAddr> {
        Ok(self.bound()?.view.me().addr)
    }

    /// The local address the link is bound to (the UDP socket's, or the
    /// Ouroboros name).
    pub fn local_addr(&self) -> Result<PeerAddr> {
        Ok(self.bound()?.local.clone())
    }

    /// The counters.
    pub async fn stats(&self) -> Result<PeerStats> {
        let snap = self.snapshot().await?;
        let (core, secure) = (snap.stats, snap.secure);
        let c = &self.bound()?.counters;
        Ok(PeerStats {
            recv_overflow: core.dropped_no_room,
            core,
            received: c.received.load(Ordering::Relaxed),
            hooks_dropped: c.hooks_dropped.load(Ordering::Relaxed),
            link_errors: c.link_errors.load(Ordering::Relaxed),
            link_sends: c.link_sends.load(Ordering::Relaxed),
            link_parked: c.link_parked.load(Ordering::Relaxed),
            driver_wakeups: c.driver_wakeups.load(Ordering::Relaxed),
            secure,
            ouroboros: self.bound()?.ouroboros.as_ref().map(FlowStatsHandle::get),
        })
    }
}
