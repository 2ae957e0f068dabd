//! Shared signature helpers: HMAC-SHA256, constant-time comparison, `t=…,v1=…` headers and time
//! windows. Adapters compose these instead of repeating them.

use chrono::{DateTime, Utc};
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::CallbackError;

type HmacSha256 = Hmac<Sha256>;

/// HMAC-SHA256 of `message` under `key` (the UTF-8 bytes of the configured secret, as written).
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length; new_from_slice cannot fail for it.
    let mut mac =
        <HmacSha256 as KeyInit>::new_from_slice(key).unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(message);
    mac.finalize().into_bytes().into()
}

/// Lower-case hex HMAC-SHA256.
pub fn hmac_sha256_hex(key: &[u8], message: &[u8]) -> String {
    hex::encode(hmac_sha256(key, message))
}

/// Hex SHA-256 of `bytes` (body digests for dedupe and audit).
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Constant-time check of a hex signature (either case) against the expected MAC bytes.
pub fn hex_matches(expected: &[u8], candidate_hex: &str) -> bool {
    match hex::decode(candidate_hex.trim()) {
        Ok(candidate) => candidate.len() == expected.len() && bool::from(candidate.ct_eq(expected)),
        Err(_) => false,
    }
}

/// A parsed `t=<unix>,v1=<hex>[,v1=<hex>…]` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimestampedSignature {
    /// `t` exactly as received: it is part of the signed text.
    pub t: String,
    /// `t` as a number.
    pub timestamp: i64,
    /// Every `v1` value, in order.
    pub v1: Vec<String>,
}

/// Parses a `t=…,v1=…` header: parts split on `,` and trimmed, each split at its first `=`, keys in
/// any order, unknown keys ignored, several `v1` allowed. No `t` or no `v1` → signature invalid.
pub fn parse_timestamped(header: &str) -> Result<TimestampedSignature, CallbackError> {
    let mut t = None;
    let mut v1 = Vec::new();
    for part in header.split(',') {
        let Some((key, value)) = part.trim().split_once('=') else { continue };
        match key.trim() {
            "t" => t = Some(value.trim().to_owned()),
            "v1" => v1.push(value.trim().to_owned()),
            _ => {}
        }
    }
    let t = t.ok_or(CallbackError::SignatureInvalid)?;
    let timestamp = t.parse::<i64>().map_err(|_| CallbackError::SignatureInvalid)?;
    if v1.is_empty() {
        return Err(CallbackError::SignatureInvalid);
    }
    Ok(TimestampedSignature { t, timestamp, v1 })
}

impl TimestampedSignature {
    /// Checks HMAC-SHA256 over `"{t}.{body}"` against every `v1` with every secret (any match
    /// passes), then the window |now − t| ≤ tolerance, inclusive.
    pub fn verify(
        &self,
        secrets: &[&[u8]],
        body: &[u8],
        now: DateTime<Utc>,
        tolerance_secs: u64,
    ) -> Result<(), CallbackError> {
        let mut signed = Vec::with_capacity(self.t.len() + 1 + body.len());
        signed.extend_from_slice(self.t.as_bytes());
        signed.push(b'.');
        signed.extend_from_slice(body);
        let mut ok = false;
        for secret in secrets {
            let expected = hmac_sha256(secret, &signed);
            for candidate in &self.v1 {
                ok |= hex_matches(&expected, candidate);
            }
        }
        if !ok {
            return Err(CallbackError::SignatureInvalid);
        }
        let skew = now.timestamp().abs_diff(self.timestamp);
        if skew > tolerance_secs {
            return Err(CallbackError::SignatureExpired);
        }
        Ok(())
    }
}

