//! Pure: peer addresses, their text and wire forms; no I/O.
//!
//! [`PeerAddr`]: how one peer reaches another, a UDP socket address or an
//! Ouroboros name. The Chord core carries it without looking inside.

use std::fmt;
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::str::FromStr;

use serde::de::{self, EnumAccess, VariantAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest Ouroboros name (`NAME_SIZE` of Ouroboros 0.23).
pub const MAX_NAME_LEN: usize = 255;

/// Where a peer is reached: a UDP socket address, or a name in an Ouroboros
/// layer. A peer's id is SHA-256 of the address as [`Display`](fmt::Display)
/// writes it (`ip:port`, or the bare name), see [`crate::node_id`].
///
/// `From<SocketAddr>` keeps UDP code as it was:
///
/// ```
/// use cicada::PeerAddr;
/// let udp: PeerAddr = "127.0.0.1:4000".parse::<std::net::SocketAddr>().unwrap().into();
/// assert_eq!(udp.to_string(), "127.0.0.1:4000");
/// let name = PeerAddr::ouroboros("alice").unwrap();
/// assert_eq!(name.to_string(), "alice");
/// // Text parses as a socket address when it is one, as a name otherwise.
/// assert_eq!("127.0.0.1:4000".parse::<PeerAddr>().unwrap(), udp);
/// assert_eq!("alice".parse::<PeerAddr>().unwrap(), name);
/// ```
///
/// On the wire a UDP address is encoded exactly as a `SocketAddr` is (enum
/// variants 0 and 1), so a peer whose core uses plain `SocketAddr`s (such as
/// `examples/std_peer.rs`) interoperates; a name is variant 2.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PeerAddr {
    /// A UDP socket address.
    Udp(SocketAddr),
    /// An Ouroboros name (1 to [`MAX_NAME_LEN`] bytes, no NUL).
    Ouroboros(String),
}

/// Why text is not a valid Ouroboros name.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not a valid Ouroboros name: {0:?} (1 to 255 bytes, no NUL)")]
pub struct InvalidName(pub String);

impl PeerAddr {
    /// An Ouroboros name, checked.
    pub fn ouroboros(name: impl Into<String>) -> Result<PeerAddr, InvalidName> {
        let name = name.into();
        if valid_name(&name) {
            Ok(PeerAddr::Ouroboros(name))
        } else {
            Err(InvalidName(name))
        }
    }

    /// The socket address, for a UDP peer.
    pub fn udp(&self) -> Option<SocketAddr> {
        match self {
            PeerAddr::Udp(a) => Some(*a),
            PeerAddr::Ouroboros(_) => None,
        }
    }

    /// The name, for an Ouroboros peer.
    pub fn name(&self) -> Option<&str> {
        match self {
            PeerAddr::Udp(_) => None,
            PeerAddr::Ouroboros(n) => Some(n),
        }
    }

    /// Whether this is an IPv6 socket address.
    pub fn is_ipv6(&self) -> bool {
        self.udp().is_some_and(|a| a.is_ipv6())
    }
}

pub(crate) fn valid_name(n: &str) -> bool {
    !n.is_empty() && n.len() <= MAX_NAME_LEN && !n.contains('\0')
}

impl fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerAddr::Udp(a) => a.fmt(f),
            PeerAddr::Ouroboros(n) => f.write_str(n),
        }
    }
}

impl FromStr for PeerAddr {
    type Err = InvalidName;
    /// A socket address when the text is one, an Ouroboros name otherwise.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.parse::<SocketAddr>() {
            Ok(a) => Ok(PeerAddr::Udp(a)),
            Err(_) => PeerAddr::ouroboros(s),
        }
    }
}

/// An IPv4-mapped IPv6 address (how a dual-stack socket sees an IPv4
/// peer) as the IPv4 address it is: one peer, one address, one id.
fn canonical(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip().to_canonical(), a.port())
}

impl From<SocketAddr> for PeerAddr {
    fn from(a: SocketAddr) -> Self {
        PeerAddr::Udp(canonical(a))
    }
}

impl From<&SocketAddr> for PeerAddr {
    fn from(a: &SocketAddr) -> Self {
        PeerAddr::Udp(canonical(*a))
    }
}

impl From<&PeerAddr> for PeerAddr {
    fn from(a: &PeerAddr) -> Self {
        a.clone()
    }
}

impl PartialEq<SocketAddr> for PeerAddr {
    fn eq(&self, other: &SocketAddr) -> bool {
        self.udp() == Some(*other)
    }
}

impl PartialEq<PeerAddr> for SocketAddr {
    fn eq(&self, other: &PeerAddr) -> bool {
        other == self
    }
}

