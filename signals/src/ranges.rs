//! Sorted, disjoint, inclusive IP range tables: the ASN table and the country
//! table share their file format (`family,start_hex,end_hex,value` lines,
//! gzip-compressed, written by `signals/refresh-data.sh`) and their lookup.
//!
//! A lookup allocates nothing. IPv4 goes through a /16 index, so it searches
//! only its prefix's few ranges, a cache line or two, instead of
//! binary-searching megabytes with a cache miss at every step. IPv6 ranges are
//! too unevenly spread for a prefix index (one /32 of the country table holds
//! 34 k of its 216 k ranges), so IPv6 searches the starts' top 64 bits through
//! a two-level sample (see `v6_sample`), then the few ranges sharing them.

use std::io::{BufRead, BufReader};
use std::net::IpAddr;

use crate::SignalsError;

pub struct RangeTable<V> {
    /// Inclusive `(start, end, value)`, sorted by start, not overlapping.
    v4: Vec<(u32, u32, V)>,
    /// `v4_first[p]`: the index of the first v4 range starting at or after
    /// `p << 16`, for every /16 prefix `p` (and one past the last).
    v4_first: Vec<u32>,
    v6: Vec<(u128, u128, V)>,
    /// `v6_keys[i]`: the top 64 bits of `v6[i]`'s start (non-decreasing).
    v6_keys: Vec<u64>,
    /// Every [`BLOCK`]th key: small enough to stay in cache (~110 KB for the
    /// country table), so a search misses cache only in its one block of keys
    /// and at the range it lands on, instead of at most of its ~18 steps.
    v6_sample: Vec<u64>,
}

/// Keys per block of the IPv6 sample: 16 keys, two cache lines.
const BLOCK: usize = 16;

/// `keys.partition_point(pred)` for a `pred` true up to some point, found in
/// `sample` (every `BLOCK`th key) first, then in one block of `keys`.
fn partition_sampled(keys: &[u64], sample: &[u64], pred: impl Fn(u64) -> bool) -> usize {
    // Blocks before `j` start with a key `pred` holds for; block `j` does not,
    // so the point is inside block `j - 1` or at block `j`'s start.
    let j = sample.partition_point(|&k| pred(k));
    let from = j.saturating_sub(1) * BLOCK;
    let to = (j * BLOCK).min(keys.len());
    from + keys[from..to].partition_point(|&k| pred(k))
}

fn bad(file: &'static str, line: usize, problem: impl ToString) -> SignalsError {
    SignalsError::BadData { file, line, problem: problem.to_string() }
}

impl<V: Copy> RangeTable<V> {
    /// Parses a gzip-compressed table; `value` reads each line's last field.
    /// Refuses unsorted or overlapping ranges rather than answering wrongly.
    pub fn parse_gz(
        file: &'static str,
        gz: &[u8],
        value: impl Fn(&str) -> Result<V, String>,
    ) -> Result<Self, SignalsError> {
        // Line by line through one reused buffer: the tables are ~20 MB of
        // text, and reading one whole into a string that doubles as it grows
        // put a third more on a process's start-up peak (81 MB against 55 MB
        // for the country table alone) for no faster parse.
        let mut reader = BufReader::with_capacity(1 << 16, flate2::read::GzDecoder::new(gz));
        let mut buffer = String::new();
        let (mut v4, mut v6) = (Vec::new(), Vec::new());
        for n in 1.. {
            buffer.clear();
            if reader.read_line(&mut buffer).map_err(|source| SignalsError::Io { file, source })? == 0 {
                break;
            }
            // What `str::lines` strips: one `\n` or `\r\n`.
            let line = buffer.strip_suffix('\n').map_or(buffer.as_str(), |l| l.strip_suffix('\r').unwrap_or(l));
            let mut f = line.split(',');
            let (Some(family), Some(start), Some(end), Some(v), None) =
                (f.next(), f.next(), f.next(), f.next(), f.next())
            else {
                return Err(bad(file, n, "expected family,start,end,value"));
            };
            let v = value(v).map_err(|e| bad(file, n, e))?;
            let hex = |s: &str| u128::from_str_radix(s, 16).map_err(|e| bad(file, n, e));
            let (start, end) = (hex(start)?, hex(end)?);
            if start > end {
                return Err(bad(file, n, "range ends before it starts"));
            }
            match family {
                "4" => {
                    let v4n = |x: u128| u32::try_from(x).map_err(|_| bad(file, n, "not an IPv4 number"));
                    let (start, end) = (v4n(start)?, v4n(end)?);
                    if v4.last().is_some_and(|&(_, prev_end, _)| start <= prev_end) {
                        return Err(bad(file, n, "ranges must be sorted and disjoint"));
                    }
                    v4.push((start, end, v));
                }
                "6" => {
                    if v6.last().is_some_and(|&(_, prev_end, _)| start <= prev_end) {
                        return Err(bad(file, n, "ranges must be sorted and disjoint"));
                    }
                    v6.push((start, end, v));
                }
                other => return Err(bad(file, n, format!("family {other:?}"))),
            }
        }
        v4.shrink_to_fit();
        v6.shrink_to_fit();
        let v4_first = (0..=1u64 << 16).map(|p| v4.partition_point(|r| u64::from(r.0) < p << 16) as u32).collect();
        let v6_keys: Vec<u64> = v6.iter().map(|r| (r.0 >> 64) as u64).collect();
        let v6_sample = v6_keys.iter().step_by(BLOCK).copied().collect();
        Ok(RangeTable { v4, v4_first, v6, v6_keys, v6_sample })
    }

