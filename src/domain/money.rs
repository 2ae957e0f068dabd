//! Money as integer minor units plus an ISO 4217 currency, and exact conversion to decimal text.

use std::fmt;

/// An active ISO 4217 currency with a defined minor-unit exponent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Currency {
    code: iso_currency::Currency,
    exponent: u32,
}

impl Currency {
    /// Parses an upper-case, active ISO 4217 code. Lower case, unknown and withdrawn codes (HRK,
    /// CUC, …) and codes without a minor unit (XXX, XTS, XAU, XDR, …) are rejected.
    pub fn parse(code: &str) -> Option<Self> {
        if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_uppercase()) {
            return None;
        }
        let c = iso_currency::Currency::from_code(code)?;
        // The crate marks VES as superseded by VED, but ISO 4217 lists both as active.
        if c.is_superseded().is_some() && c != iso_currency::Currency::VES {
            return None;
        }
        let exponent = u32::from(c.exponent()?);
        Some(Self { code: c, exponent })
    }

    /// The alpha-3 code, e.g. `USD`.
    pub fn code(&self) -> &'static str {
        self.code.code()
    }

    /// Number of minor-unit digits: JPY 0, USD 2, KWD 3.
    pub fn exponent(&self) -> u32 {
        self.exponent
    }
}

impl serde::Serialize for Currency {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.code())
    }
}

impl<'de> serde::Deserialize<'de> for Currency {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let code = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::parse(&code).ok_or_else(|| serde::de::Error::custom("not an active ISO 4217 currency"))
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// A positive amount of money in minor units. Serialized as `amount_minor` and `currency` (the
/// stored payment snapshot's shape).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Money {
    #[serde(rename = "amount_minor")]
    pub minor: i64,
    pub currency: Currency,
}

impl Money {
    /// The amount in major units as exact decimal text with exactly `exponent` decimals:
    /// `1234 USD` → `12.34`, `1234 JPY` → `1234`, `1234 KWD` → `1.234`.
    pub fn to_decimal_string(&self) -> String {
        format_minor(self.minor, self.currency.exponent())
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.to_decimal_string(), self.currency)
    }
}

/// Formats minor units as a decimal string with `exponent` digits after the point, exactly.
pub fn format_minor(minor: i64, exponent: u32) -> String {
    let sign = if minor < 0 { "-" } else { "" };
    let digits = minor.unsigned_abs().to_string();
    if exponent == 0 {
        return format!("{sign}{digits}");
    }
    let exp = exponent as usize;
    let padded = format!("{digits:0>width$}", width = exp + 1);
    let (int, frac) = padded.split_at(padded.len() - exp);
    format!("{sign}{int}.{frac}")
}

/// Parses a plain decimal string (`12.5`, `12.50`, `1,234.00` is *not* accepted) into minor
/// units for a currency of `exponent` digits. Fails if it carries more precision than the
/// currency allows, or overflows.
pub fn parse_decimal_minor(text: &str, exponent: u32) -> Option<i64> {
    let (neg, body) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    if int.is_empty() || !int.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if body.contains('.') && frac.is_empty() {
        return None;
    }
    let exp = exponent as usize;
    let significant = frac.trim_end_matches('0');
    if significant.len() > exp {
        return None;
    }
    let mut value: i64 = int.parse().ok()?;
    value = value.checked_mul(10_i64.checked_pow(exponent)?)?;
    if !significant.is_empty() {
        let scaled: i64 = format!("{significant:0<exp$}").parse().ok()?;
        value = value.checked_add(scaled)?;
    }
    Some(if neg { -value } else { value })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn currencies_parse_with_their_exponents() {
        assert_eq!(Currency::parse("JPY").unwrap().exponent(), 0);
        assert_eq!(Currency::parse("USD").unwrap().exponent(), 2);
        assert_eq!(Currency::parse("KWD").unwrap().exponent(), 3);
        assert_eq!(Currency::parse("INR").unwrap().code(), "INR");
        assert!(Currency::parse("VES").is_some() && Currency::parse("VED").is_some());
    }

    #[test]
    fn bad_currencies_are_rejected() {
        for bad in ["usd", "Usd", "XXX", "XTS", "XAU", "XDR", "ABC", "", "USDD", "US", "HRK", "CUC"] {
            assert!(Currency::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn formats_by_exponent() {
        let m = |minor, code| Money { minor, currency: Currency::parse(code).unwrap() };
        assert_eq!(m(1234, "USD").to_string(), "12.34 USD");
        assert_eq!(m(1234, "JPY").to_string(), "1234 JPY");
        assert_eq!(m(1234, "KWD").to_string(), "1.234 KWD");
        assert_eq!(m(5, "USD").to_decimal_string(), "0.05");
        assert_eq!(m(5, "KWD").to_decimal_string(), "0.005");
        assert_eq!(m(100000, "INR").to_decimal_string(), "1000.00");
        assert_eq!(format_minor(i64::MAX, 2), "92233720368547758.07");
        assert_eq!(format_minor(-5, 2), "-0.05");
    }

    #[test]
    fn parses_decimals_exactly() {
        assert_eq!(parse_decimal_minor("12.34", 2), Some(1234));
        assert_eq!(parse_decimal_minor("12.5", 2), Some(1250));
        assert_eq!(parse_decimal_minor("12", 2), Some(1200));
        assert_eq!(parse_decimal_minor("12.340", 2), Some(1234));
        assert_eq!(parse_decimal_minor("1234", 0), Some(1234));
        assert_eq!(parse_decimal_minor("1.234", 3), Some(1234));
        assert_eq!(parse_decimal_minor("12.345", 2), None);
        assert_eq!(parse_decimal_minor("1,234.00", 2), None);
        assert_eq!(parse_decimal_minor("12.", 2), None);
        assert_eq!(parse_decimal_minor(".5", 2), None);
        assert_eq!(parse_decimal_minor("1e3", 2), None);
        assert_eq!(parse_decimal_minor("92233720368547758.08", 2), None);
    }

    #[test]
    fn format_and_parse_round_trip() {
        for exp in 0..=3 {
            for minor in [1_i64, 9, 10, 99, 100, 101, 123_456_789, i64::MAX / 1000] {
                assert_eq!(parse_decimal_minor(&format_minor(minor, exp), exp), Some(minor));
            }
        }
    }
}
