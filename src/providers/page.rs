//! Hosted checkout pages: what a provider whose checkout is not a redirect URL of its own asks
//! paygate to show at `/checkout/{provider}/{payment_id}` (the `checkout_url` callers get).

use crate::domain::PaymentStatus;

/// The page of one payment, as the provider wants it while the payment is payable.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckoutPage {
    /// Page title, e.g. `Sandbox checkout`.
    pub title: &'static str,
    pub content: PageContent,
}

/// What the shopper can do on the page.
#[derive(Debug, Clone, PartialEq)]
pub enum PageContent {
    /// Buttons that POST `action=<value>` back to the page, as (value, label); the provider
    /// answers each with [`super::Provider::page_action`].
    Form { actions: &'static [(&'static str, &'static str)] },
    /// A provider's JavaScript SDK (`src`, a constant of the adapter) and the script that opens
    /// the checkout (`init`, whose values the adapter wrote with [`js_string`]); a "Pay now"
    /// button runs it again.
    Script { src: &'static str, init: String },
    /// Nothing to do here (e.g. the provider's session is missing).
    Closed,
}

/// A signed callback the page delivers to our own callback ingress, exactly as the provider
/// would; `outcome` picks the caller's page to send the shopper back to.
#[derive(Debug, Clone, PartialEq)]
pub struct PageCallback {
    pub url: String,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
    pub outcome: PaymentStatus,
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
