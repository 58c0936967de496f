//! API: sends, broadcasts, receives, routes; commands handed to the driver.

use std::time::Duration;

use bytes::Bytes;
use chord::Hash;
use tokio::sync::mpsc;

use super::{resolve, SwarmPeer};
use crate::driver::Command;
use crate::error::{Error, Operation, Result};
use crate::remote::{node_id, Delivery, Received, Route, SendOptions, SendTarget};

impl SwarmPeer {
    /// Sends `data` to `target` and waits until the destination confirmed it:
    /// [`send_with`](Self::send_with) with the default [`SendOptions`] (no
    /// extra copies; waiting until the peer's
    /// [`send_timeout`](crate::PeerConfig::send_timeout) at most).
    ///
    /// A target naming a peer (an address, a `(host, port)`, a
    /// [`RemoteNode`](crate::RemoteNode), a `&SwarmPeer`) reaches exactly that peer or fails
    /// when it is gone; a [`Hash`](struct@Hash) reaches whichever live peer owns the key.
    ///
    /// **`Ok` means received.** The destination confirms a message only
    /// once it is in its application's hands: queued for `recv` (and for
    /// the `recv` hook, when one is set), exactly once however many copies
    /// or retries arrive. While the destination's receive queue is full it
    /// answers "busy" instead, and this send tries again (after 10 ms,
    /// doubling to at most 250 ms) until there is room or the send timeout
    /// ([`PeerConfig::send_timeout`](crate::PeerConfig::send_timeout), 10 s by default) passes; then it fails
    /// with [`chord::SendError::ReceiverBusy`] and the message was not
    /// delivered. Other failures: [`chord::SendError::NoSuchNode`] (the
    /// target peer is gone), [`chord::SendError::Timeout`] (no answer;
    /// the message may or may not have arrived, as with any lost
    /// acknowledgement), and refusals before anything is sent (not joined,
    /// too large, too many in flight).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), cicada::Error> {
    /// use std::time::Duration;
    /// use cicada::SwarmPeer;
    ///
    /// let mut a = SwarmPeer::new(cicada::Hooks::new());
    /// a.bind("127.0.0.1:0".parse().unwrap()).await?;
    /// let mut b = SwarmPeer::new(cicada::Hooks::new());
    /// b.bind("127.0.0.1:0".parse().unwrap()).await?;
    /// b.connect(a.listener()?, Duration::from_secs(5)).await?;
    /// let delivery = b.send(a.listener()?, "hello").await?;
    /// assert_eq!(delivery.to.addr, a.listener()?);
    /// let got = a.recv().await?;
    /// assert_eq!((got.from.addr, &got.data[..]), (b.listener()?, &b"hello"[..]));
    /// # Ok(()) }
    /// ```
    pub async fn send(
        &self,
        target: impl Into<SendTarget>,
        data: impl Into<Bytes>,
    ) -> Result<Delivery> {
        self.send_confirmed(target.into(), data.into(), 0, None)
            .await
    }

    /// Like [`send`](Self::send), with [`SendOptions`]: extra copies
    /// routed through other peers (`duplicates`), for resilience against
    /// peers that drop messages, and the longest this call waits
    /// (`timeout`).
    ///
    /// When `timeout` passes before the destination confirmed, the call
    /// fails with [`Error::Timeout`] ([`Operation::Send`]) and the message
    /// is withdrawn: the peer makes no attempt after it. One already under
    /// way may still arrive, as after any lost acknowledgement. A `timeout`
    /// longer than [`send_timeout`](crate::PeerConfig::send_timeout) does
    /// not extend the attempts.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), cicada::Error> {
    /// use std::time::Duration;
    /// use cicada::{SendOptions, SwarmPeer};
    ///
    /// let mut a = SwarmPeer::new(cicada::Hooks::new());
    /// a.bind("127.0.0.1:0".parse().unwrap()).await?;
    /// let mut b = SwarmPeer::new(cicada::Hooks::new());
    /// b.bind("127.0.0.1:0".parse().unwrap()).await?;
    /// b.connect(a.listener()?, Duration::from_secs(5)).await?;
    /// let options = SendOptions::new().duplicates(1).timeout(Duration::from_secs(2));
    /// b.send_with(a.listener()?, "twice routed, once received", options).await?;
    /// assert_eq!(&a.recv().await?.data[..], b"twice routed, once received");
    /// # Ok(()) }
    /// ```
    pub async fn send_with(
        &self,
        target: impl Into<SendTarget>,
        data: impl Into<Bytes>,
        options: SendOptions,
    ) -> Result<Delivery> {
        let until = options.timeout.map(|t| std::time::Instant::now() + t);
        let sent = self.send_confirmed(target.into(), data.into(), options.duplicates, until);
        let timed_out = Error::Timeout {
            op: Operation::Send,
            after: options.timeout.unwrap_or_default(),
        };
        match (options.timeout, until) {
            (Some(after), Some(until)) => match tokio::time::timeout(after, sent).await {
                // The peer gives the message up at the same deadline: its
                // failure then is this timeout.
                Ok(Err(_)) if std::time::Instant::now() >= until => Err(timed_out),
                Ok(r) => r,
                Err(_) => Err(timed_out),
            },
            _ => sent.await,
        }
    }

