//! I/O: talks to the NAT gateway until interrupted.
//!
//! `cicada map`: maps a port on the NAT gateway (UPnP IGD, then NAT-PMP) and
//! holds it until interrupted, like `upnpc -a`; removes it on the way out.

use std::time::Duration;

use cicada::traversal::{Options, PortMapping, Protocol};
use clap::{Args, ValueEnum};
use serde_json::json;

use crate::output::Out;

/// Transport protocols a port can be mapped for.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Proto {
    /// UDP (what Cicada peers use).
    Udp,
    /// TCP.
    Tcp,
}

/// Arguments of `cicada map`.
#[derive(Args, Debug)]
pub struct MapArgs {
    /// Local port to map.
    #[arg(long)]
    port: u16,
    /// Transport protocol.
    #[arg(long, value_enum, default_value_t = Proto::Udp)]
    protocol: Proto,
    /// Lease to ask for, in seconds; renewed at about half of it.
    #[arg(long, default_value_t = 3600)]
    lease: u64,
    /// External port to ask for (default: the local one).
    #[arg(long)]
    external_port: Option<u16>,
    /// One JSON object per event on stdout.
    #[arg(long)]
    json: bool,
}

/// Runs `cicada map`; returns the exit code.
pub fn main(args: MapArgs) -> i32 {
    let out = Out { json: args.json };
    crate::output::run(out, run(args, out))
}

async fn run(args: MapArgs, out: Out) -> Result<(), String> {
    let protocol = match args.protocol {
        Proto::Udp => Protocol::Udp,
        Proto::Tcp => Protocol::Tcp,
    };
    let mut options = Options::default().with_lease(Duration::from_secs(args.lease));
    if let Some(p) = args.external_port {
        options = options.with_external_port(p);
    }
    let mapping = PortMapping::with_options(args.port, protocol, &options)
        .await
        .map_err(|e| e.to_string())?;
    out.emit(json!({
        "event": "mapped",
        "method": mapping.method().as_str(),
        "external": mapping.external_addr().to_string(),
        "local": mapping.local_addr().to_string(),
        "lease": mapping.lease().as_secs(),
    }));
    let mut changes = mapping.watch_external();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| format!("cannot watch SIGTERM: {e}"))?;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            changed = changes.changed() => {
                if changed.is_err() {
                    break;
                }
                let now = *changes.borrow_and_update();
                out.emit(json!({"event": "changed", "external": now.to_string()}));
            }
        }
    }
    mapping.close().await.map_err(|e| e.to_string())?;
    out.emit(json!({"event": "closed"}));
    Ok(())
}
