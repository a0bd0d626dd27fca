//! The one place prunex touches `serde_yaml` (deprecated upstream, so it
//! stays swappable): model descriptions, plan dumps and run reports all read
//! and write YAML through these two functions.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// A YAML error with the 1-based line and column where it was found.
#[derive(Debug, Clone, PartialEq)]
pub struct YamlError {
    /// What is wrong.
    pub message: String,
    /// Line and column, when known.
    pub location: Option<(usize, usize)>,
}

/// Serializes to YAML text.
pub fn to_string<T: Serialize>(value: &T) -> String {
    serde_yaml::to_string(value).expect("prunex's own types always serialize")
}

/// Parses YAML text.
pub fn from_str<T: DeserializeOwned>(text: &str) -> Result<T, YamlError> {
    serde_yaml::from_str(text).map_err(|e| YamlError {
        location: e.location().map(|l| (l.line(), l.column())),
        message: e.to_string(),
    })
}