    /// A confirmed send, waiting for its outcome.
    async fn send_confirmed(
        &self,
        target: SendTarget,
        payload: Bytes,
        duplicates: u8,
        until: Option<std::time::Instant>,
    ) -> Result<Delivery> {
        let target = self.target(target).await?;
        let timeout = until.map(|u| u.saturating_duration_since(std::time::Instant::now()));
        let (to, hops) = self
            .ask(|reply| Command::Send {
                target,
                payload,
                duplicates,
                timeout,
                reply,
            })
            .await??;
        Ok(Delivery { to, hops })
    }

    /// Sends `data` to `target` once, unconfirmed, the way a UDP socket
    /// sends: no acknowledgement at any hop, no retry, no confirmation,
    /// and nothing kept anywhere for it. For state that the next message
    /// makes stale anyway (positions in a game, sensor readings).
    ///
    /// `Ok` says the datagram left this peer, not that it arrived; a
    /// datagram lost on the way, or dropped by a peer with no way on, is
    /// gone without a word (counted in the dropping peer's
    /// `core.datagrams_dropped`), and so is one that finds the receiver's
    /// queue full (counted in its `recv_overflow`). The receiver gets it
    /// from `recv` like any message. It must fit one datagram: at most `max_fragment` bytes
    /// (1,200 by default), else [`Error::Send`] with
    /// [`TooLarge`](chord::SendError::TooLarge). Fails at once with
    /// `NoSuchNode` or `NoRoute` when this peer already knows it cannot
    /// go on. Targets as for [`send`](Self::send).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), cicada::Error> {
    /// use std::time::Duration;
    /// use cicada::SwarmPeer;
    ///
    /// let mut a = SwarmPeer::new(cicada::Hooks::new());
    /// a.bind("127.0.0.1:0".parse().unwrap()).await?;
    /// let mut b = SwarmPeer::new(cicada::Hooks::new());
    /// b.bind("127.0.0.1:0".parse().unwrap()).await?;
    /// b.connect(a.listener()?, Duration::from_secs(5)).await?;
    /// b.send_datagram(a.listener()?, b"position 3,4").await?;
    /// let got = a.recv_timeout(Duration::from_secs(5)).await?;
    /// assert_eq!(got.map(|m| m.data.to_vec()), Some(b"position 3,4".to_vec()));
    /// # Ok(()) }
    /// ```
    pub async fn send_datagram(
        &self,
        target: impl Into<SendTarget>,
        data: impl AsRef<[u8]>,
    ) -> Result<()> {
        let target = self.target(target.into()).await?;
        let handle = self.bound()?.handle().ok_or(Error::Closed)?;
        handle.send_unconfirmed(target, data.as_ref()).await
    }

    /// The core's target for `t`: a peer's id (derived from its address),
    /// or a key.
    async fn target(&self, t: SendTarget) -> Result<chord::Target> {
        Ok(match t {
            SendTarget::Addr(a) => chord::Target::Node(self.bound()?.id_of(a)),
            SendTarget::Host(h, p) => chord::Target::Node(node_id(&resolve(&h, p).await?.into())),
            SendTarget::Node(id) => chord::Target::Node(id),
            SendTarget::Key(k) => chord::Target::Key(k),
            SendTarget::Unbound => return Err(Error::NotBound),
        })
    }

    /// Sends `data` to every other peer of the swarm, each receiving it once.
    /// Resolves when the broadcast is accepted: nobody confirms a
    /// broadcast, and a peer whose receive queue is full drops it (counted
    /// in its `recv_overflow`).
    pub async fn broadcast(&self, data: impl Into<Bytes>) -> Result<()> {
        let payload = data.into().to_vec();
        self.ask(|reply| Command::Broadcast { payload, reply })
            .await?
    }

    /// Waits for the next application message: its sender, its data, and
    /// whether more are queued already (see [`Received`]). Fails with [`Error::Closed`] once the
    /// peer is closed and the queue is empty.
    pub async fn recv(&self) -> Result<Received> {
        let b = self.bound()?;
        let mut inbox = b.inbox.lock().await;
        let m = inbox.recv().await.ok_or(Error::Closed)?;
        Ok(Received {
            from: m.from,
            data: m.data,
            more: !inbox.is_empty(),
        })
    }

    /// The next application message if one is queued, without waiting.
    pub fn try_recv(&self) -> Result<Option<Received>> {
        let b = self.bound()?;
        let Ok(mut inbox) = b.inbox.try_lock() else {
            return Ok(None); // another task is receiving
        };
        match inbox.try_recv() {
            Ok(m) => Ok(Some(Received {
                from: m.from,
                data: m.data,
                more: !inbox.is_empty(),
            })),
            Err(mpsc::error::TryRecvError::Empty) => Ok(None),
            Err(mpsc::error::TryRecvError::Disconnected) => Err(Error::Closed),
        }
    }

    /// Like [`recv`](Self::recv), but gives up after `timeout` with `Ok(None)`.
    pub async fn recv_timeout(&self, timeout: Duration) -> Result<Option<Received>> {
        match tokio::time::timeout(timeout, self.recv()).await {
            Ok(r) => r.map(Some),
            Err(_) => Ok(None),
        }
    }

    /// Looks up the live peer responsible for `key`, and the hops it took.
    pub async fn get_route(&self, key: Hash) -> Result<Route> {
        let (owner, hops) = self.ask(|reply| Command::Lookup { key, reply }).await??;
        Ok(Route { owner, hops })
    }
}
