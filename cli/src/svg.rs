//! Pure: draws the ring as SVG text; no I/O.
//!
//! The picture `cicada demo --svg` writes: the ring with every live peer at
//! the angle of its id, the successor links along the circle, one chosen
//! peer's fingers, and the tree of the last broadcast. Plain SVG written by
//! hand: no dependency, and readable at 32 and at 256 peers.
//!
//! The broadcast tree is not reported by the peers; it is rebuilt from the
//! interval-splitting rule the core follows (El-Ansary et al.): a peer hands
//! the broadcast to every distinct finger and successor inside the arc it
//! covers, nearest first, and each child covers the arc up to the next
//! child. The fingers are the peers' real ones (the `fingers` command of
//! `cicada node`), the successor lists the true ones of the correct ring.

use std::collections::VecDeque;
use std::f64::consts::PI;
use std::fmt::Write;

use cicada::chord::Interval;
use cicada::Hash;

/// What to draw. Every slice is indexed like `ids`, which is sorted.
pub struct Ring<'a> {
    /// Ids of the live peers, sorted.
    pub ids: &'a [Hash],
    /// Their addresses.
    pub labels: &'a [String],
    /// The live fingers of each peer.
    pub fingers: &'a [Vec<Hash>],
    /// Ids of the peers that were killed (drawn as crosses).
    pub dead: &'a [Hash],
    /// The peer whose fingers are drawn.
    pub chosen: usize,
    /// The peer that sent the broadcast.
    pub origin: usize,
    /// Length of the successor lists.
    pub successors: usize,
}

const WIDTH: f64 = 1000.0;
const HEIGHT: f64 = 1060.0;
const CX: f64 = 500.0;
const CY: f64 = 600.0;
const R: f64 = 370.0;
/// Colours of the broadcast tree's edges by hop (1, 2, 3, …).
const HOPS: [&str; 6] = [
    "#1f6feb", "#2a9d3f", "#9b5de5", "#b5a000", "#e4579e", "#999999",
];

/// The angle of an id, in radians clockwise from the top.
fn angle(id: &Hash) -> f64 {
    let b = id.to_bytes();
    let mut top = [0u8; 8];
    top.copy_from_slice(&b[..8]);
    u64::from_be_bytes(top) as f64 / 18_446_744_073_709_551_616.0 * 2.0 * PI
}

fn point(theta: f64, r: f64) -> (f64, f64) {
    (CX + r * theta.sin(), CY - r * theta.cos())
}

/// Parent and hop of every peer in the broadcast from `origin`.
pub fn broadcast_tree(ring: &Ring) -> Vec<Option<(usize, u32)>> {
    let n = ring.ids.len();
    let index = |h: &Hash| ring.ids.binary_search(h).ok();
    let mut tree: Vec<Option<(usize, u32)>> = vec![None; n];
    let mut seen = vec![false; n];
    let mut queue = VecDeque::new();
    seen[ring.origin] = true;
    queue.push_back((ring.origin, ring.ids[ring.origin], 0u32));
    while let Some((k, limit, hop)) = queue.pop_front() {
        let me = ring.ids[k];
        let arc = Interval::open(me, limit);
        let succ = (1..=ring.successors.min(n - 1)).map(|d| ring.ids[(k + d) % n]);
        let mut children: Vec<Hash> = ring.fingers[k]
            .iter()
            .copied()
            .chain(succ)
            .filter(|h| arc.contains(h))
            .collect();
        children.sort_by_key(|h| me.distance_to(h));
        children.dedup();
        for (i, c) in children.iter().enumerate() {
            let child_limit = children.get(i + 1).copied().unwrap_or(limit);
            if let Some(ci) = index(c) {
                if !seen[ci] {
                    seen[ci] = true;
                    tree[ci] = Some((k, hop + 1));
                    queue.push_back((ci, child_limit, hop + 1));
                }
            }
        }
    }
    tree
}