impl std::net::ToSocketAddrs for PeerAddr {
    type Iter = std::option::IntoIter<SocketAddr>;
    /// The socket address of a UDP peer; an error for an Ouroboros name.
    fn to_socket_addrs(&self) -> std::io::Result<Self::Iter> {
        match self {
            PeerAddr::Udp(a) => Ok(Some(*a).into_iter()),
            PeerAddr::Ouroboros(n) => Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{n} is an Ouroboros name, not a socket address"),
            )),
        }
    }
}

const ENUM: &str = "SocketAddr";
const VARIANTS: &[&str] = &["V4", "V6", "Ouroboros"];

impl Serialize for PeerAddr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            return s.collect_str(self);
        }
        match self {
            // Exactly serde's encoding of SocketAddr: variants 0 (V4), 1 (V6).
            PeerAddr::Udp(a) => a.serialize(s),
            PeerAddr::Ouroboros(n) => s.serialize_newtype_variant(ENUM, 2, "Ouroboros", n),
        }
    }
}

#[derive(Deserialize)]
enum Tag {
    V4,
    V6,
    Ouroboros,
}

struct AddrVisitor;

impl<'de> Visitor<'de> for AddrVisitor {
    type Value = PeerAddr;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a socket address or an Ouroboros name")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<PeerAddr, E> {
        v.parse().map_err(E::custom)
    }

    fn visit_enum<D: EnumAccess<'de>>(self, data: D) -> Result<PeerAddr, D::Error> {
        let (tag, v) = data.variant::<Tag>()?;
        Ok(match tag {
            Tag::V4 => PeerAddr::Udp(SocketAddr::V4(v.newtype_variant::<SocketAddrV4>()?)),
            Tag::V6 => PeerAddr::Udp(SocketAddr::V6(v.newtype_variant::<SocketAddrV6>()?)),
            Tag::Ouroboros => {
                let n: String = v.newtype_variant()?;
                if !valid_name(&n) {
                    return Err(de::Error::custom("invalid Ouroboros name"));
                }
                PeerAddr::Ouroboros(n)
            }
        })
    }
}

impl<'de> Deserialize<'de> for PeerAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<PeerAddr, D::Error> {
        if d.is_human_readable() {
            d.deserialize_str(AddrVisitor)
        } else {
            d.deserialize_enum(ENUM, VARIANTS, AddrVisitor)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udp_addresses_encode_as_socket_addrs() {
        for s in ["127.0.0.1:4000", "[::1]:5", "10.1.2.3:65535"] {
            let a: SocketAddr = s.parse().unwrap();
            let plain = postcard::to_allocvec(&a).unwrap();
            let ours = postcard::to_allocvec(&PeerAddr::from(a)).unwrap();
            assert_eq!(plain, ours, "{s}");
            let back: PeerAddr = postcard::from_bytes(&plain).unwrap();
            assert_eq!(back, a);
        }
    }

    #[test]
    fn names_round_trip_and_bad_names_are_refused() {
        let n = PeerAddr::ouroboros("cicada.node-7").unwrap();
        let bytes = postcard::to_allocvec(&n).unwrap();
        assert_eq!(bytes[0], 2);
        assert_eq!(postcard::from_bytes::<PeerAddr>(&bytes).unwrap(), n);
        // A SocketAddr-only decoder refuses it instead of misreading it.
        assert!(postcard::from_bytes::<SocketAddr>(&bytes).is_err());
        let empty = postcard::to_allocvec(&PeerAddr::Ouroboros(String::new())).unwrap();
        assert!(postcard::from_bytes::<PeerAddr>(&empty).is_err());
        let long = PeerAddr::Ouroboros("x".repeat(MAX_NAME_LEN + 1));
        let long = postcard::to_allocvec(&long).unwrap();
        assert!(postcard::from_bytes::<PeerAddr>(&long).is_err());
        assert!(PeerAddr::ouroboros("a\0b").is_err());
        assert!(postcard::from_bytes::<PeerAddr>(&[3, 1, b'a']).is_err());
        assert!(postcard::from_bytes::<PeerAddr>(&[2, 200]).is_err());
    }

    #[test]
    fn json_is_the_text_form() {
        let n = PeerAddr::ouroboros("bob").unwrap();
        assert_eq!(serde_json::to_string(&n).unwrap(), "\"bob\"");
        let u: PeerAddr = serde_json::from_str("\"127.0.0.1:1\"").unwrap();
        assert_eq!(u, "127.0.0.1:1".parse::<SocketAddr>().unwrap());
    }
}
