//! HMAC-SHA256 signatures of webhook bodies: checked on what GitHub, Gitea
//! and Forgejo send, made on what Baton's own webhook notifications send.
//! Pure; the comparison is constant-time (`hmac`'s `verify_slice`).

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// `sha256=<hex>`, as GitHub's `X-Hub-Signature-256` carries it.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    format!(
        "sha256={}",
        hex::encode(mac(secret, body).finalize().into_bytes())
    )
}

/// Whether `signature` (`sha256=<hex>` or bare hex, as Gitea and Forgejo
/// send it) is the HMAC-SHA256 of `body` under `secret`.
pub fn verify(secret: &[u8], body: &[u8], signature: &str) -> bool {
    let hex_part = signature.trim();
    let hex_part = hex_part.strip_prefix("sha256=").unwrap_or(hex_part);
    let Ok(expected) = hex::decode(hex_part) else {
        return false;
    };
    mac(secret, body).verify_slice(&expected).is_ok()
}

fn mac(secret: &[u8], body: &[u8]) -> HmacSha256 {
    // HMAC takes a key of any length; this cannot fail.
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC accepts any key length");
    mac.update(body);
    mac
}

#[cfg(test)]
mod tests {
    use super::*;

    /// GitHub's published example ("Validating webhook deliveries").
    const SECRET: &[u8] = b"It's a Secret to Everybody";
    const PAYLOAD: &[u8] = b"Hello, World!";
    const SIGNATURE: &str =
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

    #[test]
    fn githubs_test_vector_passes() {
        assert_eq!(sign(SECRET, PAYLOAD), SIGNATURE);
        assert!(verify(SECRET, PAYLOAD, SIGNATURE));
    }

    #[test]
    fn bare_hex_is_accepted_as_gitea_and_forgejo_send_it() {
        assert!(verify(SECRET, PAYLOAD, &SIGNATURE["sha256=".len()..]));
    }

    #[test]
    fn anything_else_is_refused() {
        assert!(!verify(SECRET, b"Hello, World?", SIGNATURE));
        assert!(!verify(b"another secret", PAYLOAD, SIGNATURE));
        assert!(!verify(SECRET, PAYLOAD, "sha256=757107"));
        assert!(!verify(SECRET, PAYLOAD, "sha256=not-hex"));
        assert!(!verify(SECRET, PAYLOAD, ""));
        let mut flipped = SIGNATURE.to_string();
        flipped.replace_range(SIGNATURE.len() - 1.., "f");
        assert!(!verify(SECRET, PAYLOAD, &flipped));
    }
}
