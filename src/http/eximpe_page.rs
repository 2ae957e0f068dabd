//! `GET /checkout/eximpe/{payment_id}`: EximPe returns no redirect URL, only a session that its
//! JS SDK opens in the browser. This is the `checkout_url` we hand to callers: a small page that
//! loads the SDK and opens the payment's session. The session id lives in the payment's
//! provider-private data and appears nowhere else.

use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;

use super::HttpState;
use super::page;
use crate::domain::PaymentId;
use crate::providers::eximpe::{DATA_SDK_MODE, DATA_SESSION_ID, NAME, SDK_URL};

fn not_found() -> Response {
    page::message(StatusCode::NOT_FOUND, "Checkout not found", "There is no EximPe checkout with this id.")
}

/// A string as a JavaScript string literal that is safe inside `<script>`: JSON, with `<`, `>`,
/// `&` and the line separators escaped so the text can never close the element.
pub fn js_string(s: &str) -> String {
    let json = serde_json::Value::from(s).to_string();
    json.replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029")
}

/// `GET /checkout/eximpe/{payment_id}`.
pub async fn show(State(state): State<HttpState>, Path(payment_id): Path<String>) -> Response {
    let Some(id) = PaymentId::parse(&payment_id) else { return not_found() };
    let Ok(payment) = state.gateway.get_status(id.as_str(), "", false).await else { return not_found() };
    // Another provider's payment, or an account no longer enabled.
    if payment.provider != NAME || state.gateway.registry().resolve(NAME, &payment.account).is_err() {
        return not_found();
    }
    let data = |key: &str| payment.provider_data.get(key).and_then(|v| v.as_str()).filter(|s| !s.is_empty());
    let session_id = data(DATA_SESSION_ID);
    let mode = data(DATA_SDK_MODE).unwrap_or("sandbox");

    let open = page::is_payable(&payment) && session_id.is_some();
    let mut body = page::payment_summary(&payment);
    let response = match (open, session_id) {
        (true, Some(session_id)) => {
            body.push_str(&format!(
                "<p><button type=\"button\" id=\"pay\">Pay now</button></p>\n\
<script src=\"{sdk}\"></script>\n\
<script>\n\
const eximpe = EximPe({{ mode: {mode} }});\n\
const openCheckout = () => eximpe.checkout({{ sessionId: {session} }});\n\
document.getElementById(\"pay\").addEventListener(\"click\", openCheckout);\n\
openCheckout();\n\
</script>",
                // A constant of ours with nothing to escape.
                sdk = SDK_URL,
                mode = js_string(mode),
                session = js_string(session_id),
            ));
            page::render(StatusCode::OK, "EximPe checkout", &body)
        }
        _ => {
            body.push_str("<p>This checkout is no longer open.</p>");
            page::render(StatusCode::OK, "EximPe checkout", &body)
        }
    };
    no_store(response)
}

/// The page carries a live session id: keep it out of caches and referrers.
fn no_store(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn js_strings_cannot_break_out_of_the_script() {
        assert_eq!(js_string("session_abc123"), "\"session_abc123\"");
        let evil = "</script><script>alert(1)</script>\"'&\u{2028}";
        let js = js_string(evil);
        assert!(!js.contains('<') && !js.contains('>') && !js.contains('&') && !js.contains('\u{2028}'));
        assert_eq!(serde_json::from_str::<String>(&js).unwrap(), evil);
    }
}
