//! Quality of service: [`QoSSpec`], the Rust form of `qosspec_t`.

use crate::ffi::RawQos;

/// `DEFAULT_PEER_TIMEOUT` of Ouroboros 0.23: the peer is declared dead after
/// 120 s without traffic or keepalives.
pub const DEFAULT_PEER_TIMEOUT_MS: u32 = 120_000;

/// A QoS specification for a flow: every field of the installed
/// `qosspec_t` (Ouroboros 0.23).
///
/// Encryption and authentication are **not** QoS fields in 0.23 (the
/// `cypher_s` field pyOuroboros knew is gone): they are configured per name
/// in the IRMd, with an `enc.conf` file and certificates under
/// `/etc/ouroboros/security/{server,client}/<name>/`, or with the
/// `sencpath`/`cencpath`/`scrtpath`/`skeypath`/… options of
/// `irm name create` (see `docs/ouroboros.md`).
///
/// ```
/// use cicada_ouroboros::QoSSpec;
/// // Reliable, in-order delivery (FRCT with retransmission), peer declared
/// // dead after 10 s of silence.
/// let qos = QoSSpec { timeout: 10_000, ..QoSSpec::data() };
/// assert_eq!(qos.loss, 0);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct QoSSpec {
    /// Maximum delay, in ms.
    pub delay: u32,
    /// Bandwidth, in bits/s.
    pub bandwidth: u64,
    /// Class of 9s.
    pub availability: u8,
    /// Packet loss allowed; `0` asks for retransmission (FRCT `RTX`).
    pub loss: u32,
    /// Bit error rate, errors per billion bits.
    pub ber: u32,
    /// In-order delivery; enables FRCT.
    pub in_order: bool,
    /// Maximum gap, in ms.
    pub max_gap: u32,
    /// Peer timeout, in ms: the flow goes down (`FlowPeer`) after this long
    /// without hearing from the peer; `0` = never.
    pub timeout: u32,
}

impl Default for QoSSpec {
    /// The library's `qos_raw`, which is also what a C program gets when it
    /// passes `NULL`.
    fn default() -> Self {
        QoSSpec::raw()
    }
}

impl QoSSpec {
    /// `qos_raw`: no guarantees, no FRCT.
    pub const fn raw() -> Self {
        QoSSpec {
            delay: u32::MAX,
            bandwidth: 0,
            availability: 0,
            loss: 1,
            ber: 1,
            in_order: false,
            max_gap: u32::MAX,
            timeout: DEFAULT_PEER_TIMEOUT_MS,
        }
    }

    /// `qos_raw_no_errors`: like raw, but corrupted packets are dropped.
    pub const fn raw_no_errors() -> Self {
        QoSSpec {
            ber: 0,
            ..QoSSpec::raw()
        }
    }

    /// `qos_best_effort`: in-order delivery, losses allowed.
    pub const fn best_effort() -> Self {
        QoSSpec {
            ber: 0,
            in_order: true,
            ..QoSSpec::raw()
        }
    }

    /// `qos_video`.
    pub const fn video() -> Self {
        QoSSpec {
            delay: 100,
            bandwidth: u64::MAX,
            availability: 3,
            loss: 1,
            ber: 0,
            in_order: true,
            max_gap: 100,
            timeout: DEFAULT_PEER_TIMEOUT_MS,
        }
    }

    /// `qos_voice`.
    pub const fn voice() -> Self {
        QoSSpec {
            delay: 50,
            bandwidth: 100_000,
            availability: 5,
            loss: 1,
            ber: 0,
            in_order: true,
            max_gap: 50,
            timeout: DEFAULT_PEER_TIMEOUT_MS,
        }
    }

    /// `qos_data`: reliable, in-order delivery (retransmission).
    pub const fn data() -> Self {
        QoSSpec {
            delay: 1000,
            bandwidth: 0,
            availability: 0,
            loss: 0,
            ber: 0,
            in_order: true,
            max_gap: 2000,
            timeout: DEFAULT_PEER_TIMEOUT_MS,
        }
    }

    /// Sets the peer timeout, in ms (builder style).
    pub const fn with_timeout(mut self, ms: u32) -> Self {
        self.timeout = ms;
        self
    }

    pub(crate) fn to_raw(self) -> RawQos {
        RawQos {
            delay: self.delay,
            bandwidth: self.bandwidth,
            availability: self.availability,
            loss: self.loss,
            ber: self.ber,
            in_order: u8::from(self.in_order),
            max_gap: self.max_gap,
            timeout: self.timeout,
        }
    }

    pub(crate) fn from_raw(r: RawQos) -> Self {
        QoSSpec {
            delay: r.delay,
            bandwidth: r.bandwidth,
            availability: r.availability,
            loss: r.loss,
            ber: r.ber,
            in_order: r.in_order != 0,
            max_gap: r.max_gap,
            timeout: r.timeout,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_match_qos_h() {
        let r = QoSSpec::raw();
        assert_eq!(
            (r.delay, r.loss, r.ber, r.in_order),
            (u32::MAX, 1, 1, false)
        );
        assert_eq!(QoSSpec::raw_no_errors().ber, 0);
        assert!(QoSSpec::best_effort().in_order);
        assert_eq!(QoSSpec::video().bandwidth, u64::MAX);
        assert_eq!(QoSSpec::voice().bandwidth, 100_000);
        assert_eq!(QoSSpec::data().loss, 0);
        assert_eq!(QoSSpec::data().max_gap, 2000);
        for q in [
            QoSSpec::raw(),
            QoSSpec::video(),
            QoSSpec::data().with_timeout(5),
        ] {
            assert_eq!(QoSSpec::from_raw(q.to_raw()), q);
        }
        assert_eq!(QoSSpec::default(), QoSSpec::raw());
    }
}
