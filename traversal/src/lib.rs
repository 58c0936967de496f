//! Port mapping for peers behind a NAT gateway: UPnP IGD first, then NAT-PMP.
//!
//! A [`PortMapping`] asks the gateway of the local network to forward a port
//! of its external (public) address to a port on this host, keeps the
//! mapping alive by renewing its lease in the background, and removes it
//! again when it is closed or dropped.
//!
//! ```no_run
//! use traversal::{PortMapping, Protocol};
//!
//! # async fn demo() -> Result<(), traversal::Error> {
//! // Map UDP port 4000 of this host (the gateway tries to use external port 4000 too).
//! let mapping = PortMapping::new(4000, Protocol::Udp).await?;
//! println!(
//!     "{} reaches {} (via {}, lease {:?})",
//!     mapping.external_addr(),
//!     mapping.local_addr(),
//!     mapping.method(),
//!     mapping.lease(),
//! );
//! // ... use the port; the lease is renewed in the background ...
//! mapping.close().await?; // or just drop it
//! # Ok(())
//! # }
//! ```
//!
//! The two protocols can also be used on their own through [`Upnp`] and
//! [`NatPmp`], and [`blocking::PortMapping`] does the same job without an
//! async runtime of the caller's. `docs/nat.md` in the repository explains
//! how it works and how it is tested against a real `miniupnpd`.

#![warn(missing_docs)]

use std::fmt;
use std::time::Duration;

pub mod blocking;
mod error;
mod mapping;
mod net;
mod pmp;
mod upnp;

pub use error::{natpmp_result_name, upnp_error_name, Error};
pub use mapping::PortMapping;
pub use pmp::NatPmp;
pub use upnp::Upnp;

/// The transport protocol of a port mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// UDP.
    Udp,
    /// TCP.
    Tcp,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Udp => "UDP",
            Protocol::Tcp => "TCP",
        })
    }
}

/// The port mapping protocol that made a mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    /// UPnP Internet Gateway Device (IGDv1 or IGDv2, `WANIPConnection` or
    /// `WANPPPConnection`).
    Upnp,
    /// NAT-PMP (RFC 6886).
    NatPmp,
}

impl Method {
    /// A short lower-case name: `"upnp"` or `"natpmp"`, as used in logs and
    /// in machine-readable output.
    pub fn as_str(&self) -> &'static str {
        match self {
            Method::Upnp => "upnp",
            Method::NatPmp => "natpmp",
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Method::Upnp => "UPnP IGD",
            Method::NatPmp => "NAT-PMP",
        })
    }
}

/// Settings for [`PortMapping::with_options`] and friends.
///
/// Start from [`Options::default()`] and change what you need, with the
/// `with_*` methods or by assigning the fields:
///
/// ```
/// use std::time::Duration;
/// let options = traversal::Options::default()
///     .with_lease(Duration::from_secs(600))
///     .with_external_port(40_000)
///     .with_natpmp(false); // UPnP IGD only
/// assert_eq!(options.external_port, Some(40_000));
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Options {
    /// The lease to ask for. The gateway may grant a shorter one (NAT-PMP) or
    /// insist on a permanent one (UPnP error 725); [`PortMapping::lease`]
    /// tells what was granted. The mapping is renewed at about half the
    /// granted lease. Must be at least one second. Default: one hour.
    pub lease: Duration,
    /// The external port to ask for. `None` (the default) asks for the same
    /// port as the local one. If the gateway cannot give this port, another
    /// one is taken and reported by [`PortMapping::external_port`].
    pub external_port: Option<u16>,
    /// How long to wait for a UPnP gateway to answer the SSDP search.
    /// Default: 2 seconds.
    pub discovery_timeout: Duration,
    /// How long to wait for the gateway to answer one request (a UPnP SOAP
    /// call, or a NAT-PMP request with its retransmissions). Default: 3
    /// seconds.
    pub request_timeout: Duration,
    /// The description stored with a UPnP mapping. Default: `"cicada"`.
    pub description: String,
    /// Whether to try UPnP IGD. Default: `true`.
    pub upnp: bool,
    /// Whether to try NAT-PMP (after UPnP IGD). Default: `true`.
    pub natpmp: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            lease: Duration::from_secs(3600),
            external_port: None,
            discovery_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(3),
            description: "cicada".to_string(),
            upnp: true,
            natpmp: true,
        }
    }
}

impl Options {
    /// Sets [`Options::lease`].
    pub fn with_lease(mut self, lease: Duration) -> Options {
        self.lease = lease;
        self
    }

    /// Sets [`Options::external_port`].
    pub fn with_external_port(mut self, port: u16) -> Options {
        self.external_port = Some(port);
        self
    }

    /// Sets [`Options::discovery_timeout`].
    pub fn with_discovery_timeout(mut self, timeout: Duration) -> Options {
        self.discovery_timeout = timeout;
        self
    }

    /// Sets [`Options::request_timeout`].
    pub fn with_request_timeout(mut self, timeout: Duration) -> Options {
        self.request_timeout = timeout;
        self
    }

    /// Sets [`Options::description`].
    pub fn with_description(mut self, description: impl Into<String>) -> Options {
        self.description = description.into();
        self
    }

    /// Sets [`Options::upnp`]: whether to try UPnP IGD.
    pub fn with_upnp(mut self, enabled: bool) -> Options {
        self.upnp = enabled;
        self
    }

    /// Sets [`Options::natpmp`]: whether to try NAT-PMP.
    pub fn with_natpmp(mut self, enabled: bool) -> Options {
        self.natpmp = enabled;
        self
    }
}

/// What the gateway granted for one mapping request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    /// The external port that was mapped.
    pub external_port: u16,
    /// The lease the gateway granted. Zero means a permanent mapping (a UPnP
    /// gateway that only supports permanent leases).
    pub lease: Duration,
}