/// Builds a `t=…,v1=…` header for `body` (what a provider does; used by the sandbox page).
pub fn sign_timestamped(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let mut signed = timestamp.to_string().into_bytes();
    signed.push(b'.');
    signed.extend_from_slice(body);
    format!("t={timestamp},v1={}", hmac_sha256_hex(secret, &signed))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Vectors computed independently with Python:
    //   import hmac, hashlib
    //   hmac.new(b"whsec_test", b'1700000000.{"a":1}', hashlib.sha256).hexdigest()
    const SECRET: &[u8] = b"whsec_test";
    const BODY: &[u8] = br#"{"a":1}"#;
    const PY_SIG_1700000000: &str = "38877139021993b830af32feea6e18a8da83eb2f6e49ee50bd9e4cf4ca4d3789";

    fn at(ts: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(ts, 0).unwrap()
    }

    #[test]
    fn hmac_matches_rfc4231_case_2() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        assert_eq!(
            hmac_sha256_hex(b"Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn python_vector() {
        assert_eq!(hmac_sha256_hex(SECRET, b"1700000000.{\"a\":1}"), PY_SIG_1700000000);
        assert_eq!(sign_timestamped(SECRET, 1_700_000_000, BODY), format!("t=1700000000,v1={PY_SIG_1700000000}"));
    }

    #[test]
    fn parses_in_any_order_with_unknown_keys_and_spaces() {
        let s = parse_timestamped(" v1=AB , foo=bar,t=1700000000 , v1=cd=ef").unwrap();
        assert_eq!(s.t, "1700000000");
        assert_eq!(s.v1, vec!["AB", "cd=ef"]);
        for bad in ["", "t=1", "v1=ab", "t=abc,v1=ab", "t,v1"] {
            assert_eq!(parse_timestamped(bad), Err(CallbackError::SignatureInvalid), "{bad}");
        }
    }

    #[test]
    fn verifies_any_v1_case_insensitively_and_checks_window() {
        let header = sign_timestamped(SECRET, 1_700_000_000, BODY);
        let good = header.split("v1=").nth(1).unwrap().to_owned();
        let h = format!("t=1700000000,v1=deadbeef,v1={}", good.to_uppercase());
        let s = parse_timestamped(&h).unwrap();
        assert_eq!(s.verify(&[b"other", SECRET], BODY, at(1_700_000_300), 300), Ok(()));
        assert_eq!(s.verify(&[SECRET], BODY, at(1_699_999_700), 300), Ok(()));
        assert_eq!(s.verify(&[SECRET], BODY, at(1_700_000_301), 300), Err(CallbackError::SignatureExpired));
        assert_eq!(s.verify(&[SECRET], BODY, at(1_699_999_699), 300), Err(CallbackError::SignatureExpired));
        assert_eq!(s.verify(&[b"wrong"], BODY, at(1_700_000_000), 300), Err(CallbackError::SignatureInvalid));
        assert_eq!(s.verify(&[SECRET], b"{\"a\":2}", at(1_700_000_000), 300), Err(CallbackError::SignatureInvalid));
    }

    #[test]
    fn t_is_signed_exactly_as_received() {
        // "+1700000000" parses as the same number but is different signed text.
        let header = sign_timestamped(SECRET, 1_700_000_000, BODY).replace("t=", "t=+");
        let s = parse_timestamped(&header).unwrap();
        assert_eq!(s.verify(&[SECRET], BODY, at(1_700_000_000), 300), Err(CallbackError::SignatureInvalid));
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        proptest! {
            #![proptest_config(crate::providers::proptests::config())]

            /// Any header text: parsing never panics.
            #[test]
            fn any_header_parses_or_is_refused(header in ".{0,200}") {
                let _ = parse_timestamped(&header);
            }

            /// Signed with the key: verifies. Signed with any other key, or a signature
            /// guessed: refused.
            #[test]
            fn only_the_key_verifies(
                key in prop::collection::vec(any::<u8>(), 1..64),
                other in prop::collection::vec(any::<u8>(), 1..64),
                body in prop::collection::vec(any::<u8>(), 0..512),
                t in 0i64..4_000_000_000,
                guess in "[0-9a-fA-F]{64}",
            ) {
                prop_assume!(key != other);
                let now = at(t);
                let good = parse_timestamped(&sign_timestamped(&key, t, &body)).unwrap();
                prop_assert_eq!(good.verify(&[&key], &body, now, 300), Ok(()));
                let forged = parse_timestamped(&sign_timestamped(&other, t, &body)).unwrap();
                prop_assert_eq!(forged.verify(&[&key], &body, now, 300), Err(CallbackError::SignatureInvalid));
                let guessed = parse_timestamped(&format!("t={t},v1={guess}")).unwrap();
                prop_assert_eq!(guessed.verify(&[&key], &body, now, 300), Err(CallbackError::SignatureInvalid));
                // The same signature over another body is refused too.
                let mut tampered = body.clone();
                tampered.push(b'x');
                prop_assert_eq!(good.verify(&[&key], &tampered, now, 300), Err(CallbackError::SignatureInvalid));
            }
        }
    }
}
