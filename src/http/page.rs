//! Minimal HTML pages (no JavaScript) shared by the sandbox checkout and shopper returns.

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};

/// HTML-escapes text content.
pub fn esc(s: &str) -> String {
    html_escape::encode_safe(s).into_owned()
}

/// A complete page with `title` (escaped here) and an already-escaped `body_html`.
pub fn render(status: StatusCode, title: &str, body_html: &str) -> Response {
    let html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{title}</title>\
<style>body{{font-family:system-ui,sans-serif;max-width:32rem;margin:3rem auto;padding:0 1rem}}\
dt{{color:#555}}dd{{margin:0 0 .75rem}}button{{font-size:1rem;padding:.5rem 1.25rem;margin-right:.5rem}}</style>\
</head><body><h1>{title}</h1>\n{body_html}\n</body></html>\n",
        title = esc(title),
    );
    (status, Html(html)).into_response()
}

/// 303 See Other to `target` exactly as given; a page with the link if it cannot be a header.
pub fn see_other(target: &str) -> Response {
    match axum::http::HeaderValue::from_str(target) {
        Ok(location) => (StatusCode::SEE_OTHER, [(axum::http::header::LOCATION, location)]).into_response(),
        Err(_) => render(StatusCode::OK, "Continue", &format!("<p><a href=\"{0}\">{0}</a></p>", esc(target))),
    }
}

/// A short page with one message.
pub fn message(status: StatusCode, title: &str, text: &str) -> Response {
    render(status, title, &format!("<p>{}</p>", esc(text)))
}

/// Whether a hosted page may still take the payment: an open status and not past `expires_at`.
pub fn is_payable(p: &crate::domain::Payment) -> bool {
    p.status.is_open() && p.expires_at.is_none_or(|t| t > chrono::Utc::now())
}

/// A payment's amount (split by its currency's exponent), reference, id and status as an escaped
/// HTML list; an open payment past `expires_at` shows as expired.
pub fn payment_summary(p: &crate::domain::Payment) -> String {
    let amount = p.amount.to_string();
    let status = if p.status.is_open() && !is_payable(p) { "expired".to_owned() } else { p.status.to_string() };
    format!(
        "<dl><dt>Amount</dt><dd id=\"amount\">{}</dd><dt>Reference</dt><dd id=\"reference\">{}</dd>\
<dt>Payment</dt><dd id=\"payment-id\">{}</dd><dt>Status</dt><dd id=\"status\">{}</dd></dl>",
        esc(&amount),
        esc(&p.merchant_reference),
        esc(p.id.as_str()),
        esc(&status),
    )
}
