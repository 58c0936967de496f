//! The error type of this crate.

use std::time::Duration;

use crate::Method;

/// Why a port mapping operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No gateway speaking this protocol was found: nothing answered the
    /// UPnP SSDP search, or there is no IPv4 default route for NAT-PMP.
    #[error("{method}: no gateway found: {reason}")]
    NoGateway {
        /// The protocol that was tried.
        method: Method,
        /// What was looked for and not found.
        reason: String,
    },
    /// The gateway answered and refused the request.
    #[error("{method}: the gateway refused {action} with error {code} ({meaning})")]
    Refused {
        /// The protocol that was tried.
        method: Method,
        /// The request that was refused, e.g. `"AddPortMapping"`.
        action: &'static str,
        /// The UPnP error code (e.g. 718) or the NAT-PMP result code (e.g. 2).
        code: u16,
        /// What the code means (see [`upnp_error_name`] and
        /// [`natpmp_result_name`]), or the gateway's own description of an
        /// unknown code.
        meaning: String,
    },
    /// The gateway did not answer in time.
    #[error("{method}: no answer from the gateway to {action} within {after:?}")]
    Timeout {
        /// The protocol that was tried.
        method: Method,
        /// The request that was not answered.
        action: &'static str,
        /// How long we waited.
        after: Duration,
    },
    /// The gateway does not support this protocol or the action needed: no
    /// NAT-PMP server listens on the gateway, or the UPnP device lacks an
    /// action, or the gateway is not reachable over IPv4.
    #[error("{method}: not supported: {reason}")]
    Unsupported {
        /// The protocol that was tried.
        method: Method,
        /// What is missing.
        reason: String,
    },
    /// A request failed for another reason: the connection to the gateway
    /// failed, or its answer could not be understood.
    #[error("{method}: {action} failed: {reason}")]
    Request {
        /// The protocol that was tried.
        method: Method,
        /// The request that failed.
        action: &'static str,
        /// What went wrong.
        reason: String,
    },
    /// Both UPnP IGD and NAT-PMP were tried and both failed.
    #[error("both port mapping methods failed: [{upnp}] and [{natpmp}]")]
    BothFailed {
        /// Why UPnP IGD failed.
        upnp: Box<Error>,
        /// Why NAT-PMP failed.
        natpmp: Box<Error>,
    },
    /// An argument was out of range (port 0, a lease under one second, no
    /// method enabled).
    #[error("invalid argument: {0}")]
    InvalidArgument(&'static str),
    /// A local socket or thread operation failed.
    #[error("local I/O error: {0}")]
    Io(#[from] std::io::Error),
}

impl Error {
    /// The gateway's error or result code, if the gateway refused the request.
    pub fn code(&self) -> Option<u16> {
        match self {
            Error::Refused { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// The protocol that failed, if the error belongs to one.
    pub fn method(&self) -> Option<Method> {
        match self {
            Error::NoGateway { method, .. }
            | Error::Refused { method, .. }
            | Error::Timeout { method, .. }
            | Error::Unsupported { method, .. }
            | Error::Request { method, .. } => Some(*method),
            _ => None,
        }
    }

    pub(crate) fn refused_upnp(action: &'static str, code: u16, description: &str) -> Error {
        let meaning = match upnp_error_name(code) {
            Some(name) if description.is_empty() || description == name => name.to_string(),
            Some(name) => format!("{name}: {description}"),
            None if description.is_empty() => "unknown error".to_string(),
            None => description.to_string(),
        };
        Error::Refused {
            method: Method::Upnp,
            action,
            code,
            meaning,
        }
    }

    pub(crate) fn refused_natpmp(action: &'static str, code: u16) -> Error {
        Error::Refused {
            method: Method::NatPmp,
            action,
            code,
            meaning: natpmp_result_name(code)
                .unwrap_or("unknown result code")
                .to_string(),
        }
    }
}

/// The name of a UPnP IGD error code (from the `WANIPConnection` and UPnP
/// device architecture specifications), e.g. `718` is
/// `"ConflictInMappingEntry"`.
///
/// ```
/// assert_eq!(traversal::upnp_error_name(725), Some("OnlyPermanentLeasesSupported"));
/// assert_eq!(traversal::upnp_error_name(1), None);
/// ```
pub fn upnp_error_name(code: u16) -> Option<&'static str> {
    Some(match code {
        401 => "Invalid Action",
        402 => "Invalid Args",
        404 => "Invalid Var",
        501 => "Action Failed",
        600 => "Argument Value Invalid",
        601 => "Argument Value Out of Range",
        602 => "Optional Action Not Implemented",
        603 => "Out of Memory",
        604 => "Human Intervention Required",
        605 => "String Argument Too Long",
        606 => "Action not authorized",
        713 => "SpecifiedArrayIndexInvalid",
        714 => "NoSuchEntryInArray",
        715 => "WildCardNotPermittedInSrcIP",
        716 => "WildCardNotPermittedInExtPort",
        718 => "ConflictInMappingEntry",
        724 => "SamePortValuesRequired",
        725 => "OnlyPermanentLeasesSupported",
        726 => "RemoteHostOnlySupportsWildcard",
        727 => "ExternalPortOnlySupportsWildcard",
        728 => "NoPortMapsAvailable",
        729 => "ConflictWithOtherMechanisms",
        732 => "WildCardNotPermittedInIntPort",
        _ => return None,
    })
}

/// The meaning of a NAT-PMP result code (RFC 6886, section 3.5), e.g. `2`
/// is `"Not Authorized/Refused"`.
///
/// ```
/// assert_eq!(traversal::natpmp_result_name(4), Some("Out of resources"));
/// ```
pub fn natpmp_result_name(code: u16) -> Option<&'static str> {
    Some(match code {
        0 => "Success",
        1 => "Unsupported Version",
        2 => "Not Authorized/Refused",
        3 => "Network Failure",
        4 => "Out of resources",
        5 => "Unsupported opcode",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_messages_carry_code_and_meaning() {
        let e = Error::refused_upnp("AddPortMapping", 718, "ConflictInMappingEntry");
        assert_eq!(e.code(), Some(718));
        assert_eq!(e.method(), Some(Method::Upnp));
        let text = e.to_string();
        assert!(text.contains("718"), "{text}");
        assert!(text.contains("ConflictInMappingEntry"), "{text}");
        assert!(!text.contains("ConflictInMappingEntry: "), "{text}");

        let e = Error::refused_upnp("AddPortMapping", 799, "Vendor Specific");
        assert!(e.to_string().contains("799 (Vendor Specific)"), "{e}");

        let e = Error::refused_natpmp("mapping request", 2);
        assert!(e.to_string().contains("Not Authorized/Refused"), "{e}");
        assert_eq!(e.method(), Some(Method::NatPmp));
    }

    #[test]
    fn both_failed_names_both_reasons() {
        let e = Error::BothFailed {
            upnp: Box::new(Error::NoGateway {
                method: Method::Upnp,
                reason: "nothing answered".into(),
            }),
            natpmp: Box::new(Error::Timeout {
                method: Method::NatPmp,
                action: "public address request",
                after: Duration::from_secs(3),
            }),
        };
        let text = e.to_string();
        assert!(text.contains("UPnP IGD: no gateway found"), "{text}");
        assert!(text.contains("NAT-PMP: no answer"), "{text}");
        assert_eq!(e.method(), None);
    }
}
