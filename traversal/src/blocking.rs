//! A blocking [`PortMapping`] for programs without a tokio runtime.
//!
//! It runs the async [`crate::PortMapping`] on a thread of its own (with a
//! small single-threaded tokio runtime), which also renews the lease.

use std::net::SocketAddr;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::{oneshot, watch};
use tracing::warn;

use crate::mapping::DROP_WAIT;
use crate::{Error, Method, Options, Protocol};

/// A port mapping that lives as long as this value, like
/// [`crate::PortMapping`], but with blocking calls.
///
/// ```no_run
/// use traversal::{blocking::PortMapping, Protocol};
///
/// let mapping = PortMapping::new(4000, Protocol::Udp)?;
/// println!("reachable at {} via {}", mapping.external_addr(), mapping.method());
/// mapping.close()?;
/// # Ok::<(), traversal::Error>(())
/// ```
pub struct PortMapping {
    method: Method,
    protocol: Protocol,
    local_addr: SocketAddr,
    external: watch::Receiver<SocketAddr>,
    lease: Duration,
    request_timeout: Duration,
    stop: Option<oneshot::Sender<()>>,
    done: mpsc::Receiver<Result<(), Error>>,
    thread: Option<JoinHandle<()>>,
}

struct Started {
    method: Method,
    local_addr: SocketAddr,
    external: watch::Receiver<SocketAddr>,
    lease: Duration,
}

impl PortMapping {
    /// Maps local `port` with the default [`Options`]; see
    /// [`crate::PortMapping::new`]. Blocks until the mapping is made or
    /// has failed (a few seconds at most with the default options).
    pub fn new(port: u16, protocol: Protocol) -> Result<PortMapping, Error> {
        PortMapping::with_options(port, protocol, &Options::default())
    }

    /// Maps local `port` with `options`; see
    /// [`crate::PortMapping::with_options`].
    pub fn with_options(
        port: u16,
        protocol: Protocol,
        options: &Options,
    ) -> Result<PortMapping, Error> {
        let options = options.clone();
        let request_timeout = options.request_timeout;
        let (started_tx, started_rx) = mpsc::channel::<Result<Started, Error>>();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let (done_tx, done_rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name(format!("portmap-{protocol}-{port}"))
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = started_tx.send(Err(Error::Io(e)));
                        return;
                    }
                };
                rt.block_on(async move {
                    let mapping =
                        match crate::PortMapping::with_options(port, protocol, &options).await {
                            Ok(m) => m,
                            Err(e) => {
                                let _ = started_tx.send(Err(e));
                                return;
                            }
                        };
                    let started = Started {
                        method: mapping.method(),
                        local_addr: mapping.local_addr(),
                        external: mapping.watch_external(),
                        lease: mapping.lease(),
                    };
                    if started_tx.send(Ok(started)).is_err() {
                        let _ = mapping.close().await;
                        return;
                    }
                    // Renewal runs on this runtime until we are told to stop
                    // (or the owner vanished without telling us).
                    let _ = stop_rx.await;
                    let _ = done_tx.send(mapping.close().await);
                });
            })?;
        let started = match started_rx.recv() {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err(e);
            }
            Err(_) => {
                let _ = thread.join();
                return Err(Error::Io(std::io::Error::other(
                    "the port mapping thread died",
                )));
            }
        };
        Ok(PortMapping {
            method: started.method,
            protocol,
            local_addr: started.local_addr,
            external: started.external,
            lease: started.lease,
            request_timeout,
            stop: Some(stop_tx),
            done: done_rx,
            thread: Some(thread),
        })
    }

    /// The gateway's external address and the mapped external port; see
    /// [`crate::PortMapping::external_addr`].
    pub fn external_addr(&self) -> SocketAddr {
        *self.external.borrow()
    }

    /// The mapped external port.
    #[doc(alias = "eport")]
    pub fn external_port(&self) -> u16 {
        self.external_addr().port()
    }

    /// This host's address toward the gateway, with the mapped local port.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Which protocol made the mapping.
    pub fn method(&self) -> Method {
        self.method
    }

    /// The transport protocol mapped.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// The lease granted when the mapping was made (zero: permanent).
    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// Stops renewing and removes the mapping, waiting at most a little
    /// over the request timeout for the gateway to confirm.
    pub fn close(mut self) -> Result<(), Error> {
        self.finish(self.request_timeout + Duration::from_secs(1))
            .unwrap_or(Err(Error::Timeout {
                method: self.method,
                action: "removal",
                after: self.request_timeout,
            }))
    }

    /// Signals the thread and waits up to `wait` for the removal's result.
    fn finish(&mut self, wait: Duration) -> Option<Result<(), Error>> {
        let stop = self.stop.take()?;
        let _ = stop.send(());
        match self.done.recv_timeout(wait) {
            Ok(result) => {
                if let Some(thread) = self.thread.take() {
                    let _ = thread.join();
                }
                Some(result)
            }
            Err(_) => None,
        }
    }
}

impl Drop for PortMapping {
    fn drop(&mut self) {
        if self.stop.is_none() {
            return;
        }
        let external_port = self.external_port();
        match self.finish(DROP_WAIT) {
            Some(Ok(())) => {}
            Some(Err(e)) => {
                warn!(error = %e, external_port, "removing the port mapping on drop failed")
            }
            None => warn!(
                external_port,
                "the gateway did not confirm the removal in time; it goes on in the background"
            ),
        }
    }
}

impl std::fmt::Debug for PortMapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PortMapping")
            .field("method", &self.method)
            .field("protocol", &self.protocol)
            .field("external_addr", &self.external_addr())
            .field("local_addr", &self.local_addr)
            .field("lease", &self.lease)
            .finish()
    }
}
