//! The keyed link's primitives for `snow`: ChaCha20-Poly1305 from `ring`
//! (its assembly, about a third more keyed messages a second than the
//! RustCrypto cipher of snow's default resolver), everything else (X25519,
//! BLAKE2s, the generator) from snow's default resolver.
//!
//! snow's own `ring` resolver keeps a `ring` key per cipher, an enum sized
//! for AES-GCM's key schedule: about 580 bytes a direction, two per
//! session, and a keyed peer of a 1,000-peer swarm holds about 49
//! sessions (44 KB in its ciphers where RustCrypto's took 3 KB). This one
//! keeps the 32-byte key and makes the `ring` key for each use, which for
//! ChaCha20 is a copy of the key.

use ring::aead::{Aad, LessSafeKey, Nonce, Tag, UnboundKey, CHACHA20_POLY1305};
use snow::params::{CipherChoice, DHChoice, HashChoice};
use snow::resolvers::{CryptoResolver, DefaultResolver};
use snow::types::{Cipher, Dh, Hash, Random};

use super::core::TAG;

/// snow's default resolver, but for ChaCha20-Poly1305 (see the module).
pub(super) struct Resolver;

impl CryptoResolver for Resolver {
    fn resolve_rng(&self) -> Option<Box<dyn Random>> {
        DefaultResolver.resolve_rng()
    }

    fn resolve_dh(&self, choice: &DHChoice) -> Option<Box<dyn Dh>> {
        DefaultResolver.resolve_dh(choice)
    }

    fn resolve_hash(&self, choice: &HashChoice) -> Option<Box<dyn Hash>> {
        DefaultResolver.resolve_hash(choice)
    }

    fn resolve_cipher(&self, choice: &CipherChoice) -> Option<Box<dyn Cipher>> {
        match choice {
            CipherChoice::ChaChaPoly => Some(Box::new(ChaChaPoly { key: [0; 32] })),
            other => DefaultResolver.resolve_cipher(other),
        }
    }
}

/// Noise's `ChaChaPoly` (RFC 8439) through `ring`, holding only its key.
struct ChaChaPoly {
    key: [u8; 32],
}

impl ChaChaPoly {
    fn key(&self) -> Option<LessSafeKey> {
        UnboundKey::new(&CHACHA20_POLY1305, &self.key)
            .ok()
            .map(LessSafeKey::new)
    }
}

/// Noise's nonce for ChaChaPoly: 32 zero bits, then the counter
/// little-endian.
fn nonce(n: u64) -> Nonce {
    let mut b = [0u8; 12];
    b[4..].copy_from_slice(&n.to_le_bytes());
    Nonce::assume_unique_for_key(b)
}

impl Cipher for ChaChaPoly {
    fn name(&self) -> &'static str {
        "ChaChaPoly"
    }

    fn set(&mut self, key: &[u8; 32]) {
        self.key = *key;
    }

    /// The ciphertext and tag in `out`; their length, or 0 if `out` is
    /// too short or the cipher refused (`ring` refuses nothing under
    /// 256 GiB), which every caller here takes for a failed seal.
    fn encrypt(&self, n: u64, authtext: &[u8], plaintext: &[u8], out: &mut [u8]) -> usize {
        let len = plaintext.len();
        let Some(key) = self.key() else {
            return 0;
        };
        if out.len() < len + TAG {
            return 0;
        }
        out[..len].copy_from_slice(plaintext);
        match key.seal_in_place_separate_tag(nonce(n), Aad::from(authtext), &mut out[..len]) {
            Ok(tag) => {
                out[len..len + TAG].copy_from_slice(tag.as_ref());
                len + TAG
            }
            Err(_) => 0,
        }
    }

    fn decrypt(
        &self,
        n: u64,
        authtext: &[u8],
        ciphertext: &[u8],
        out: &mut [u8],
    ) -> Result<usize, snow::Error> {
        let len = ciphertext
            .len()
            .checked_sub(TAG)
            .ok_or(snow::Error::Decrypt)?;
        if out.len() < len {
            return Err(snow::Error::Decrypt);
        }
        let key = self.key().ok_or(snow::Error::Decrypt)?;
        let tag = Tag::try_from(&ciphertext[len..]).map_err(|_| snow::Error::Decrypt)?;
        out[..len].copy_from_slice(&ciphertext[..len]);
        key.open_in_place_separate_tag(nonce(n), Aad::from(authtext), tag, &mut out[..len], 0..)
            .map(|p| p.len())
            .map_err(|_| snow::Error::Decrypt)
    }
}
