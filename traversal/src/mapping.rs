//! [`PortMapping`]: a mapping that lives as long as the value, with lease
//! renewal in a background task.

use std::fmt;
use std::net::{IpAddr, SocketAddr, SocketAddrV4};
use std::sync::mpsc;
use std::time::Duration;

use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::{Error, Grant, Method, NatPmp, Options, Protocol, Upnp};

/// How long dropping a [`PortMapping`] waits for the gateway to confirm the
/// removal. The removal goes on (bounded by the request timeout) after that.
pub(crate) const DROP_WAIT: Duration = Duration::from_secs(1);

/// The gateway protocol behind a mapping.
#[derive(Clone, Debug)]
pub(crate) enum Backend {
    Upnp(Upnp),
    NatPmp(NatPmp),
}

impl Backend {
    fn method(&self) -> Method {
        match self {
            Backend::Upnp(_) => Method::Upnp,
            Backend::NatPmp(_) => Method::NatPmp,
        }
    }

    fn local_ip(&self) -> std::net::Ipv4Addr {
        match self {
            Backend::Upnp(u) => u.local_ip(),
            Backend::NatPmp(n) => n.local_ip(),
        }
    }

    async fn external_ip(&self) -> Result<std::net::Ipv4Addr, Error> {
        match self {
            Backend::Upnp(u) => u.external_ip().await,
            Backend::NatPmp(n) => n.external_ip().await,
        }
    }

    /// Maps `local_port`, preferring `external_port`, taking another if it is taken.
    async fn map(
        &self,
        protocol: Protocol,
        local_port: u16,
        external_port: u16,
        options: &Options,
    ) -> Result<Grant, Error> {
        match self {
            Backend::Upnp(u) => {
                u.add_any_mapping(
                    protocol,
                    local_port,
                    external_port,
                    options.lease,
                    &options.description,
                )
                .await
            }
            Backend::NatPmp(n) => {
                n.add_mapping(protocol, local_port, external_port, options.lease)
                    .await
            }
        }
    }

    async fn unmap(
        &self,
        protocol: Protocol,
        local_port: u16,
        external_port: u16,
    ) -> Result<(), Error> {
        match self {
            Backend::Upnp(u) => u.remove_mapping(protocol, external_port).await,
            Backend::NatPmp(n) => n.remove_mapping(protocol, local_port).await,
        }
    }
}

/// The current state of a mapping, shared with the renewal task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Current {
    external: SocketAddr,
    lease: Duration,
}

/// A port of the gateway's external address, mapped to a port of this host.
///
/// [`PortMapping::new`] tries UPnP IGD first and NAT-PMP second. While the
/// value lives, a background tokio task renews the lease at about half its
/// length (and retries sooner when a renewal fails). [`PortMapping::close`]
/// removes the mapping and reports whether the gateway confirmed it;
/// dropping the value removes it too, waiting at most one second.
///
/// The external address can change while the mapping lives (a renewal after
/// the gateway lost the mapping may get another port): read it again with
/// [`PortMapping::external_addr`], or follow it with
/// [`PortMapping::watch_external`].
///
/// Must be created inside a tokio runtime (it spawns the renewal task);
/// outside one the constructors fail with [`Error::InvalidArgument`]. Without
/// a runtime, use [`crate::blocking::PortMapping`].
///
/// ```no_run
/// use traversal::{PortMapping, Protocol};
///
/// # async fn demo() -> Result<(), traversal::Error> {
/// let socket = tokio::net::UdpSocket::bind("0.0.0.0:0").await?;
/// let port = socket.local_addr()?.port();
/// let mapping = PortMapping::new(port, Protocol::Udp).await?;
/// // Tell peers to send to mapping.external_addr(); they reach `socket`.
/// println!("reachable at {}", mapping.external_addr());
/// # Ok(())
/// # }
/// ```
pub struct PortMapping {
    backend: Backend,
    protocol: Protocol,
    local_addr: SocketAddr,
    current: watch::Receiver<Current>,
    external: watch::Receiver<SocketAddr>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    request_timeout: Duration,
    open: bool,
}

