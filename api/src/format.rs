//! What an aggregate is answered in: JSON (the default) or CSV, with a header
//! row, for spreadsheets and BI tools. Asked for with `format=csv` (or
//! `format=json`) or, without `format`, `Accept: text/csv`. The numbers are
//! the same: each answer type says how it lays itself out as rows
//! ([`CsvBody`]), and the cache keeps each format apart.

use axum::http::{header, HeaderMap};

use crate::error::ApiError;

/// The `format` parameter's values.
pub const FORMATS: [&str; 2] = ["json", "csv"];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Json,
    Csv,
}

impl Format {
    /// From `format` if given (400 on another value), else from `Accept`:
    /// CSV when it names `text/csv` before (or without) `application/json`.
    pub fn negotiate(param: Option<&str>, headers: &HeaderMap) -> Result<Format, ApiError> {
        match param {
            Some("json") => return Ok(Format::Json),
            Some("csv") => return Ok(Format::Csv),
            Some(other) => return Err(ApiError::BadRequest(format!("format must be json or csv, not {other:?}"))),
            None => {}
        }
        for kind in accepted(headers) {
            match kind.as_str() {
                "text/csv" => return Ok(Format::Csv),
                "application/json" => return Ok(Format::Json),
                _ => {}
            }
        }
        Ok(Format::Json)
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Json => "application/json",
            Format::Csv => "text/csv; charset=utf-8",
        }
    }
}

/// The media types `Accept` names, lowercase, in the order given, without
/// those it refuses (`q=0`).
pub fn accepted(headers: &HeaderMap) -> Vec<String> {
    let accept = headers.get_all(header::ACCEPT).iter().filter_map(|v| v.to_str().ok()).collect::<Vec<_>>().join(",");
    accept
        .split(',')
        .filter_map(|media| {
            let mut parts = media.split(';');
            let kind = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
            let refused =
                parts.any(|p| matches!(p.trim().replace(' ', "").as_str(), "q=0" | "q=0.0" | "q=0.00" | "q=0.000"));
            (!refused && !kind.is_empty()).then_some(kind)
        })
        .collect()
}

/// An answer laid out as CSV: a header row, then the rows.
pub trait CsvBody {
    fn csv(&self, out: &mut csv::Writer<Vec<u8>>) -> csv::Result<()>;

    fn to_csv(&self) -> Vec<u8> {
        let mut out = csv::Writer::from_writer(Vec::new());
        self.csv(&mut out).expect("writing CSV to memory cannot fail");
        out.into_inner().expect("flushing CSV to memory cannot fail")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn accept(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn the_parameter_wins_then_the_accept_header() {
        let none = HeaderMap::new();
        assert_eq!(Format::negotiate(None, &none).unwrap(), Format::Json);
        assert_eq!(Format::negotiate(Some("csv"), &none).unwrap(), Format::Csv);
        assert_eq!(Format::negotiate(Some("json"), &accept("text/csv")).unwrap(), Format::Json);
        assert!(Format::negotiate(Some("xml"), &none).unwrap_err().to_string().contains("json or csv"));
        assert_eq!(Format::negotiate(None, &accept("text/csv")).unwrap(), Format::Csv);
        assert_eq!(Format::negotiate(None, &accept("application/json, text/csv")).unwrap(), Format::Json);
        assert_eq!(Format::negotiate(None, &accept("text/html, text/csv;q=0.9")).unwrap(), Format::Csv);
        assert_eq!(Format::negotiate(None, &accept("text/csv;q=0, */*")).unwrap(), Format::Json);
        assert_eq!(Format::negotiate(None, &accept("*/*")).unwrap(), Format::Json);
    }
}
