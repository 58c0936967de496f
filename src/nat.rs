//! Pure (but for listing the host's addresses): reachability from observations.
//!
//! [`NatStatus`]: whether a peer is reachable at its own address, through a
//! mapped port, or only from behind a NAT, worked out from where other
//! peers see it (pure: the inputs are gathered by the peer).

use std::net::{IpAddr, SocketAddr};

/// Where a peer stands with respect to NATs, from what its peers observed
/// (see [`crate::SwarmPeer::nat_status`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NatStatus {
    /// No peer has said yet where it sees this one (alone, or just joined).
    Unknown,
    /// Over Ouroboros: peers are reached by name, no NAT is involved.
    Named,
    /// Every peer that said where it sees it sees it at one of its own
    /// interfaces' addresses and its own port: those peers can reach it
    /// first.
    Public {
        /// The address peers see it at.
        addr: SocketAddr,
    },
    /// Its port is mapped on the NAT gateway (UPnP IGD or NAT-PMP): others
    /// reach it at the mapped address.
    Mapped {
        /// The gateway's external address for its port.
        external: SocketAddr,
    },
    /// Behind a NAT that maps nothing for it (at least one peer sees it at
    /// another address than its own): it can reach others, and peers on
    /// that side reach it first only through a hole punched in its NAT
    /// (which works when the NAT maps endpoint-independently; see
    /// `docs/nat.md`, "Hole punching").
    BehindNat {
        /// The address the latest observer sees it at (the NAT's mapping
        /// towards that observer).
        seen: SocketAddr,
        /// How the NAT maps, once two observers at different addresses have
        /// answered.
        mapping: NatMapping,
    },
}

/// How a NAT chooses the external address of a peer's outgoing traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NatMapping {
    /// Fewer than two observers at different IP addresses have answered.
    Unknown,
    /// Every observer sees the same external address: one mapping for all
    /// destinations (hole punching can work).
    EndpointIndependent,
    /// Observers see different external addresses: a mapping per
    /// destination ("symmetric"; hole punching cannot work, a relay must).
    AddressDependent,
}

impl NatStatus {
    /// What the status tells the core's hole punching ([`chord::Reach`]):
    /// a peer behind a NAT that maps per destination cannot be punched.
    pub(crate) fn reach(&self) -> chord::Reach {
        match self {
            NatStatus::Unknown | NatStatus::Named => chord::Reach::Unknown,
            NatStatus::Public { .. } => chord::Reach::Public,
            NatStatus::Mapped { .. } => chord::Reach::Mapped,
            NatStatus::BehindNat {
                mapping: NatMapping::AddressDependent,
                ..
            } => chord::Reach::Symmetric,
            NatStatus::BehindNat { .. } => chord::Reach::Nat,
        }
    }
}

impl std::fmt::Display for NatStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NatStatus::Unknown => write!(f, "unknown"),
            NatStatus::Named => write!(f, "named"),
            NatStatus::Public { .. } => write!(f, "public"),
            NatStatus::Mapped { .. } => write!(f, "mapped"),
            NatStatus::BehindNat {
                mapping: NatMapping::EndpointIndependent,
                ..
            } => write!(f, "nat (endpoint-independent)"),
            NatStatus::BehindNat {
                mapping: NatMapping::AddressDependent,
                ..
            } => write!(f, "nat (address-dependent)"),
            NatStatus::BehindNat { .. } => write!(f, "nat"),
        }
    }
}

/// The status of a peer bound at `local` (its port, and its IP unless it
/// is bound to all interfaces), whose interfaces have the addresses
/// `own_ips`, with a gateway mapping `mapped` if any, given what observers
/// said: `(observer, seen)` pairs, oldest first.
pub(crate) fn classify(
    local: SocketAddr,
    own_ips: &[IpAddr],
    mapped: Option<SocketAddr>,
    observations: &[(SocketAddr, SocketAddr)],
) -> NatStatus {
    if let Some(external) = mapped {
        return NatStatus::Mapped { external };
    }
    let Some(&(_, latest)) = observations.last() else {
        return NatStatus::Unknown;
    };
    let own = |seen: &SocketAddr| {
        seen.port() == local.port()
            && if local.ip().is_unspecified() {
                own_ips.contains(&seen.ip())
            } else {
                seen.ip() == local.ip()
            }
    };
    // Public only if every observer sees it at its own address: one that
    // sees it elsewhere reaches it through a NAT (a LAN host that joined
    // through a peer in its LAN is seen at its own address there, and at
    // the gateway's by peers outside).
    let through_nat: Vec<(SocketAddr, SocketAddr)> = observations
        .iter()
        .copied()
        .filter(|(_, seen)| !own(seen))
        .collect();
    let Some(&(_, latest_nat)) = through_nat.last() else {
        return NatStatus::Public { addr: latest };
    };
    let latest = latest_nat;
    let mut observers: Vec<IpAddr> = through_nat.iter().map(|(by, _)| by.ip()).collect();
    observers.sort();
    observers.dedup();
    let mapping = if observers.len() < 2 {
        NatMapping::Unknown
    } else if through_nat.iter().all(|(_, seen)| *seen == latest) {
        NatMapping::EndpointIndependent
    } else {
        NatMapping::AddressDependent
    };
    NatStatus::BehindNat {
        seen: latest,
        mapping,
    }
}