impl PortMapping {
    /// Maps local `port` with the default [`Options`]: the same external port
    /// if it is free (another one if not), a one-hour lease, UPnP IGD first,
    /// then NAT-PMP.
    pub async fn new(port: u16, protocol: Protocol) -> Result<PortMapping, Error> {
        PortMapping::with_options(port, protocol, &Options::default()).await
    }

    /// Maps local `port` with `options`: UPnP IGD first (if enabled), then
    /// NAT-PMP (if enabled). If both are tried and fail, the error is
    /// [`Error::BothFailed`] with both reasons.
    pub async fn with_options(
        port: u16,
        protocol: Protocol,
        options: &Options,
    ) -> Result<PortMapping, Error> {
        check(port, options)?;
        if !options.upnp && !options.natpmp {
            return Err(Error::InvalidArgument(
                "both UPnP IGD and NAT-PMP are disabled",
            ));
        }
        let mut upnp_error = None;
        if options.upnp {
            let attempt = async {
                let igd = Upnp::discover(options.discovery_timeout)
                    .await?
                    .with_request_timeout(options.request_timeout);
                PortMapping::establish(Backend::Upnp(igd), port, protocol, options).await
            };
            match attempt.await {
                Ok(mapping) => return Ok(mapping),
                Err(e) => {
                    info!(error = %e, "UPnP IGD failed");
                    upnp_error = Some(e);
                }
            }
        }
        if options.natpmp {
            let attempt = async {
                let pmp = NatPmp::new()?.with_request_timeout(options.request_timeout);
                PortMapping::establish(Backend::NatPmp(pmp), port, protocol, options).await
            };
            match attempt.await {
                Ok(mapping) => return Ok(mapping),
                Err(e) => {
                    info!(error = %e, "NAT-PMP failed");
                    return Err(match upnp_error {
                        Some(upnp) => Error::BothFailed {
                            upnp: Box::new(upnp),
                            natpmp: Box::new(e),
                        },
                        None => e,
                    });
                }
            }
        }
        Err(upnp_error.unwrap_or(Error::InvalidArgument("no method enabled")))
    }

    /// Maps local `port` through `gateway` (UPnP IGD only).
    pub async fn with_upnp(
        gateway: &Upnp,
        port: u16,
        protocol: Protocol,
        options: &Options,
    ) -> Result<PortMapping, Error> {
        check(port, options)?;
        PortMapping::establish(Backend::Upnp(gateway.clone()), port, protocol, options).await
    }

    /// Maps local `port` through `gateway` (NAT-PMP only).
    pub async fn with_natpmp(
        gateway: &NatPmp,
        port: u16,
        protocol: Protocol,
        options: &Options,
    ) -> Result<PortMapping, Error> {
        check(port, options)?;
        PortMapping::establish(Backend::NatPmp(gateway.clone()), port, protocol, options).await
    }

    async fn establish(
        backend: Backend,
        port: u16,
        protocol: Protocol,
        options: &Options,
    ) -> Result<PortMapping, Error> {
        let method = backend.method();
        let external_ip = backend.external_ip().await?;
        let wanted = options.external_port.unwrap_or(port);
        let grant = backend.map(protocol, port, wanted, options).await?;
        let external = SocketAddr::V4(SocketAddrV4::new(external_ip, grant.external_port));
        let local_addr = SocketAddr::new(IpAddr::V4(backend.local_ip()), port);
        info!(%method, %protocol, %external, local = %local_addr, lease = ?grant.lease, "port mapped");
        if grant.external_port != wanted {
            info!(
                wanted,
                got = grant.external_port,
                "the wanted external port was taken"
            );
        }
        let current = Current {
            external,
            lease: grant.lease,
        };
        let (current_tx, current_rx) = watch::channel(current);
        let (external_tx, external_rx) = watch::channel(external);
        let (stop_tx, stop_rx) = oneshot::channel();
        let renewer = Renewer {
            backend: backend.clone(),
            protocol,
            local_port: port,
            options: options.clone(),
            current: current_tx,
            external: external_tx,
        };
        let task = tokio::spawn(renewer.run(grant, stop_rx));
        Ok(PortMapping {
            backend,
            protocol,
            local_addr,
            current: current_rx,
            external: external_rx,
            stop: Some(stop_tx),
            task: Some(task),
            request_timeout: options.request_timeout,
            open: true,
        })
    }

