//! A clone of Ouroboros' C `oecho`: `oecho -l` runs the server (echoes what
//! it reads), `oecho` the client (sends `Client says hi!` and prints
//! `Server replied with <reply>`). Interoperates with the C tool in both
//! directions.
//!
//! Like the C tool, the server expects the name `oecho` to be registered and
//! bound to it (`irm name create oecho; irm name register oecho layer L;
//! irm bind process <pid> name oecho`), unless `--layer L` is given: then it
//! does that itself. `-n NAME` uses another name than `oecho`.

use std::process::ExitCode;

use std::sync::atomic::Ordering;
use std::time::Duration;

use cicada_ouroboros::{flow_accept, flow_alloc, Error, Name};

const BUF_SIZE: usize = 256;

fn usage() {
    println!(
        "Usage: oecho [OPTION]...\n\
         Sends an echo between a server and a client\n\n\
         \x20 -l, --listen              Run in server mode\n\
         \x20 -n, --name NAME           Name to use (default: oecho)\n\
         \x20     --layer LAYER         Server: register the name in LAYER and bind it\n\
         \x20     --help                Display this help text and exit"
    );
}

fn server(name: &str, layers: &[String]) -> ExitCode {
    let layers: Vec<&str> = layers.iter().map(String::as_str).collect();
    let _name = if layers.is_empty() {
        None
    } else {
        match Name::bind(name, &layers) {
            Ok(n) => Some(n),
            Err(e) => {
                println!("Failed to bind {name}: {e}.");
                return ExitCode::FAILURE;
            }
        }
    };
    // Stop cleanly on SIGTERM/SIGINT: dying inside the library can wedge
    // the IRMd's packet pool.
    let stop = match cicada_ouroboros::termination_flag() {
        Ok(s) => s,
        Err(e) => {
            println!("Failed to install signal handlers: {e}.");
            return ExitCode::FAILURE;
        }
    };
    let slice = Some(Duration::from_millis(200));
    println!("Starting the server.");
    while !stop.load(Ordering::Relaxed) {
        let flow = match flow_accept(slice) {
            Ok(f) => f,
            Err(Error::Timeout { .. }) => continue,
            Err(e) => {
                println!("Failed to accept flow: {e}.");
                return ExitCode::FAILURE;
            }
        };
        println!("New flow.");
        if let Err(e) = flow.set_rcv_timeout(Some(Duration::from_secs(5))) {
            println!("Failed to set a timeout: {e}.");
            continue;
        }
        let msg = match flow.read(BUF_SIZE) {
            Ok(m) => m,
            Err(e) => {
                println!("Failed to read packet: {e}.");
                continue;
            }
        };
        let text = String::from_utf8_lossy(&msg);
        println!("Message from client is {}.", text.trim_end_matches('\0'));
        if let Err(e) = flow.write(&msg) {
            println!("Failed to write packet: {e}.");
        }
        // Deallocated once the client has read the echo (left to the
        // library if it is gone without: 0.23 would wait forever).
        let _ = flow.dealloc_or_leave(Duration::from_secs(1));
    }
    ExitCode::SUCCESS
}

fn client(name: &str) -> ExitCode {
    let flow = match flow_alloc(name, None, None) {
        Ok(f) => f,
        Err(e) => {
            println!("Failed to allocate flow: {e}.");
            return ExitCode::FAILURE;
        }
    };
    // Like the C client, send the terminating NUL too.
    if let Err(e) = flow.set_rcv_timeout(Some(Duration::from_secs(10))) {
        println!("Failed to set a timeout: {e}.");
        return ExitCode::FAILURE;
    }
    if let Err(e) = flow.write(b"Client says hi!\0") {
        println!("Failed to write packet: {e}.");
        return ExitCode::FAILURE;
    }
    match flow.readline(BUF_SIZE) {
        Ok(reply) => {
            println!("Server replied with {reply}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("Failed to read packet: {e}.");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let mut listen = false;
    let mut name = String::from("oecho");
    let mut layers = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "-l" | "--listen" => listen = true,
            "-n" | "--name" => match args.next() {
                Some(n) => name = n,
                None => {
                    usage();
                    return ExitCode::FAILURE;
                }
            },
            "--layer" => match args.next() {
                Some(l) => layers.push(l),
                None => {
                    usage();
                    return ExitCode::FAILURE;
                }
            },
            _ => {
                usage();
                return ExitCode::SUCCESS;
            }
        }
    }
    if let Err(e) = cicada_ouroboros::check() {
        println!("Ouroboros is not usable: {e}");
        return ExitCode::FAILURE;
    }
    if listen {
        server(&name, &layers)
    } else {
        client(&name)
    }
}