    /// The value of the range holding `ip`, if one does. An IPv4-mapped IPv6
    /// address (`::ffff:a.b.c.d`, what a dual-stack socket reports) reads as
    /// its IPv4 address.
    pub fn get(&self, ip: IpAddr) -> Option<V> {
        fn find<T: Ord + Copy, V: Copy>(ranges: &[(T, T, V)], x: T) -> Option<V> {
            let i = ranges.partition_point(|r| r.0 <= x);
            match i.checked_sub(1).map(|i| ranges[i]) {
                Some((_, end, v)) if x <= end => Some(v),
                _ => None,
            }
        }
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match ip {
            IpAddr::V4(v4) => {
                let x = u32::from(v4);
                let prefix = (x >> 16) as usize;
                let (from, to) = (self.v4_first[prefix] as usize, self.v4_first[prefix + 1] as usize);
                // The range holding x starts inside its /16, or is the last one before it.
                find(&self.v4[from.saturating_sub(1)..to], x)
            }
            IpAddr::V6(v6) => {
                let x = u128::from(v6);
                let high = (x >> 64) as u64;
                // The ranges whose start's top half is x's form a run (5 long on
                // average, 414 at most in the country table): search it by full
                // start, with the range before it as the candidate if x precedes them all.
                let to = partition_sampled(&self.v6_keys, &self.v6_sample, |k| k <= high);
                // Mostly no run at all (a start's top half is usually its own):
                // then the one candidate is the range before `to`, with no second search.
                let from = match to.checked_sub(1).map(|i| self.v6_keys[i]) {
                    Some(k) if k == high => partition_sampled(&self.v6_keys, &self.v6_sample, |k| k < high),
                    _ => to,
                };
                find(&self.v6[from.saturating_sub(1)..to], x)
            }
        }
    }

    /// Every IPv4 range, sorted.
    pub fn v4(&self) -> &[(u32, u32, V)] {
        &self.v4
    }

    /// Every IPv6 range, sorted.
    pub fn v6(&self) -> &[(u128, u128, V)] {
        &self.v6
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gz(text: &str) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(text.as_bytes()).unwrap();
        e.finish().unwrap()
    }

    fn table(text: &str) -> Result<RangeTable<u32>, SignalsError> {
        RangeTable::parse_gz("test", &gz(text), |v| v.parse::<u32>().map_err(|e| e.to_string()))
    }