    /// The gateway's external address and the mapped external port: where
    /// other hosts on the internet reach [`PortMapping::local_addr`].
    pub fn external_addr(&self) -> SocketAddr {
        self.current.borrow().external
    }

    /// The mapped external port. It differs from the local port when the
    /// gateway could not give the one asked for.
    #[doc(alias = "eport")]
    pub fn external_port(&self) -> u16 {
        self.external_addr().port()
    }

    /// This host's address on the interface that routes to the gateway, with
    /// the mapped local port: where the gateway forwards the traffic.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Which protocol made the mapping.
    pub fn method(&self) -> Method {
        self.backend.method()
    }

    /// The transport protocol mapped.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// The lease the gateway granted last; zero means permanent (a UPnP
    /// gateway that only supports permanent leases).
    pub fn lease(&self) -> Duration {
        self.current.borrow().lease
    }

    /// A receiver that sees every change of the external address (for
    /// example to re-advertise it).
    pub fn watch_external(&self) -> watch::Receiver<SocketAddr> {
        self.external.clone()
    }

    /// Stops renewing and removes the mapping from the gateway, waiting at
    /// most the request timeout for the gateway to confirm.
    pub async fn close(mut self) -> Result<(), Error> {
        self.open = false;
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            // The task stops at once on the signal; abort is a safety net.
            let abort = task.abort_handle();
            if tokio::time::timeout(Duration::from_secs(1), task)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
        let external_port = self.external_port();
        debug!(method = %self.method(), external_port, "removing port mapping");
        let removal = tokio::time::timeout(
            self.request_timeout,
            self.backend
                .unmap(self.protocol, self.local_addr.port(), external_port),
        )
        .await;
        match removal {
            Ok(Ok(())) => {
                info!(external_port, "port mapping removed");
                Ok(())
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(Error::Timeout {
                method: self.method(),
                action: "removal",
                after: self.request_timeout,
            }),
        }
    }
}

impl Drop for PortMapping {
    fn drop(&mut self) {
        if !self.open {
            return;
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
        // Drop cannot await, and the caller's runtime may be shutting down:
        // remove the mapping from a thread with its own small runtime, and
        // wait for it a bounded time.
        let backend = self.backend.clone();
        let (protocol, local_port, external_port) =
            (self.protocol, self.local_addr.port(), self.external_port());
        let timeout = self.request_timeout;
        let (done_tx, done_rx) = mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("portmap-remove".into())
            .spawn(move || {
                let result = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt.block_on(async {
                        tokio::time::timeout(
                            timeout,
                            backend.unmap(protocol, local_port, external_port),
                        )
                        .await
                    }),
                    Err(e) => Ok(Err(Error::Io(e))),
                };
                let _ = done_tx.send(result);
            });
        if let Err(e) = spawned {
            warn!(error = %e, external_port, "could not start a thread to remove the port mapping");
            return;
        }
        match done_rx.recv_timeout(DROP_WAIT) {
            Ok(Ok(Ok(()))) => info!(external_port, "port mapping removed on drop"),
            Ok(Ok(Err(e))) => {
                warn!(error = %e, external_port, "removing the port mapping on drop failed")
            }
            Ok(Err(_)) | Err(_) => {
                warn!(
                    external_port,
                    "the gateway did not confirm the removal in time; it goes on in the background"
                )
            }
        }
    }
}

impl fmt::Debug for PortMapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PortMapping")
            .field("method", &self.method())
            .field("protocol", &self.protocol)
            .field("external_addr", &self.external_addr())
            .field("local_addr", &self.local_addr)
            .field("lease", &self.lease())
            .finish()
    }
}

fn check(port: u16, options: &Options) -> Result<(), Error> {
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(Error::InvalidArgument(
            "PortMapping needs a tokio runtime (use traversal::blocking::PortMapping without one)",
        ));
    }
    if port == 0 {
        return Err(Error::InvalidArgument("port 0 cannot be mapped"));
    }
    if options.lease < Duration::from_secs(1) {
        return Err(Error::InvalidArgument(
            "the lease must be at least one second",
        ));
    }
    if options.external_port == Some(0) {
        return Err(Error::InvalidArgument("external port 0 cannot be mapped"));
    }
    Ok(())
}

