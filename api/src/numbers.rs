//! Integers as JSON Schema means them: `1.0` is the integer 1. The document
//! says `type: integer`, and generated clients (and schemathesis) may send an
//! integral number with a fraction part of zero; serde alone would refuse it.
//! A number with a non-zero fraction is still refused.

use serde::{Deserialize, Deserializer};

fn integral<E: serde::de::Error>(n: serde_json::Number) -> Result<i64, E> {
    if let Some(i) = n.as_i64() {
        return Ok(i);
    }
    match n.as_f64() {
        Some(f) if f.fract() == 0.0 && f >= i64::MIN as f64 && f <= i64::MAX as f64 => Ok(f as i64),
        _ => Err(E::custom(format!("expected an integer, not {n}"))),
    }
}

/// For `Option<i64>` body fields.
pub fn option_i64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    Option::<serde_json::Number>::deserialize(d)?.map(integral).transpose()
}

/// For query parameters: `5` or `5.0`.
pub fn option_u32_text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    let Some(text) = Option::<String>::deserialize(d)? else {
        return Ok(None);
    };
    let bad = || serde::de::Error::custom(format!("expected a whole number, not {text:?}"));
    let value = text.parse::<u32>().ok().or_else(|| {
        let f = text.parse::<f64>().ok()?;
        (f.fract() == 0.0 && (0.0..=u32::MAX as f64).contains(&f)).then_some(f as u32)
    });
    value.map(Some).ok_or_else(bad)
}

/// Unix seconds in a query: `5` or `5.0`.
pub fn parse_seconds(text: &str) -> Option<i64> {
    text.parse::<i64>().ok().or_else(|| {
        let f = text.parse::<f64>().ok()?;
        (f.fract() == 0.0 && f.abs() < 9.0e15).then_some(f as i64)
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn integral_floats_are_integers_and_fractions_are_not() {
        #[derive(serde::Deserialize)]
        struct B {
            #[serde(default, deserialize_with = "super::option_i64")]
            n: Option<i64>,
        }
        let n = |json: &str| serde_json::from_str::<B>(json).map(|b| b.n);
        assert_eq!(n(r#"{"n": 5}"#).unwrap(), Some(5));
        assert_eq!(n(r#"{"n": 5.0}"#).unwrap(), Some(5));
        assert_eq!(n(r#"{"n": null}"#).unwrap(), None);
        assert_eq!(n("{}").unwrap(), None);
        assert!(n(r#"{"n": 5.5}"#).is_err());
        assert_eq!(super::parse_seconds("1700000000.0"), Some(1_700_000_000));
        assert_eq!(super::parse_seconds("1.5"), None);
    }
}
