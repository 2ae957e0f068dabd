//! Size limits of the public interface, in one place (documented in `docs/security.md`).
//! A request over a limit is refused before anything is written.

/// Largest gRPC message the server decodes (the transport answers `OUT_OF_RANGE` /
/// `RESOURCE_EXHAUSTED` above it) or encodes.
pub const MAX_GRPC_MESSAGE_BYTES: usize = 4 * 1024 * 1024;
/// Largest callback body: HTTP ingress → 413 `BODY_TOO_LARGE`; VerifyCallback → `INVALID_FIELD` `body`.
pub const MAX_CALLBACK_BODY_BYTES: usize = 1024 * 1024;
/// Most header entries a VerifyCallback request may carry (`INVALID_FIELD` `headers`).
pub const MAX_CALLBACK_HEADERS: usize = 100;
/// Most bytes of header names and values, all together, in one VerifyCallback request.
pub const MAX_CALLBACK_HEADER_BYTES: usize = 64 * 1024;
/// Most `line_items` in a CreateCheckout request (`INVALID_FIELD` `line_items`).
pub const MAX_LINE_ITEMS: usize = 100;

/// Checks a VerifyCallback request's body and headers against the limits above.
pub fn check_callback<'a>(
    body: &[u8],
    headers: impl ExactSizeIterator<Item = (&'a String, &'a String)>,
) -> Result<(), crate::error::ApiError> {
    use crate::error::ApiError;
    if body.len() > MAX_CALLBACK_BODY_BYTES {
        return Err(ApiError::invalid("body", format!("must be at most {MAX_CALLBACK_BODY_BYTES} bytes")));
    }
    if headers.len() > MAX_CALLBACK_HEADERS {
        return Err(ApiError::invalid("headers", format!("at most {MAX_CALLBACK_HEADERS} entries")));
    }
    let bytes: usize = headers.map(|(k, v)| k.len() + v.len()).sum();
    if bytes > MAX_CALLBACK_HEADER_BYTES {
        return Err(ApiError::invalid("headers", format!("at most {MAX_CALLBACK_HEADER_BYTES} bytes in all")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn field(r: Result<(), crate::error::ApiError>) -> Option<String> {
        match r {
            Ok(()) => None,
            Err(crate::error::ApiError::InvalidField { field, .. }) => Some(field),
            Err(e) => panic!("unexpected {e:?}"),
        }
    }

    #[test]
    fn callback_limits_are_inclusive() {
        let none = HashMap::<String, String>::new();
        assert_eq!(field(check_callback(&vec![b'x'; MAX_CALLBACK_BODY_BYTES], none.iter())), None);
        assert_eq!(field(check_callback(&vec![b'x'; MAX_CALLBACK_BODY_BYTES + 1], none.iter())), Some("body".into()));
        let many: HashMap<String, String> =
            (0..=MAX_CALLBACK_HEADERS).map(|i| (format!("h{i}"), String::new())).collect();
        assert_eq!(field(check_callback(b"", many.iter())), Some("headers".into()));
        let fits: HashMap<String, String> = [("h".to_owned(), "v".repeat(MAX_CALLBACK_HEADER_BYTES - 1))].into();
        assert_eq!(field(check_callback(b"", fits.iter())), None);
        let big: HashMap<String, String> = [("h".to_owned(), "v".repeat(MAX_CALLBACK_HEADER_BYTES))].into();
        assert_eq!(field(check_callback(b"", big.iter())), Some("headers".into()));
    }
}
