//! What a test needs from the machine, and the one way a test that cannot
//! run here skips.
//!
//! Every test that depends on something outside the repository (an IRMd,
//! root and the network lab, nftables, UDP segmentation offload,
//! IPv6) asks for it through [`skip`] when it is missing. Outside CI the test
//! then prints a loud `SKIPPED [need]: test: why` line (past libtest's output
//! capture) and passes. Where the environment variable `CICADA_REQUIRE`
//! lists the need, or says `all`, the test fails instead, so that CI cannot
//! go green by skipping:
//!
//! ```text
//! CICADA_REQUIRE=all cargo test ...              every need is required
//! CICADA_REQUIRE=ouroboros,netlab cargo test ... just these two
//! CICADA_REQUIRE=all,-gso cargo test ...         all but gso
//! ```
//!
//! [`NEEDS`] is the list of every skip condition in the test suites; the
//! manual (docs/testing.md) says how to provide each. Shared by the test
//! files of every crate through `#[path]`.
#![allow(dead_code)]

use std::fmt::Display;
use std::io::Write;

/// Something a test needs that a machine may lack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// An Ouroboros 0.23 IRMd answering on its socket, with the layers
    /// `.ci/ouroboros.sh up` creates (`local_layer`, `udp_layer`,
    /// `bc_layer`) and the C tools (`oecho`) installed beside it.
    Ouroboros,
    /// The project's network lab (`scripts/netlab`): root, `ip netns`,
    /// nftables, python3 and miniupnpd (Debian `miniupnpd-nftables`).
    Netlab,
    /// Root and `nft` on the test machine itself, for the swarm partition
    /// test's drop rules on loopback.
    Nft,
    /// UDP segmentation offload on loopback (Linux, `UDP_SEGMENT` of 64
    /// segments, not turned off by `CICADA_UDP_GSO=0`).
    Gso,
    /// An IPv6 loopback address (`::1`).
    Ipv6,
}

/// Every need, with its name in `CICADA_REQUIRE` and the tests that skip
/// without it.
pub const NEEDS: &[(Need, &str, &str)] = &[
    (
        Need::Ouroboros,
        "ouroboros",
        "ouroboros/tests/ouroboros.rs and ouroboros/tests/examples.rs (every test), cli/tests/processes/ouroboros.rs (the IRMd ones)",
    ),
    (
        Need::Netlab,
        "netlab",
        "traversal/tests/natlab.rs, tests/netlab.rs, the lab tests in cli/tests/processes.rs and cli/tests/processes/lab.rs, the reliable-flow test of ouroboros/tests/examples.rs (its own IRMd)",
    ),
    (Need::Nft, "nft", "cli/tests/processes.rs (the partition test)"),
    (Need::Gso, "gso", "tests/swarm/link.rs (the batching tests)"),
    (Need::Ipv6, "ipv6", "tests/swarm.rs (the IPv6 join test)"),
];

impl Need {
    /// Its name in `CICADA_REQUIRE` and in SKIPPED lines.
    pub fn name(self) -> &'static str {
        NEEDS
            .iter()
            .find(|(n, _, _)| *n == self)
            .map(|(_, name, _)| *name)
            .unwrap_or("?")
    }
}

/// The variable that turns skips into failures.
pub const VAR: &str = "CICADA_REQUIRE";

/// Whether `CICADA_REQUIRE` demands `need`. Panics on a name it does not
/// know, so that a misspelt requirement cannot quietly let a skip pass.
pub fn required(need: Need) -> bool {
    let Some(value) = std::env::var_os(VAR) else {
        return false;
    };
    let value = value.to_string_lossy().into_owned();
    let mut all = false;
    let mut wanted = false;
    let mut excluded = false;
    for word in value
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|w| !w.is_empty())
    {
        let (negated, name) = match word.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, word),
        };
        if name == "all" && !negated {
            all = true;
            continue;
        }
        let Some((known, _, _)) = NEEDS.iter().find(|(_, n, _)| *n == name) else {
            let names: Vec<&str> = NEEDS.iter().map(|(_, n, _)| *n).collect();
            panic!("{VAR}={value}: unknown requirement `{name}` (known: all, {names:?})");
        };
        if *known == need {
            if negated {
                excluded = true;
            } else {
                wanted = true;
            }
        }
    }
    (all || wanted) && !excluded
}

/// `test` cannot run here because `need` is missing (`why`). Fails the test
/// when `CICADA_REQUIRE` demands `need`; otherwise prints the SKIPPED line
/// and returns, and the caller returns too.
pub fn skip(need: Need, test: &str, why: impl Display) {
    if required(need) {
        panic!(
            "{test}: `{}` is required here ({VAR}) but missing: {why}",
            need.name()
        );
    }
    // One write, past libtest's capture, on a fresh line (libtest may have
    // printed `test name ... ` on stdout).
    let line = format!(
        "\nSKIPPED [{}]: {test}: {why} (set {VAR}={} to make this a failure)\n",
        need.name(),
        need.name()
    );
    let _ = std::io::stderr().write_all(line.as_bytes());
}

/// `Some(value)` when `found` is `Ok`; else skips `test` for `need` (see
/// [`skip`]) and returns `None`.
pub fn or_skip<T>(need: Need, test: &str, found: Result<T, String>) -> Option<T> {
    match found {
        Ok(value) => Some(value),
        Err(why) => {
            skip(need, test, why);
            None
        }
    }
}