/// When to renew a lease granted `lease` ago: at half of it, but not more
/// often than twice a second.
pub(crate) fn renew_after(lease: Duration) -> Duration {
    (lease / 2).max(Duration::from_millis(500))
}

/// When to retry a failed renewal: soon, but not in a tight loop.
pub(crate) fn retry_after(lease: Duration) -> Duration {
    (lease / 8).clamp(Duration::from_millis(250), Duration::from_secs(30))
}

/// The background task that keeps a mapping alive.
struct Renewer {
    backend: Backend,
    protocol: Protocol,
    local_port: u16,
    options: Options,
    current: watch::Sender<Current>,
    external: watch::Sender<SocketAddr>,
}

impl Renewer {
    async fn run(self, mut grant: Grant, mut stop: oneshot::Receiver<()>) {
        let method = self.backend.method();
        let mut wait = renew_after(grant.lease);
        loop {
            if grant.lease.is_zero() {
                debug!(%method, "permanent mapping: nothing to renew");
                let _ = stop.await;
                return;
            }
            tokio::select! {
                _ = &mut stop => return,
                _ = tokio::time::sleep(wait) => {}
            }
            let renewal = tokio::select! {
                _ = &mut stop => return,
                r = self.renew() => r,
            };
            match renewal {
                Ok(g) => {
                    debug!(%method, external_port = g.external_port, lease = ?g.lease, "lease renewed");
                    grant = g;
                    wait = renew_after(grant.lease);
                }
                Err(e) => {
                    wait = retry_after(grant.lease);
                    warn!(%method, error = %e, retry_in = ?wait, "renewing the port mapping failed");
                }
            }
        }
    }

    async fn renew(&self) -> Result<Grant, Error> {
        let before = *self.current.borrow();
        let grant = self
            .backend
            .map(
                self.protocol,
                self.local_port,
                before.external.port(),
                &self.options,
            )
            .await?;
        // The gateway's external address can change too (a new WAN lease).
        let ip = match self.backend.external_ip().await {
            Ok(ip) => IpAddr::V4(ip),
            Err(e) => {
                debug!(error = %e, "could not refresh the external address");
                before.external.ip()
            }
        };
        let now = Current {
            external: SocketAddr::new(ip, grant.external_port),
            lease: grant.lease,
        };
        if now.external != before.external {
            info!(old = %before.external, new = %now.external, "the external address changed");
            self.external.send_replace(now.external);
        }
        self.current.send_replace(now);
        Ok(grant)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;

    #[test]
    fn renewal_schedule() {
        assert_eq!(
            renew_after(Duration::from_secs(3600)),
            Duration::from_secs(1800)
        );
        assert_eq!(renew_after(Duration::from_secs(4)), Duration::from_secs(2));
        assert_eq!(
            renew_after(Duration::from_secs(1)),
            Duration::from_millis(500)
        );
        assert_eq!(
            retry_after(Duration::from_secs(3600)),
            Duration::from_secs(30)
        );
        assert_eq!(
            retry_after(Duration::from_secs(4)),
            Duration::from_millis(500)
        );
        assert_eq!(
            retry_after(Duration::from_secs(1)),
            Duration::from_millis(250)
        );
    }

    #[test]
    fn without_a_runtime_the_error_says_so() {
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        let mut f = std::pin::pin!(PortMapping::new(4000, Protocol::Udp));
        match f.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(Err(Error::InvalidArgument(why))) => {
                assert!(why.contains("tokio runtime"))
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn bad_arguments_are_refused_before_any_traffic() {
        let e = PortMapping::new(0, Protocol::Udp).await.unwrap_err();
        assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
        let o = Options::default().with_lease(Duration::from_millis(10));
        let e = PortMapping::with_options(4000, Protocol::Udp, &o)
            .await
            .unwrap_err();
        assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
        let o = Options::default().with_upnp(false).with_natpmp(false);
        let e = PortMapping::with_options(4000, Protocol::Tcp, &o)
            .await
            .unwrap_err();
        assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
    }
}
