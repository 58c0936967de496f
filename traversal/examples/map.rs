//! Maps a port on the NAT gateway and holds it until interrupted, like
//! `upnpc -a`:
//!
//! ```sh
//! cargo run -p cicada-traversal --example map -- --port 4000 --protocol udp --lease 600
//! ```
//!
//! prints `{"event":"mapped","method":"upnp","external":"IP:PORT","lease":600}`
//! and, on Ctrl-C, removes the mapping and prints `{"event":"closed"}`.

use std::process::ExitCode;
use std::time::Duration;

use traversal::{Options, PortMapping, Protocol};

fn usage() -> ExitCode {
    eprintln!(
        "usage: map --port PORT [--protocol udp|tcp] [--lease SECONDS] [--external-port PORT]"
    );
    ExitCode::from(2)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let mut port = None;
    let mut protocol = Protocol::Udp;
    let mut options = Options::default();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next();
        match (arg.as_str(), value.as_deref()) {
            ("--port", Some(v)) => port = v.parse::<u16>().ok(),
            ("--protocol", Some("udp")) => protocol = Protocol::Udp,
            ("--protocol", Some("tcp")) => protocol = Protocol::Tcp,
            ("--lease", Some(v)) => match v.parse() {
                Ok(secs) => options = options.with_lease(Duration::from_secs(secs)),
                Err(_) => return usage(),
            },
            ("--external-port", Some(v)) => match v.parse() {
                Ok(p) => options = options.with_external_port(p),
                Err(_) => return usage(),
            },
            _ => return usage(),
        }
    }
    let Some(port) = port else { return usage() };
    let mapping = match PortMapping::with_options(port, protocol, &options).await {
        Ok(m) => m,
        Err(e) => {
            println!("{{\"event\":\"error\",\"message\":{:?}}}", e.to_string());
            return ExitCode::FAILURE;
        }
    };
    println!(
        "{{\"event\":\"mapped\",\"method\":\"{}\",\"external\":\"{}\",\"local\":\"{}\",\"lease\":{}}}",
        mapping.method().as_str(),
        mapping.external_addr(),
        mapping.local_addr(),
        mapping.lease().as_secs()
    );
    let mut changes = mapping.watch_external();
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            changed = changes.changed() => {
                if changed.is_err() { break; }
                let now = *changes.borrow_and_update();
                println!("{{\"event\":\"changed\",\"external\":\"{now}\"}}");
            }
        }
    }
    match mapping.close().await {
        Ok(()) => {
            println!("{{\"event\":\"closed\"}}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("{{\"event\":\"error\",\"message\":{:?}}}", e.to_string());
            ExitCode::FAILURE
        }
    }
}
