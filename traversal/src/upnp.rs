//! UPnP IGD port mapping (through `igd-next`).

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use igd_next::aio::tokio::{search_gateway, Tokio};
use igd_next::aio::Gateway;
use igd_next::{
    AddPortError, GatewayIpVersion, PortMappingProtocol, RemovePortError, RequestError,
};
use igd_next::{GetExternalIpError, SearchError, SearchOptions};
use tracing::{debug, info};

use crate::net::{local_ipv4_toward, PortPicker};
use crate::{Error, Grant, Method, Options, PortMapping, Protocol};

/// How many other external ports to try when the wanted one is taken.
const OTHER_PORT_TRIES: usize = 16;

/// A UPnP Internet Gateway Device found on the local network.
///
/// Use it directly if you want UPnP IGD only; [`PortMapping::new`] uses it
/// first and falls back to NAT-PMP.
///
/// ```no_run
/// use std::time::Duration;
/// use traversal::{Protocol, Upnp};
///
/// # async fn demo() -> Result<(), traversal::Error> {
/// let igd = Upnp::discover(Duration::from_secs(2)).await?;
/// println!("gateway {} says our external address is {}", igd.gateway_addr(), igd.external_ip().await?);
/// let grant = igd
///     .add_mapping(Protocol::Tcp, 8080, 8080, Duration::from_secs(600), "my server")
///     .await?;
/// igd.remove_mapping(Protocol::Tcp, grant.external_port).await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct Upnp {
    gateway: Gateway<Tokio>,
    local_ip: Ipv4Addr,
    timeout: Duration,
}

impl Upnp {
    /// Searches the local network for an IGD with SSDP (`M-SEARCH` to
    /// 239.255.255.250:1900) and waits at most `timeout` for one to answer
    /// and describe itself. IGDv1 and IGDv2 with a `WANIPConnection` or
    /// `WANPPPConnection` service are accepted.
    ///
    /// Requests to the gateway found are then given 3 seconds each; see
    /// [`Upnp::with_request_timeout`].
    pub async fn discover(timeout: Duration) -> Result<Upnp, Error> {
        let mut options = SearchOptions::default();
        options.timeout = Some(timeout);
        options.single_search_timeout = Some(timeout);
        options.gateway_ip_version = GatewayIpVersion::V4;
        debug!(?timeout, "UPnP: searching for an IGD with SSDP");
        // igd-next enforces `timeout` itself; the outer bound is a safety net.
        let found =
            tokio::time::timeout(timeout + Duration::from_secs(1), search_gateway(options)).await;
        let gateway = match found {
            Err(_) | Ok(Err(SearchError::NoResponseWithinTimeout)) => {
                return Err(Error::NoGateway {
                    method: Method::Upnp,
                    reason: format!("no IGD answered the SSDP search within {timeout:?}"),
                })
            }
            Ok(Err(e)) => {
                return Err(Error::NoGateway {
                    method: Method::Upnp,
                    reason: format!("SSDP search failed: {e}"),
                })
            }
            Ok(Ok(gateway)) => gateway,
        };
        let local_ip = local_ipv4_toward(gateway.addr).map_err(|e| Error::Unsupported {
            method: Method::Upnp,
            reason: format!("gateway {} is not reachable over IPv4: {e}", gateway.addr),
        })?;
        info!(
            gateway = %gateway.addr,
            service = %gateway.service_type,
            %local_ip,
            "UPnP: found an IGD"
        );
        Ok(Upnp {
            gateway,
            local_ip,
            timeout: Options::default().request_timeout,
        })
    }

    /// Sets how long each request to the gateway may take (default 3 s).
    pub fn with_request_timeout(mut self, timeout: Duration) -> Upnp {
        self.timeout = timeout;
        self
    }

    /// The address of the gateway's control endpoint (HTTP).
    pub fn gateway_addr(&self) -> SocketAddr {
        self.gateway.addr
    }

