//! I/O: writes a swarm key file.
//!
//! `cicada keygen`: makes a swarm key (32 random bytes, written as 64 hex
//! digits on one line) for `cicada node --swarm-key FILE`.

use std::path::PathBuf;

use cicada::SwarmKey;

/// Arguments of `cicada keygen`.
#[derive(clap::Args, Debug)]
pub struct KeygenArgs {
    /// File to write the key to (readable by its owner only; never
    /// overwritten). Without it the key is printed on stdout.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Makes the key; returns the exit code.
pub fn main(args: KeygenArgs) -> i32 {
    let key = match SwarmKey::generate() {
        Ok(k) => k,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    match args.out {
        None => {
            println!("{}", key.to_hex());
            0
        }
        Some(path) => match key.write_file(&path) {
            Ok(()) => {
                eprintln!("swarm key written to {}", path.display());
                0
            }
            Err(e) => {
                eprintln!("error: cannot write {}: {e}", path.display());
                1
            }
        },
    }
}
