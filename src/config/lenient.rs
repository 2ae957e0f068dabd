//! Deserializers that accept a value either natively (from TOML) or as text (from the env).

use std::fmt::Display;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, de::Error};

#[derive(Deserialize)]
#[serde(untagged)]
enum NativeOrText<T> {
    Native(T),
    Text(String),
}

/// A scalar given natively or as a string to parse.
pub fn parse<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + FromStr,
    T::Err: Display,
{
    match NativeOrText::<T>::deserialize(d)? {
        NativeOrText::Native(v) => Ok(v),
        NativeOrText::Text(s) => s.trim().parse().map_err(|e| D::Error::custom(format!("`{s}`: {e}"))),
    }
}

/// Like [`parse`], for optional fields.
pub fn parse_opt<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + FromStr,
    T::Err: Display,
{
    parse(d).map(Some)
}

/// A list given natively or as comma-separated text (items trimmed, empty ones dropped).
pub fn list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(match NativeOrText::<Vec<String>>::deserialize(d)? {
        NativeOrText::Native(v) => v,
        NativeOrText::Text(s) => s.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect(),
    })
}

/// Like [`list`], for optional fields (absent = `None`).
pub fn list_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    list(d).map(Some)
}

/// A list of scalars given natively or as comma-separated text.
pub fn list_of<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + FromStr,
    T::Err: Display,
{
    match NativeOrText::<Vec<T>>::deserialize(d)? {
        NativeOrText::Native(v) => Ok(v),
        NativeOrText::Text(s) => s
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|item| item.parse().map_err(|e| D::Error::custom(format!("`{item}`: {e}"))))
            .collect(),
    }
}