    /// The WAN connection service in use, e.g.
    /// `urn:schemas-upnp-org:service:WANIPConnection:1`.
    pub fn service_type(&self) -> &str {
        &self.gateway.service_type
    }

    /// This host's address on the interface that routes to the gateway: the
    /// internal client of every mapping made through this gateway.
    pub fn local_ip(&self) -> Ipv4Addr {
        self.local_ip
    }

    /// Asks the gateway for its external IPv4 address
    /// (`GetExternalIPAddress`).
    pub async fn external_ip(&self) -> Result<Ipv4Addr, Error> {
        const ACTION: &str = "GetExternalIPAddress";
        let ip = self
            .bounded(ACTION, self.gateway.get_external_ip())
            .await?
            .map_err(|e| match e {
                GetExternalIpError::ActionNotAuthorized => Error::refused_upnp(ACTION, 606, ""),
                GetExternalIpError::RequestError(e) => request_error(ACTION, e),
            })?;
        match ip {
            IpAddr::V4(ip) => Ok(ip),
            IpAddr::V6(ip) => Err(Error::Unsupported {
                method: Method::Upnp,
                reason: format!("the gateway reports an IPv6 external address {ip}"),
            }),
        }
    }

    /// Maps `external_port` of the gateway to `internal_port` of this host
    /// (`AddPortMapping`), for `lease` (rounded to whole seconds). Fails with
    /// [`Error::Refused`] code 718 if another host holds that external port;
    /// [`Upnp::add_any_mapping`] takes another port instead. A gateway that
    /// only supports permanent leases (error 725) is asked again for a
    /// permanent one, and the [`Grant`] says so with a zero lease.
    pub async fn add_mapping(
        &self,
        protocol: Protocol,
        internal_port: u16,
        external_port: u16,
        lease: Duration,
        description: &str,
    ) -> Result<Grant, Error> {
        if internal_port == 0 || external_port == 0 {
            return Err(Error::InvalidArgument("port 0 cannot be mapped"));
        }
        let secs = lease_secs(lease);
        match self
            .add_port(protocol, internal_port, external_port, secs, description)
            .await
        {
            Err(e) if e.code() == Some(725) && secs != 0 => {
                info!("UPnP: the gateway only supports permanent leases; asking for one");
                self.add_port(protocol, internal_port, external_port, 0, description)
                    .await?;
                Ok(Grant {
                    external_port,
                    lease: Duration::ZERO,
                })
            }
            Err(e) => Err(e),
            Ok(()) => Ok(Grant {
                external_port,
                lease: Duration::from_secs(secs.into()),
            }),
        }
    }

    /// Like [`Upnp::add_mapping`], but if `external_port` is taken (error 718
    /// ConflictInMappingEntry, or 729 ConflictWithOtherMechanisms when the
    /// gateway itself uses it) it tries other ports and returns the one it
    /// got.
    pub async fn add_any_mapping(
        &self,
        protocol: Protocol,
        internal_port: u16,
        external_port: u16,
        lease: Duration,
        description: &str,
    ) -> Result<Grant, Error> {
        let first = self
            .add_mapping(protocol, internal_port, external_port, lease, description)
            .await;
        let mut last = match first {
            Err(e) if matches!(e.code(), Some(718) | Some(729)) => e,
            other => return other,
        };
        let mut picker =
            PortPicker::new(u64::from(u32::from(self.local_ip)) << 16 | u64::from(internal_port));
        for _ in 0..OTHER_PORT_TRIES {
            let candidate = picker.next_port();
            if candidate == external_port {
                continue;
            }
            debug!(
                wanted = external_port,
                candidate, "UPnP: external port taken, trying another"
            );
            match self
                .add_mapping(protocol, internal_port, candidate, lease, description)
                .await
            {
                Err(e) if matches!(e.code(), Some(718) | Some(729)) => last = e,
                other => return other,
            }
        }
        Err(last)
    }