    #[test]
    fn lookups_hit_inside_and_at_the_edges_and_miss_in_gaps() {
        // 1.0.0.0-1.0.0.255 → 1; 1.0.2.0-1.1.0.255 (crosses a /16) → 2; 2001:db8::/32 → 3.
        let t = table("4,1000000,10000ff,1\n4,1000200,10100ff,2\n6,20010db8000000000000000000000000,20010db8ffffffffffffffffffffffff,3\n").unwrap();
        let get = |s: &str| t.get(s.parse().unwrap());
        assert_eq!(get("1.0.0.0"), Some(1));
        assert_eq!(get("1.0.0.255"), Some(1));
        assert_eq!(get("1.0.1.0"), None, "a gap");
        assert_eq!(get("1.0.2.0"), Some(2));
        assert_eq!(get("1.1.0.7"), Some(2), "found from the next /16's index");
        assert_eq!(get("1.1.1.0"), None);
        assert_eq!(get("::ffff:1.0.0.9"), Some(1), "mapped IPv6 reads as IPv4");
        assert_eq!(get("2001:db8::1"), Some(3));
        assert_eq!(get("2001:db9::"), None);
        assert_eq!(get("0.0.0.0"), None);
        assert_eq!(get("255.255.255.255"), None);
    }

    #[test]
    fn ipv6_ranges_inside_one_slash_64_are_told_apart() {
        // Three ranges share the top 64 bits 2001:db8:0:0; one more starts at 2001:db8:0:1::.
        let t = table(concat!(
            "6,20010db8000000000000000000000000,20010db800000000000000000000000f,1\n",
            "6,20010db8000000000000000000000010,20010db800000000000000000000001f,2\n",
            "6,20010db8000000000000000000000030,20010db800000000000000000000003f,3\n",
            "6,20010db8000000010000000000000000,20010db80000000100000000ffffffff,4\n",
        ))
        .unwrap();
        let get = |s: &str| t.get(s.parse().unwrap());
        assert_eq!(get("2001:db8::"), Some(1));
        assert_eq!(get("2001:db8::f"), Some(1));
        assert_eq!(get("2001:db8::10"), Some(2));
        assert_eq!(get("2001:db8::20"), None, "a gap inside the /64");
        assert_eq!(get("2001:db8::3f"), Some(3));
        assert_eq!(get("2001:db8::40"), None, "past the last range of the /64");
        assert_eq!(get("2001:db8:0:1::9"), Some(4));
        assert_eq!(get("2001:db8:0:1:0:1::"), None);
        assert_eq!(get("2001:db7:ffff:ffff:ffff:ffff:ffff:ffff"), None, "before the first");
    }

    #[test]
    fn the_sampled_search_is_a_partition_point() {
        // Runs of equal keys longer than a block, across block edges, and the ends.
        let keys: Vec<u64> = (0..200u64).map(|i| i / 37 * 10).collect();
        let sample: Vec<u64> = keys.iter().step_by(BLOCK).copied().collect();
        for x in 0..70 {
            assert_eq!(partition_sampled(&keys, &sample, |k| k <= x), keys.partition_point(|&k| k <= x), "<= {x}");
            assert_eq!(partition_sampled(&keys, &sample, |k| k < x), keys.partition_point(|&k| k < x), "< {x}");
        }
        assert_eq!(partition_sampled(&[], &[], |_| true), 0);
    }

    #[test]
    fn lines_end_as_str_lines_ends_them() {
        // `\r\n` endings and a last line without one read like `\n` lines;
        // a line number still counts every line.
        let t = table("4,1000000,10000ff,1\r\n4,1000200,10100ff,2").unwrap();
        assert_eq!((t.get("1.0.0.1".parse().unwrap()), t.get("1.0.2.1".parse().unwrap())), (Some(1), Some(2)));
        match table("4,1000000,10000ff,1\r\n\r\n") {
            Err(SignalsError::BadData { line: 2, .. }) => {}
            other => panic!("an empty second line: {:?}", other.err()),
        }
    }

    #[test]
    fn bad_tables_are_refused_with_their_line() {
        for (text, line) in [
            ("4,10,20,1\n4,15,30,2\n", 2),
            ("4,20,10,1\n", 1),
            ("4,1,2\n", 1),
            ("5,1,2,3\n", 1),
            ("4,100000000,100000001,1\n", 1),
            ("4,1,2,x\n", 1),
        ] {
            match table(text) {
                Err(SignalsError::BadData { line: l, .. }) => assert_eq!(l, line, "{text:?}"),
                Err(e) => panic!("{text:?}: {e}"),
                Ok(_) => panic!("{text:?} was accepted"),
            }
        }
    }
}
