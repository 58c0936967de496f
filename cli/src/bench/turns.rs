//! I/O: a row's runs in turns with its baseline, and their statistics.

use std::sync::Arc;

use cicada::{PeerAddr, SwarmPeer};
use serde_json::{json, Value};

use super::raw::{raw_throughput, raw_unbatched_throughput, RawPing};
use super::sends::{datagram_throughput, latency, throughput};
use super::R;

/// Runs of each throughput and latency row, taking turns with the baseline.
pub(super) const ROUNDS: usize = 5;

/// What a throughput row sends.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Sends {
    /// Confirmed sends.
    Confirmed,
    /// Unconfirmed datagrams.
    Datagrams,
}

/// What a throughput row takes turns with.
pub(super) enum Baseline<'a> {
    /// The link alone ([`raw_throughput`]), and the unbatched loop
    /// ([`raw_unbatched_throughput`]) as well when `unbatched`.
    RawUdp { unbatched: bool },
    /// Confirmed sends between two other peers (the keyed rows' unkeyed pair).
    Pair(Peers<'a>),
}

/// A sending peer, a receiving peer, and the receiver's address.
pub(super) type Peers<'a> = (&'a Arc<SwarmPeer>, &'a Arc<SwarmPeer>, &'a PeerAddr);

/// What a throughput row measured: medians over its runs.
pub(super) struct Turns {
    /// Cicada's messages per second.
    pub(super) ours: f64,
    /// The baseline's.
    pub(super) base: f64,
    /// The unbatched raw loop's, when asked for.
    pub(super) unbatched: Option<f64>,
    /// The smallest fraction of Cicada's sends confirmed (or of its
    /// datagrams arrived) in one run.
    pub(super) reached: f64,
    /// The smallest fraction of the raw baseline's datagrams that arrived
    /// in one run (1 for a pair of peers).
    pub(super) base_reached: f64,
}

impl Turns {
    /// Records the row in the JSON report under `names` (Cicada's rate,
    /// the baseline's, their ratio, the fraction confirmed or arrived),
    /// each followed by `_` and the size's `key`.
    pub(super) fn record(
        &self,
        report: &mut serde_json::Map<String, Value>,
        names: [&str; 4],
        key: &str,
    ) {
        let [ours, base, ratio, reached] = names;
        report.insert(format!("{ours}_{key}"), json!(self.ours));
        report.insert(format!("{base}_{key}"), json!(self.base));
        report.insert(format!("{ratio}_{key}"), json!(self.ours / self.base));
        report.insert(format!("{reached}_{key}"), json!(self.reached));
    }
}

/// A throughput row run [`ROUNDS`] times, taking turns with `baseline`
/// (its run first). A single run of each can move 4x with where the
/// scheduler puts its two tasks; turns and medians let both meet the same
/// load.
pub(super) async fn throughput_turns(
    (a, b, to): Peers<'_>,
    size: usize,
    count: usize,
    sends: Sends,
    baseline: Baseline<'_>,
) -> R<Turns> {
    let (mut ours, mut bases, mut unbatched) = (Vec::new(), Vec::new(), Vec::new());
    let (mut reached, mut base_reached) = (1.0f64, 1.0f64);
    for _ in 0..ROUNDS {
        match baseline {
            Baseline::RawUdp { unbatched: extra } => {
                let (rate, arrived) = raw_throughput(size, count).await?;
                bases.push(rate);
                base_reached = base_reached.min(arrived);
                if extra {
                    unbatched.push(raw_unbatched_throughput(size, count).await?);
                }
            }
            Baseline::Pair((x, y, t)) => {
                bases.push(throughput(x, y, t.clone(), size, count).await?.0)
            }
        }
        let (rate, fraction) = match sends {
            Sends::Datagrams => datagram_throughput(a, b, to, size, count).await?,
            Sends::Confirmed => throughput(a, b, to.clone(), size, count).await?,
        };
        ours.push(rate);
        reached = reached.min(fraction);
    }
    Ok(Turns {
        ours: median(ours),
        base: median(bases),
        unbatched: (!unbatched.is_empty()).then(|| median(unbatched)),
        reached,
        base_reached,
    })
}

/// Round trips per turn of the latency row: Cicada's and the baseline's
/// take turns this often, so that both meet the same scheduling. On two
/// worker threads a ping-pong (raw UDP's as much as Cicada's) runs for
/// hundreds of milliseconds at a time in one of two modes (on a 2-core VM,
/// 8-20 µs or 65-95 µs a round trip) by where the threads that wake each
/// other sit; turns of 2,000 round trips put the two sides in different
/// modes in about half the runs.
pub(super) const LATENCY_TURN: usize = 25;

/// What a latency row takes turns with.
#[derive(Clone, Copy)]
pub(super) enum LatencyBase<'a> {
    /// A raw ping-pong between two links of this coalescing ([`RawPing`]).
    Raw(cicada::link::Gro),
    /// Confirmed sends of 64 bytes from another peer to this address (the
    /// keyed row's unkeyed pair).
    Pair(&'a SwarmPeer, &'a PeerAddr),
}

/// The latency row's samples, `n` × [`ROUNDS`] round trips of Cicada's
/// and as many of the baseline's, taken in turns of [`LATENCY_TURN`]:
/// percentiles are taken over all of them.
pub(super) async fn latency_turns(
    a: &SwarmPeer,
    to: &PeerAddr,
    n: usize,
    base: LatencyBase<'_>,
) -> R<(Vec<f64>, Vec<f64>)> {
    let total = n * ROUNDS;
    let raw = match base {
        LatencyBase::Raw(gro) => Some(RawPing::start(gro).await?),
        LatencyBase::Pair(..) => None,
    };
    let (mut ours, mut bases) = (Vec::with_capacity(total), Vec::with_capacity(total));
    while ours.len() < total {
        let k = LATENCY_TURN.min(total - ours.len());
        match (&raw, base) {
            (Some(raw), _) => bases.extend(raw.round_trips(k).await?),
            (None, LatencyBase::Pair(x, t)) => bases.extend(latency(x, t.clone(), k).await?),
            (None, LatencyBase::Raw(_)) => {}
        }
        ours.extend(latency(a, to.clone(), k).await?);
    }
    Ok((ours, bases))
}

/// The middle of `v` (the upper middle of an even count; 0 when empty).
pub(super) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|x, y| x.total_cmp(y));
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

pub(super) fn percentiles(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(|x, y| x.total_cmp(y));
    let at = |p: f64| v[((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
    (at(0.5), at(0.99))
}
