//! Shared checks of provider account configuration.

/// Whether a provider account's `base_url` must be given (else empty means the provider's default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Required {
    Yes,
    No,
}

/// `base_url: …` when `url` is not an absolute http(s) URL (an empty one is fine unless required).
pub(crate) fn check_base_url(problems: &mut Vec<String>, url: &str, required: Required) {
    if url.is_empty() && required == Required::No {
        return;
    }
    if !url::Url::parse(url).is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some()) {
        problems.push("base_url: must be an absolute http(s) URL".to_owned());
    }
}

/// `<key>: must be set` for each blank value (never the value itself: most are secrets).
pub(crate) fn check_set(problems: &mut Vec<String>, fields: &[(&str, &str)]) {
    for (key, value) in fields {
        if value.trim().is_empty() {
            problems.push(format!("{key}: must be set"));
        }
    }
}
