//! Durations written as strings such as `"500ms"`, `"30s"`, `"1h"` (humantime syntax).

use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// Deserializes a humantime duration string.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s)
        .map_err(|e| serde::de::Error::custom(format!("invalid duration \"{s}\": {e}")))
}

/// Formats a duration the way the config file writes it.
pub fn format(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// Serializes a duration as the string the config file accepts.
pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format(*d))
}