/// The addresses of this host's interfaces (empty where they cannot be
/// listed).
pub(crate) fn own_ips() -> Vec<IpAddr> {
    #[cfg(target_os = "linux")]
    {
        match nix::ifaddrs::getifaddrs() {
            Ok(addrs) => addrs
                .filter_map(|a| {
                    let a = a.address?;
                    a.as_sockaddr_in()
                        .map(|s| IpAddr::V4(s.ip()))
                        .or_else(|| a.as_sockaddr_in6().map(|s| IpAddr::V6(s.ip())))
                })
                .collect(),
            Err(e) => {
                tracing::debug!(error = %e, "cannot list the interfaces' addresses");
                Vec::new()
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn status_from_observations() {
        let own = [a("10.0.0.2:1").ip(), a("127.0.0.1:1").ip()];
        let any = a("0.0.0.0:5000");
        assert_eq!(classify(any, &own, None, &[]), NatStatus::Unknown);
        let mapped = a("198.18.0.2:6000");
        assert_eq!(
            classify(
                any,
                &own,
                Some(mapped),
                &[(a("198.18.0.1:9"), a("198.18.0.2:1"))]
            ),
            NatStatus::Mapped { external: mapped }
        );
        // Seen at an own address and the own port: public.
        let seen = a("10.0.0.2:5000");
        assert_eq!(
            classify(any, &own, None, &[(a("10.0.0.9:1"), seen)]),
            NatStatus::Public { addr: seen }
        );
        // A bound IP must be the one seen.
        assert_eq!(
            classify(a("127.0.0.1:5000"), &own, None, &[(a("10.0.0.9:1"), seen)]),
            NatStatus::BehindNat {
                seen,
                mapping: NatMapping::Unknown
            }
        );
        // Another address: behind a NAT; its mapping from two observers.
        let ext = a("198.18.0.2:40000");
        let one = [(a("198.18.0.1:9"), ext)];
        assert_eq!(
            classify(any, &own, None, &one),
            NatStatus::BehindNat {
                seen: ext,
                mapping: NatMapping::Unknown
            }
        );
        let same = [(a("198.18.0.1:9"), ext), (a("198.18.0.3:9"), ext)];
        assert_eq!(
            classify(any, &own, None, &same),
            NatStatus::BehindNat {
                seen: ext,
                mapping: NatMapping::EndpointIndependent
            }
        );
        let other = a("198.18.0.2:40001");
        let differ = [(a("198.18.0.1:9"), ext), (a("198.18.0.3:9"), other)];
        assert_eq!(
            classify(any, &own, None, &differ),
            NatStatus::BehindNat {
                seen: other,
                mapping: NatMapping::AddressDependent
            }
        );
        // Seen at its own address by one observer (in its LAN) and through
        // the NAT by another: behind that NAT, not public.
        let lan_and_wan = [(a("10.0.0.9:1"), seen), (a("198.18.0.1:9"), ext)];
        assert_eq!(
            classify(any, &own, None, &lan_and_wan),
            NatStatus::BehindNat {
                seen: ext,
                mapping: NatMapping::Unknown
            }
        );
        let wan_then_lan = [(a("198.18.0.1:9"), ext), (a("10.0.0.9:1"), seen)];
        assert_eq!(
            classify(any, &own, None, &wan_then_lan),
            NatStatus::BehindNat {
                seen: ext,
                mapping: NatMapping::Unknown
            }
        );
        // Two observers on one IP do not tell the mapping apart.
        let one_ip = [(a("198.18.0.1:9"), ext), (a("198.18.0.1:10"), other)];
        assert!(matches!(
            classify(any, &own, None, &one_ip),
            NatStatus::BehindNat {
                mapping: NatMapping::Unknown,
                ..
            }
        ));
    }
}