    /// Removes the mapping of `external_port` (`DeletePortMapping`).
    pub async fn remove_mapping(
        &self,
        protocol: Protocol,
        external_port: u16,
    ) -> Result<(), Error> {
        const ACTION: &str = "DeletePortMapping";
        self.bounded(
            ACTION,
            self.gateway
                .remove_port(igd_protocol(protocol), external_port),
        )
        .await?
        .map_err(|e| match e {
            RemovePortError::ActionNotAuthorized => Error::refused_upnp(ACTION, 606, ""),
            RemovePortError::NoSuchPortMapping => Error::refused_upnp(ACTION, 714, ""),
            RemovePortError::RequestError(e) => request_error(ACTION, e),
        })
    }

    /// Maps `port` through this gateway only, with lease renewal and removal
    /// on drop: the same as [`PortMapping::with_upnp`].
    pub async fn map(
        &self,
        port: u16,
        protocol: Protocol,
        options: &Options,
    ) -> Result<PortMapping, Error> {
        PortMapping::with_upnp(self, port, protocol, options).await
    }

    async fn add_port(
        &self,
        protocol: Protocol,
        internal_port: u16,
        external_port: u16,
        lease_secs: u32,
        description: &str,
    ) -> Result<(), Error> {
        const ACTION: &str = "AddPortMapping";
        let local = SocketAddr::V4(SocketAddrV4::new(self.local_ip, internal_port));
        debug!(%protocol, external_port, %local, lease_secs, "UPnP: AddPortMapping");
        self.bounded(
            ACTION,
            self.gateway.add_port(
                igd_protocol(protocol),
                external_port,
                local,
                lease_secs,
                description,
            ),
        )
        .await?
        .map_err(|e| match e {
            AddPortError::ActionNotAuthorized => Error::refused_upnp(ACTION, 606, ""),
            AddPortError::PortInUse => Error::refused_upnp(ACTION, 718, ""),
            AddPortError::SamePortValuesRequired => Error::refused_upnp(ACTION, 724, ""),
            AddPortError::OnlyPermanentLeasesSupported => Error::refused_upnp(ACTION, 725, ""),
            AddPortError::DescriptionTooLong => Error::refused_upnp(ACTION, 605, ""),
            AddPortError::InternalPortZeroInvalid | AddPortError::ExternalPortZeroInvalid => {
                Error::InvalidArgument("port 0 cannot be mapped")
            }
            AddPortError::RequestError(e) => request_error(ACTION, e),
        })
    }

    async fn bounded<T>(
        &self,
        action: &'static str,
        f: impl std::future::Future<Output = T>,
    ) -> Result<T, Error> {
        tokio::time::timeout(self.timeout, f)
            .await
            .map_err(|_| Error::Timeout {
                method: Method::Upnp,
                action,
                after: self.timeout,
            })
    }
}

fn igd_protocol(protocol: Protocol) -> PortMappingProtocol {
    match protocol {
        Protocol::Udp => PortMappingProtocol::UDP,
        Protocol::Tcp => PortMappingProtocol::TCP,
    }
}

/// A lease in whole seconds for the wire; at least one second, because 0
/// asks UPnP for a permanent mapping.
pub(crate) fn lease_secs(lease: Duration) -> u32 {
    u32::try_from(lease.as_secs()).unwrap_or(u32::MAX).max(1)
}

fn request_error(action: &'static str, e: RequestError) -> Error {
    match e {
        RequestError::ErrorCode(code, description) => {
            Error::refused_upnp(action, code, &description)
        }
        RequestError::UnsupportedAction(what) => Error::Unsupported {
            method: Method::Upnp,
            reason: format!("the gateway does not offer the {what} action"),
        },
        other => Error::Request {
            method: Method::Upnp,
            action,
            reason: other.to_string(),
        },
    }
}
