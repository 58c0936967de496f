//! [`SwarmKey`]: the 32-byte secret shared by the members of a private swarm,
//! and its file format.
//!
//! The file holds the key as 64 hexadecimal digits on one line. Blank lines,
//! lines starting with `#` and surrounding whitespace are ignored, so a key
//! file may carry a comment. Make one with `cicada keygen --out FILE`, or
//! with `head -c32 /dev/urandom | xxd -p -c64 > FILE`.

use std::fmt;
use std::path::Path;

/// Length of a swarm key in bytes.
pub const SWARM_KEY_LEN: usize = 32;

/// The secret that admits a peer to a private swarm: every link between two
/// peers that hold it is authenticated and encrypted with it (Noise
/// `NNpsk0`, the key as pre-shared key; see `docs/security.md`).
///
/// `Debug` never prints the key.
///
/// ```
/// use cicada::SwarmKey;
/// let key = SwarmKey::generate().expect("the OS has randomness");
/// let again: SwarmKey = key.to_hex().parse().expect("64 hex digits");
/// assert_eq!(key, again);
/// assert!(!format!("{key:?}").contains(&key.to_hex()));
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct SwarmKey([u8; SWARM_KEY_LEN]);

/// Why a swarm key could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The file could not be read.
    #[error("cannot read swarm key file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The text is not 64 hex digits.
    #[error("{what}: a swarm key is 64 hex digits (32 bytes) on one line; {problem} (make one with `cicada keygen --out FILE`)")]
    Format {
        /// The file, or "swarm key" for text.
        what: String,
        /// What is wrong with it.
        problem: String,
    },
    /// The operating system gave no randomness.
    #[error("no randomness from the operating system for a new swarm key")]
    Random,
}

impl SwarmKey {
    /// A key from its 32 bytes.
    pub fn from_bytes(bytes: [u8; SWARM_KEY_LEN]) -> SwarmKey {
        SwarmKey(bytes)
    }

    /// The key's bytes.
    pub fn as_bytes(&self) -> &[u8; SWARM_KEY_LEN] {
        &self.0
    }

    /// A new random key from the operating system's generator.
    pub fn generate() -> Result<SwarmKey, KeyError> {
        let mut b = [0u8; SWARM_KEY_LEN];
        super::random_bytes(&mut b).map_err(|_| KeyError::Random)?;
        Ok(SwarmKey(b))
    }

    /// The key as 64 lowercase hex digits (the file format, without newline).
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Parses the file format: 64 hex digits on the one line that is not
    /// blank or a `#` comment. `what` names the source in errors.
    fn parse_text(text: &str, what: &str) -> Result<SwarmKey, KeyError> {
        let bad = |problem: String| KeyError::Format {
            what: what.to_string(),
            problem,
        };
        let mut lines = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'));
        let Some(line) = lines.next() else {
            return Err(bad("found no key (the text is empty)".into()));
        };
        if lines.next().is_some() {
            return Err(bad("found more than one line of text".into()));
        }
        let n = line.chars().count();
        if n != 2 * SWARM_KEY_LEN {
            return Err(bad(format!("found {n} characters")));
        }
        if let Some((i, c)) = line.char_indices().find(|(_, c)| !c.is_ascii_hexdigit()) {
            return Err(bad(format!(
                "found {c:?} at position {}, not a hex digit",
                i + 1
            )));
        }
        let mut b = [0u8; SWARM_KEY_LEN];
        for (i, byte) in b.iter_mut().enumerate() {
            // Checked above: 64 ASCII hex digits.
            *byte =
                u8::from_str_radix(&line[2 * i..2 * i + 2], 16).map_err(|e| bad(format!("{e}")))?;
        }
        Ok(SwarmKey(b))
    }

    /// Reads a key file (see the module documentation for the format).
    ///
    /// ```
    /// let path = std::env::temp_dir().join(format!("cicada-doc-key-{}", std::process::id()));
    /// std::fs::write(&path, "# my swarm\n00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n").unwrap();
    /// let key = cicada::SwarmKey::read_file(&path).unwrap();
    /// assert_eq!(key.as_bytes()[1], 0x11);
    /// std::fs::write(&path, "not a key").unwrap();
    /// let e = cicada::SwarmKey::read_file(&path).unwrap_err();
    /// assert!(e.to_string().contains("64 hex digits"));
    /// # std::fs::remove_file(&path).unwrap();
    /// ```
    pub fn read_file(path: impl AsRef<Path>) -> Result<SwarmKey, KeyError> {
        let path = path.as_ref();
        let shown = path.display().to_string();
        let meta = std::fs::metadata(path).map_err(|source| KeyError::Read {
            path: shown.clone(),
            source,
        })?;
        // A key file is one short line; refuse to read a huge file whole.
        if meta.len() > 4096 {
            return Err(KeyError::Format {
                what: shown,
                problem: format!("the file is {} bytes long", meta.len()),
            });
        }
        let text = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
            path: shown.clone(),
            source,
        })?;
        SwarmKey::parse_text(&text, &shown)
    }

    /// Writes the key in the file format, readable by its owner only (on Unix).
    /// Refuses to overwrite an existing file.
    pub fn write_file(&self, path: impl AsRef<Path>) -> std::io::Result<()> {
        use std::io::Write;
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(path)?;
        writeln!(f, "{}", self.to_hex())?;
        f.sync_all()
    }
}

impl std::str::FromStr for SwarmKey {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<SwarmKey, KeyError> {
        SwarmKey::parse_text(s, "swarm key")
    }
}

impl fmt::Debug for SwarmKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SwarmKey(<secret>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    #[test]
    fn parses_the_file_format_and_round_trips() {
        let k: SwarmKey = format!("# comment\n\n  {HEX}  \n").parse().unwrap();
        assert_eq!(k.as_bytes()[31], 0x1f);
        assert_eq!(k.to_hex(), HEX);
        let upper: SwarmKey = HEX.to_uppercase().parse().unwrap();
        assert_eq!(upper, k);
    }

    #[test]
    fn malformed_keys_get_clear_errors() {
        let cases = [
            ("", "empty"),
            ("abc", "found 3 characters"),
            (&HEX[..62], "found 62 characters"),
            (&format!("{HEX}00"), "found 66 characters"),
            (&format!("{}zz", &HEX[..62]), "'z' at position 63"),
            (&format!("{HEX}\n{HEX}"), "more than one line"),
            (&format!("{}é", &HEX[..63]), "'é' at position 64"),
        ];
        for (text, want) in cases {
            let e = text.parse::<SwarmKey>().unwrap_err().to_string();
            assert!(e.contains(want), "{text:?}: {e}");
            assert!(e.contains("cicada keygen"), "{e}");
        }
    }

    #[test]
    fn files_are_written_private_and_never_overwritten() {
        let dir = std::env::temp_dir().join(format!("cicada-key-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("swarm.key");
        let _ = std::fs::remove_file(&path);
        let k = SwarmKey::generate().unwrap();
        k.write_file(&path).unwrap();
        assert_eq!(SwarmKey::read_file(&path).unwrap(), k);
        assert!(k.write_file(&path).is_err(), "must not overwrite");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let missing = SwarmKey::read_file(dir.join("nope")).unwrap_err();
        assert!(matches!(missing, KeyError::Read { .. }), "{missing}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn generated_keys_differ() {
        assert_ne!(SwarmKey::generate().unwrap(), SwarmKey::generate().unwrap());
    }
}
