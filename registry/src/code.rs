//! Link codes: 8 base62 characters from the OS-seeded CSPRNG.
//!
//! 62^8 ≈ 2.2 × 10^14 codes: with a million live links, a guess hits one with
//! probability ≈ 5 × 10^-9, so codes cannot be enumerated to discover links.

use rand::Rng;
use ricochet_schemas::LinkCode;

const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
pub const CODE_LEN: usize = 8;

pub fn mint() -> LinkCode {
    // ThreadRng is a CSPRNG (ChaCha) reseeded from the OS.
    let mut rng = rand::rng();
    let code: String = (0..CODE_LEN).map(|_| ALPHABET[rng.random_range(0..62)] as char).collect();
    LinkCode::parse(code).expect("minted codes are valid base62 of CODE_LEN")
}

#[cfg(test)]
mod tests {
    #[test]
    fn minted_codes_are_valid_and_do_not_repeat() {
        let codes: std::collections::HashSet<String> = (0..10_000).map(|_| super::mint().to_string()).collect();
        assert_eq!(codes.len(), 10_000);
        assert!(codes.iter().all(|c| c.len() == super::CODE_LEN));
    }
}