/// The SVG document.
pub fn render(ring: &Ring) -> String {
    let n = ring.ids.len();
    let mut s = String::new();
    let _ = writeln!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="Helvetica, Arial, sans-serif">"##
    );
    let _ = writeln!(
        s,
        r##"<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="5" markerHeight="5" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="context-stroke"/></marker></defs>"##
    );
    let _ = writeln!(s, r##"<rect width="100%" height="100%" fill="#ffffff"/>"##);
    let _ = writeln!(
        s,
        r##"<text x="24" y="38" font-size="24" font-weight="bold">Cicada: a Chord ring of {n} live peers on loopback ({} started)</text>"##,
        n + ring.dead.len()
    );
    let _ = writeln!(
        s,
        r##"<text x="24" y="62" font-size="14" fill="#555">each dot is a peer at the angle of its id (SHA-256 of its address); {} killed peers are crosses</text>"##,
        ring.dead.len()
    );
    // The circle.
    let _ = writeln!(
        s,
        r##"<circle cx="{CX}" cy="{CY}" r="{R}" fill="none" stroke="#e6e6e6" stroke-width="1"/>"##
    );

    // Successor links along the circle.
    let thetas: Vec<f64> = ring.ids.iter().map(angle).collect();
    let _ = writeln!(s, r##"<g fill="none" stroke="#444" stroke-width="1.6">"##);
    for k in 0..n {
        let (a, b) = (thetas[k], thetas[(k + 1) % n]);
        let mut span = b - a;
        if span <= 0.0 {
            span += 2.0 * PI;
        }
        let (x1, y1) = point(a, R);
        let (x2, y2) = point(b, R);
        let large = i32::from(span > PI);
        let _ = writeln!(
            s,
            r##"<path d="M{x1:.1},{y1:.1} A{R},{R} 0 {large} 1 {x2:.1},{y2:.1}"/>"##
        );
    }
    let _ = writeln!(s, "</g>");

    // The broadcast tree: curves bent toward the centre, coloured by hop.
    let tree = broadcast_tree(ring);
    let depth = tree.iter().flatten().map(|t| t.1).max().unwrap_or(0);
    let width = if n > 100 { 1.0 } else { 1.8 };
    let _ = writeln!(
        s,
        r##"<g fill="none" stroke-width="{width}" opacity="0.85">"##
    );
    for (c, t) in tree.iter().enumerate() {
        let Some((p, hop)) = t else { continue };
        let (x1, y1) = point(thetas[*p], R);
        let (x2, y2) = point(thetas[c], R);
        let (mx, my) = ((x1 + x2) / 2.0, (y1 + y2) / 2.0);
        let (qx, qy) = (CX + (mx - CX) * 0.55, CY + (my - CY) * 0.55);
        let colour = HOPS[(*hop as usize - 1).min(HOPS.len() - 1)];
        let _ = writeln!(
            s,
            r##"<path d="M{x1:.1},{y1:.1} Q{qx:.1},{qy:.1} {x2:.1},{y2:.1}" stroke="{colour}" marker-end="url(#arrow)"/>"##
        );
    }
    let _ = writeln!(s, "</g>");

    // The chosen peer's fingers: straight dashed chords.
    let (cx1, cy1) = point(thetas[ring.chosen], R);
    let _ = writeln!(
        s,
        r##"<g stroke="#e76f00" stroke-width="1.6" stroke-dasharray="6 4" fill="none">"##
    );
    for f in &ring.fingers[ring.chosen] {
        if let Ok(i) = ring.ids.binary_search(f) {
            let (x2, y2) = point(thetas[i], R);
            let _ = writeln!(
                s,
                r##"<line x1="{cx1:.1}" y1="{cy1:.1}" x2="{x2:.1}" y2="{y2:.1}" marker-end="url(#arrow)"/>"##
            );
        }
    }
    let _ = writeln!(s, "</g>");

    // Dead peers.
    let d = 5.0;
    let _ = writeln!(s, r##"<g stroke="#b0b0b0" stroke-width="2">"##);
    for id in ring.dead {
        let (x, y) = point(angle(id), R);
        let _ = writeln!(
            s,
            r##"<path d="M{:.1},{:.1} L{:.1},{:.1} M{:.1},{:.1} L{:.1},{:.1}"/>"##,
            x - d,
            y - d,
            x + d,
            y + d,
            x - d,
            y + d,
            x + d,
            y - d
        );
    }
    let _ = writeln!(s, "</g>");

    // Live peers and their labels.
    let r = (200.0 / n as f64).clamp(2.5, 7.0);
    let labels = n <= 64;
    // Labels of peers close together alternate between two radii.
    let mut last_label = f64::NEG_INFINITY;
    let mut outer = false;
    for (k, &theta) in thetas.iter().enumerate() {
        let (x, y) = point(theta, R);
        let (fill, rr) = if k == ring.origin {
            ("#d62828", (r + 3.0).max(7.0))
        } else if k == ring.chosen {
            ("#e76f00", (r + 3.0).max(7.0))
        } else {
            ("#1d3557", r)
        };
        let _ = writeln!(
            s,
            r##"<circle cx="{x:.1}" cy="{y:.1}" r="{rr:.1}" fill="{fill}" stroke="#fff" stroke-width="1"><title>{} {}</title></circle>"##,
            ring.labels[k],
            ring.ids[k].short()
        );
        if labels || k == ring.origin || k == ring.chosen {
            outer = theta - last_label < 0.07 && !outer;
            last_label = theta;
            let extra = if outer { 34.0 } else { 0.0 };
            let (lx, ly) = point(theta, R + 14.0 + rr + extra);
            let anchor = if theta.sin() > 0.2 {
                "start"
            } else if theta.sin() < -0.2 {
                "end"
            } else {
                "middle"
            };
            let port = ring.labels[k].rsplit(':').next().unwrap_or("");
            let weight = if k == ring.origin || k == ring.chosen {
                "bold"
            } else {
                "normal"
            };
            let _ = writeln!(
                s,
                r##"<text x="{lx:.1}" y="{:.1}" font-size="11" text-anchor="{anchor}" font-weight="{weight}" fill="#333">:{port}</text>"##,
                ly + 4.0
            );
        }
    }

    // Legend.
    let lx = 24.0;
    let mut ly = 92.0;
    let items = [
        (
            r##"stroke="#444" stroke-width="2""##.to_string(),
            "successor link".to_string(),
        ),
        (
            r##"stroke="#e76f00" stroke-width="2" stroke-dasharray="6 4""##.to_string(),
            format!("fingers of :{} (orange)", port_of(ring, ring.chosen)),
        ),
        (
            format!(r##"stroke="{}" stroke-width="2""##, HOPS[0]),
            format!(
                "broadcast from :{} (red), {} hops deep; colour = hop",
                port_of(ring, ring.origin),
                depth
            ),
        ),
    ];
    for (style, text) in items {
        let _ = writeln!(
            s,
            r##"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" {style}/><text x="{:.1}" y="{:.1}" font-size="13" fill="#222">{text}</text>"##,
            lx + 26.0,
            lx + 34.0,
            ly + 4.0
        );
        ly += 20.0;
    }
    let swatches: String = HOPS
        .iter()
        .enumerate()
        .map(|(i, c)| {
            format!(
                r##"<rect x="{:.1}" y="{:.1}" width="14" height="8" fill="{c}"/><text x="{:.1}" y="{:.1}" font-size="10" fill="#555">{}</text>"##,
                lx + 34.0 + i as f64 * 34.0,
                ly - 4.0,
                lx + 50.0 + i as f64 * 34.0,
                ly + 4.0,
                if i + 1 == HOPS.len() { format!("{}+", i + 1) } else { (i + 1).to_string() }
            )
        })
        .collect();
    let _ = writeln!(s, "{swatches}");
    let _ = writeln!(s, "</svg>");
    s
}

fn port_of(ring: &Ring, k: usize) -> String {
    ring.labels[k].rsplit(':').next().unwrap_or("").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring_of(n: usize, with_fingers: bool) -> (Vec<Hash>, Vec<Vec<Hash>>) {
        let mut ids: Vec<Hash> = (0..n).map(|i| Hash::of(format!("127.0.0.1:{i}"))).collect();
        ids.sort();
        let fingers = (0..n)
            .map(|k| {
                if !with_fingers {
                    return Vec::new();
                }
                let mut f: Vec<Hash> = (0..256)
                    .map(|b| {
                        let target = ids[k].wrapping_add(&Hash::pow2(b));
                        *ids.iter().find(|h| **h >= target).unwrap_or(&ids[0])
                    })
                    .filter(|h| *h != ids[k])
                    .collect();
                f.dedup();
                f
            })
            .collect();
        (ids, fingers)
    }

    #[test]
    fn the_rebuilt_broadcast_tree_reaches_every_peer_once() {
        for (n, with_fingers, successors) in [(8, false, 16), (40, false, 3), (256, true, 16)] {
            let (ids, fingers) = ring_of(n, with_fingers);
            let labels: Vec<String> = (0..n).map(|i| format!("127.0.0.1:{i}")).collect();
            let ring = Ring {
                ids: &ids,
                labels: &labels,
                fingers: &fingers,
                dead: &[],
                chosen: 1,
                origin: 0,
                successors,
            };
            let tree = broadcast_tree(&ring);
            assert!(tree[0].is_none(), "the origin has no parent");
            assert_eq!(tree.iter().flatten().count(), n - 1, "n = {n}");
            let depth = tree.iter().flatten().map(|t| t.1).max().unwrap_or(0);
            if with_fingers {
                assert!(depth <= 9, "depth {depth} at {n} peers with fingers");
            }
            let svg = render(&ring);
            assert_eq!(svg.matches("<title>").count(), n);
            assert_eq!(svg.matches("marker-end").count(), n - 1 + fingers[1].len());
        }
    }
}
