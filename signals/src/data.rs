//! The vendored lists, compiled into the binary so an edge cannot start with
//! half its data. Refreshed by `signals/refresh-data.sh`; sources and dates in
//! `signals/data/SOURCES.md`.

/// isbot's pattern list: one JavaScript regular expression a line.
pub const ISBOT_PATTERNS: &str = include_str!("../data/isbot-patterns.txt");
pub const PREVIEW_FETCHERS: &str = include_str!("../data/preview-fetchers.txt");
pub const HTTP_CLIENTS: &str = include_str!("../data/http-clients.txt");
pub const SCANNER_AGENTS: &str = include_str!("../data/scanner-agents.txt");
pub const SCANNER_REFERERS: &str = include_str!("../data/scanner-referers.txt");
/// `CIDR <tab> vendor`.
pub const SCANNER_CIDRS: &str = include_str!("../data/scanner-cidrs.txt");
/// `ASN <tab> vendor`.
pub const SCANNER_ASNS: &str = include_str!("../data/scanner-asns.txt");
/// `ASN <tab> provider`.
pub const CLOUD_ASNS: &str = include_str!("../data/cloud-asns.txt");
/// gzip of `family,start_hex,end_hex,asn` lines, sorted, inclusive ranges.
pub const ASN_RANGES_GZ: &[u8] = include_bytes!("../data/asn-ranges.csv.gz");
/// gzip of `family,start_hex,end_hex,CC` lines (ISO 3166-1 alpha-2), sorted, inclusive ranges.
pub const COUNTRY_RANGES_GZ: &[u8] = include_bytes!("../data/country-ranges.csv.gz");
/// gzip of uap-core's `regexes.yaml` parser lists, as JSON.
pub const UAP_REGEXES_JSON_GZ: &[u8] = include_bytes!("../data/uap-regexes.json.gz");
/// `kind client source pattern` lines: how a mail client shows in a user agent or referer.
pub const MAIL_CLIENTS: &str = include_str!("../data/mail-clients.txt");

/// The meaningful lines of a list: `#` starts a comment, blank lines are skipped.
/// Yields `(line number, trimmed text)`.
pub fn lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.split_once('#').map_or(l, |(before, _)| before).trim()))
        .filter(|(_, l)| !l.is_empty())
}

/// Like [`lines`], for lists whose entries may contain `#` (regular expressions):
/// only lines *starting* with `#` are comments.
pub fn pattern_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines().enumerate().map(|(i, l)| (i + 1, l)).filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
}

/// A case-insensitive substring list: `^x` must match at the start, `x` anywhere.
/// Entries are lowercase; callers match against a lowercased value.
#[derive(Debug, Clone)]
pub struct NeedleList {
    prefixes: Vec<String>,
    anywhere: Vec<String>,
}

impl NeedleList {
    pub fn parse(text: &str) -> Self {
        let mut list = NeedleList { prefixes: Vec::new(), anywhere: Vec::new() };
        for (_, entry) in lines(text) {
            let entry = entry.to_ascii_lowercase();
            match entry.strip_prefix('^') {
                Some(prefix) => list.prefixes.push(prefix.to_owned()),
                None => list.anywhere.push(entry),
            }
        }
        list
    }

    /// `lowercase` must already be ASCII-lowercased.
    pub fn matches(&self, lowercase: &str) -> bool {
        self.prefixes.iter().any(|p| lowercase.starts_with(p.as_str()))
            || self.anywhere.iter().any(|n| lowercase.contains(n.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_and_blank_lines_are_skipped() {
        let got: Vec<_> = lines("# head\n\nfoo  # why\n  bar\n").collect();
        assert_eq!(got, vec![(3, "foo"), (4, "bar")]);
        let got: Vec<_> = pattern_lines("# head\na#b\n\n").collect();
        assert_eq!(got, vec![(2, "a#b")]);
    }

    #[test]
    fn needles_match_anywhere_or_at_the_start() {
        let list = NeedleList::parse("^Curl/\nOkHttp\n");
        assert!(list.matches("curl/8.5.0"));
        assert!(!list.matches("mozilla/5.0 curl/8.5.0"), "^ anchors at the start");
        assert!(list.matches("something okhttp/4.12"));
        assert!(!list.matches("mozilla/5.0"));
    }

    #[test]
    fn every_vendored_list_is_non_empty() {
        for (name, text) in [
            ("isbot", ISBOT_PATTERNS),
            ("preview", PREVIEW_FETCHERS),
            ("http", HTTP_CLIENTS),
            ("scanner agents", SCANNER_AGENTS),
            ("referers", SCANNER_REFERERS),
            ("cidrs", SCANNER_CIDRS),
            ("scanner asns", SCANNER_ASNS),
            ("cloud asns", CLOUD_ASNS),
            ("mail clients", MAIL_CLIENTS),
        ] {
            assert!(lines(text).count() >= 3, "{name} looks empty");
        }
        assert!(ASN_RANGES_GZ.len() > 1_000_000, "the ASN table looks truncated");
        assert!(COUNTRY_RANGES_GZ.len() > 1_000_000, "the country table looks truncated");
        assert!(UAP_REGEXES_JSON_GZ.len() > 10_000, "uap-core's regexes look truncated");
    }
}
