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

/// Serializes to YAML text. Floats in exponent form are written as YAML
/// 1.1 reads them (`1.0e-5`, not `1e-5`): PyYAML, which most Python users
/// load YAML with, reads `1e-5` as a string.
pub fn to_string<T: Serialize>(value: &T) -> String {
    let text = serde_yaml::to_string(value).expect("prunex's own types always serialize");
    let mut out = String::with_capacity(text.len() + 16);
    for line in text.split_inclusive('\n') {
        let body = line.trim_end_matches('\n');
        let at = body
            .rfind(": ")
            .map(|i| i + 2)
            .or_else(|| {
                body.trim_start()
                    .starts_with("- ")
                    .then(|| body.find("- ").unwrap_or(0) + 2)
            })
            .unwrap_or(body.len());
        out.push_str(&body[..at]);
        out.push_str(&yaml11_float(&body[at..]).unwrap_or_else(|| body[at..].to_owned()));
        out.push_str(&line[body.len()..]);
    }
    out
}

/// A plain scalar like `1e-5` or `-2.5e7` in the form YAML 1.1 resolves as
/// a float (`1.0e-5`, `-2.5e+7`); `None` for anything else.
fn yaml11_float(v: &str) -> Option<String> {
    let (mantissa, exponent) = v.split_once(['e', 'E'])?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let unsigned = mantissa.strip_prefix('-').unwrap_or(mantissa);
    let (int, frac) = unsigned.split_once('.').unwrap_or((unsigned, "0"));
    let exp = exponent.strip_prefix(['-', '+']).unwrap_or(exponent);
    if !(digits(int) && digits(frac) && digits(exp)) {
        return None;
    }
    let sign = if mantissa.starts_with('-') { "-" } else { "" };
    let exp_sign = if exponent.starts_with('-') { "-" } else { "+" };
    Some(format!("{sign}{int}.{frac}e{exp_sign}{exp}"))
}

/// Parses YAML text.
pub fn from_str<T: DeserializeOwned>(text: &str) -> Result<T, YamlError> {
    serde_yaml::from_str(text).map_err(|e| YamlError {
        location: e.location().map(|l| (l.line(), l.column())),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn exponent_floats_are_written_as_yaml_1_1_reads_them() {
        #[derive(serde::Serialize)]
        struct T {
            eps: f64,
            big: f64,
            plain: f64,
            name: &'static str,
            list: Vec<f64>,
        }
        let text = super::to_string(&T {
            eps: 1e-5,
            big: -2.5e20,
            plain: 0.25,
            name: "1e-5",
            list: vec![1e-6, 3.0],
        });
        assert_eq!(
            text,
            "eps: 0.00001\nbig: -2.5e+20\nplain: 0.25\nname: '1e-5'\nlist:\n- 1.0e-6\n- 3.0\n"
        );
        // And it reads back.
        #[derive(serde::Deserialize, PartialEq, Debug)]
        struct U {
            eps: f64,
            big: f64,
        }
        let u: U = super::from_str(&text.lines().take(2).collect::<Vec<_>>().join("\n")).unwrap();
        assert_eq!(
            u,
            U {
                eps: 1e-5,
                big: -2.5e20
            }
        );
    }
}
