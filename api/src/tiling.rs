//! Which breakdown rows answer a range exactly: `[from, to)` as signed spans
//! of whole buckets (weeks, UTC days, hours), pure so that it is tested
//! alone ([`crate::stats::breakdown_counts`] turns the spans into SQL).
//!
//! A range's whole weeks come from week rows, the whole days left from day
//! rows, and its ragged ends from the finer rows they cover, except that the
//! end of the range may instead be read as the coarser bucket it falls in
//! *minus* the finer rows after `to`, when that reads fewer buckets: a range
//! ending at 07:00 reads today's day row less today's hours from 07:00 (still
//! to come, so next to nothing), not seven hour rows per value. The sum is
//! exact either way: a flush writes all of its breakdown rows, every grain,
//! in one insert.
//!
//! Never the start: a bucket holding the range's start also holds time
//! before it, where retention (`RICOCHET_RETENTION_ROLLUP_DAYS`) may have
//! deleted rows. Retention deletes the rows of buckets that began before its
//! cutoff, so the bucket holding a cutoff loses its own row and keeps its
//! later hours; subtracting those hours from the missing row would take away
//! counts the range still holds. A bucket that begins at or after `from`
//! begins after the cutoff whenever the range is within retention, so it is
//! whole: every span read begins at or after `from`.
//!
//! The argument for exactness, checked by the property test below: each
//! choice replaces the end piece `P` of the range by `B - (B \ P)` for the
//! coarser bucket `B` holding `P`, which counts every finest bucket of `P`
//! once and every other one zero times; [`normalize`] then folds the spans of
//! each grain into disjoint ones, each added or subtracted once.

use ricochet_warehouse::tables::{bucket_floor, BREAKDOWN_WEEK};

/// Whole buckets of one grain, `[from, to)`, added to the counts or
/// subtracted from them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    pub grain: u32,
    pub from: i64,
    pub to: i64,
    pub minus: bool,
}

impl Span {
    pub const fn plus(grain: u32, from: i64, to: i64) -> Self {
        Span { grain, from, to, minus: false }
    }

    pub const fn minus(grain: u32, from: i64, to: i64) -> Self {
        Span { grain, from, to, minus: true }
    }

    fn negated(self) -> Self {
        Span { minus: !self.minus, ..self }
    }

    /// What reading it costs, roughly: a range read per span, plus a row
    /// group per bucket that has begun by `now` (a bucket still to come holds
    /// next to nothing).
    fn cost(&self, now: i64) -> i64 {
        let g = i64::from(self.grain);
        let begun = (now.min(self.to - 1) - self.from).div_euclid(g) + 1;
        1 + begun.max(0)
    }
}

/// `[from, to)` (multiples of the finest grain) as signed spans of `grains`
/// (coarsest first, each a multiple of the next), the fewest buckets begun by
/// `now` read, none before `from`; disjoint within each grain ([`normalize`]).
pub fn tile(from: i64, to: i64, grains: &[u32], now: i64) -> Vec<Span> {
    normalize(tile_raw(from, to, grains, now))
}

fn tile_raw(from: i64, to: i64, grains: &[u32], now: i64) -> Vec<Span> {
    if from >= to {
        return Vec::new();
    }
    let Some((&grain, finer)) = grains.split_first() else { return Vec::new() };
    if finer.is_empty() {
        return vec![Span::plus(grain, from, to)];
    }
    let g = i64::from(grain);
    let floor = bucket_floor(from, grain);
    let (start, end) = (if floor == from { from } else { floor + g }, bucket_floor(to, grain));
    if start > end {
        // Inside one bucket, which begins before `from`: its finer rows.
        return tile_raw(from, to, finer, now);
    }
    let mut spans = Vec::new();
    if start < end {
        spans.push(Span::plus(grain, start, end));
    }
    if from < start {
        spans.extend(tile_raw(from, start, finer, now));
    }
    if end < to {
        // The end: its finer rows, or its bucket less the rows after `to`.
        let direct = tile_raw(end, to, finer, now);
        let mut less = vec![Span::plus(grain, end, end + g)];
        less.extend(negated(tile_raw(to, end + g, finer, now)));
        spans.extend(cheaper(direct, less, now));
    }
    spans
}

fn negated(spans: Vec<Span>) -> impl Iterator<Item = Span> {
    spans.into_iter().map(Span::negated)
}

/// The cheaper of two tilings of the same piece; the direct one on a tie.
fn cheaper(direct: Vec<Span>, less: Vec<Span>, now: i64) -> Vec<Span> {
    let cost = |spans: &[Span]| spans.iter().map(|s| s.cost(now)).sum::<i64>();
    if cost(&less) < cost(&direct) {
        less
    } else {
        direct
    }
}

/// The same signed coverage as disjoint spans per grain, each bucket's net
/// sign once (`+1`, `-1`; a bucket added and subtracted drops out), coarsest
/// grain first, adjacent spans of one sign joined.
pub fn normalize(spans: Vec<Span>) -> Vec<Span> {
    let mut grains: Vec<u32> = spans.iter().map(|s| s.grain).collect();
    grains.sort_unstable_by(|a, b| b.cmp(a));
    grains.dedup();
    let mut out: Vec<Span> = Vec::new();
    for grain in grains {
        // Sweep the span edges of this grain: the running sum is the net sign.
        let mut edges: Vec<(i64, i64)> = Vec::new();
        for s in spans.iter().filter(|s| s.grain == grain && s.from < s.to) {
            let sign = if s.minus { -1 } else { 1 };
            edges.push((s.from, sign));
            edges.push((s.to, -sign));
        }
        edges.sort_unstable();
        let mut net = 0;
        let mut i = 0;
        while i < edges.len() {
            let at = edges[i].0;
            while i < edges.len() && edges[i].0 == at {
                net += edges[i].1;
                i += 1;
            }
            let next = edges.get(i).map(|e| e.0);
            debug_assert!((-1..=1).contains(&net), "a bucket counted {net} times");
            if let (Some(next), 1 | -1) = (next, net) {
                let span = Span { grain, from: at, to: next, minus: net < 0 };
                match out.last_mut() {
                    Some(last) if last.grain == grain && last.minus == span.minus && last.to == span.from => {
                        last.to = span.to
                    }
                    _ => out.push(span),
                }
            }
        }
    }
    out
}

/// `spans` with every week of a week span whose week rows are not complete
/// (`incomplete`, by Monday) read from its day rows instead, with the same
/// sign; normalized.
pub fn weeks_from_complete_rows(spans: Vec<Span>, incomplete: &std::collections::HashSet<i64>, day: u32) -> Vec<Span> {
    let week = i64::from(BREAKDOWN_WEEK);
    let mut out = Vec::new();
    for s in spans {
        if s.grain != BREAKDOWN_WEEK {
            out.push(s);
            continue;
        }
        for start in (s.from..s.to).step_by(week as usize) {
            let grain = if incomplete.contains(&start) { day } else { BREAKDOWN_WEEK };
            out.push(Span { grain, from: start, to: start + week, minus: s.minus });
        }
    }
    normalize(out)
}

/// The weeks the week spans of `spans` cover, `[first Monday, last Monday + 1 week)`.
pub fn week_range(spans: &[Span]) -> Option<(i64, i64)> {
    let weeks = spans.iter().filter(|s| s.grain == BREAKDOWN_WEEK);
    Some((weeks.clone().map(|s| s.from).min()?, weeks.map(|s| s.to).max()?))
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashSet};

    use proptest::prelude::*;

    use super::*;

    const H: i64 = 3_600;
    const DAY: i64 = 86_400;
    const WEEK: i64 = 604_800;
    const CAMPAIGN: [u32; 3] = [604_800, 86_400, 3_600];
    const LINK: [u32; 2] = [86_400, 3_600];
    /// 2026-11-30, a Monday.
    const MONDAY: i64 = 1_795_996_800;

    /// How many times the spans count each hour: the net sign of every span
    /// holding it.
    fn hours_counted(spans: &[Span]) -> BTreeMap<i64, i64> {
        let mut counted = BTreeMap::new();
        for s in spans {
            for hour in (s.from..s.to).step_by(H as usize) {
                *counted.entry(hour).or_insert(0) += if s.minus { -1 } else { 1 };
            }
        }
        counted.retain(|_, n| *n != 0);
        counted
    }

    /// Each span is whole buckets of its grain, and no two of one grain overlap.
    fn well_formed(spans: &[Span]) -> Result<(), TestCaseError> {
        for (i, s) in spans.iter().enumerate() {
            prop_assert!(s.from < s.to, "empty span {s:?}");
            prop_assert_eq!(bucket_floor(s.from, s.grain), s.from, "{:?} starts off its grain", s);
            prop_assert_eq!(bucket_floor(s.to, s.grain), s.to, "{:?} ends off its grain", s);
            for t in &spans[i + 1..] {
                prop_assert!(s.grain != t.grain || s.to <= t.from || t.to <= s.from, "{s:?} overlaps {t:?}");
            }
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn spans_count_each_hour_of_the_range_once_and_no_other(
            from_hours in 0i64..24 * 70,
            len_hours in 1i64..24 * 40,
            now_hours in -24i64 * 10..24 * 80,
            weeks in any::<bool>(),
        ) {
            let origin = MONDAY - 35 * DAY;
            let (from, to, now) = (origin + from_hours * H, origin + (from_hours + len_hours) * H, origin + now_hours * H);
            let grains: &[u32] = if weeks { &CAMPAIGN } else { &LINK };
            let spans = tile(from, to, grains, now);
            well_formed(&spans)?;
            prop_assert!(spans.iter().all(|s| s.from >= from), "a span before `from` (retention may hold part of it): {:?}", spans);
            let expected: BTreeMap<i64, i64> = (from..to).step_by(H as usize).map(|h| (h, 1)).collect();
            prop_assert_eq!(hours_counted(&spans), expected, "{:?}", spans);
            prop_assert!(spans.iter().all(|s| weeks || s.grain != BREAKDOWN_WEEK));
        }

        #[test]
        fn incomplete_weeks_read_as_days_keep_the_count(
            from_hours in 0i64..24 * 70,
            len_hours in 1i64..24 * 40,
            now_hours in -24i64 * 10..24 * 80,
            incomplete in proptest::collection::hash_set(0i64..12, 0..6),
        ) {
            let origin = MONDAY - 35 * DAY;
            let (from, to, now) = (origin + from_hours * H, origin + (from_hours + len_hours) * H, origin + now_hours * H);
            let spans = tile(from, to, &CAMPAIGN, now);
            let incomplete: HashSet<i64> = incomplete.into_iter().map(|w| origin + w * WEEK).collect();
            let rewritten = weeks_from_complete_rows(spans.clone(), &incomplete, DAY as u32);
            well_formed(&rewritten)?;
            prop_assert_eq!(hours_counted(&rewritten), hours_counted(&spans));
            prop_assert!(rewritten.iter().all(|s| s.grain != BREAKDOWN_WEEK || !incomplete.contains(&s.from)));
        }
    }

    #[test]
    fn a_ragged_end_reads_the_coarser_bucket_less_what_is_still_to_come() {
        // Thirty days to 07:00 on Saturday 2026-12-05, asked at 06:20.
        let to = MONDAY + 5 * DAY + 7 * H;
        let (from, now) = (to - 30 * DAY, to - 40 * 60);
        assert_eq!(
            tile(from, to, &CAMPAIGN, now),
            vec![
                Span::plus(604_800, MONDAY - 3 * WEEK, MONDAY + WEEK),
                Span::plus(86_400, from + 17 * H, MONDAY - 3 * WEEK),
                Span::minus(86_400, MONDAY + 6 * DAY, MONDAY + WEEK),
                Span::plus(3_600, from, from + 17 * H),
                Span::minus(3_600, to, MONDAY + 6 * DAY),
            ],
            "this week less its days and hours to come; the first day's seventeen hours from `from`, never less"
        );
        // Asked a week later, the rest of that week has begun: read directly.
        let spans = tile(from, to, &CAMPAIGN, now + WEEK);
        assert!(spans.iter().all(|s| s.grain != 604_800 || s.to <= MONDAY), "{spans:?}");
    }

    #[test]
    fn whole_buckets_need_no_subtraction() {
        let spans = tile(MONDAY - 3 * DAY, MONDAY + 21 * DAY, &CAMPAIGN, MONDAY + 30 * DAY);
        assert_eq!(
            spans,
            vec![Span::plus(604_800, MONDAY, MONDAY + 3 * WEEK), Span::plus(86_400, MONDAY - 3 * DAY, MONDAY)]
        );
        assert_eq!(
            tile(MONDAY + DAY, MONDAY + 8 * DAY, &LINK, MONDAY + 30 * DAY),
            vec![Span::plus(86_400, MONDAY + DAY, MONDAY + 8 * DAY)]
        );
    }

    #[test]
    fn weeks_without_complete_week_rows_are_read_from_the_days() {
        let spans = vec![Span::plus(604_800, MONDAY, MONDAY + 4 * WEEK), Span::plus(86_400, MONDAY - DAY, MONDAY)];
        let incomplete: HashSet<i64> = [MONDAY + WEEK, MONDAY + 2 * WEEK].into();
        assert_eq!(
            weeks_from_complete_rows(spans.clone(), &incomplete, DAY as u32),
            vec![
                Span::plus(604_800, MONDAY, MONDAY + WEEK),
                Span::plus(604_800, MONDAY + 3 * WEEK, MONDAY + 4 * WEEK),
                Span::plus(86_400, MONDAY - DAY, MONDAY),
                Span::plus(86_400, MONDAY + WEEK, MONDAY + 3 * WEEK),
            ],
            "the two incomplete weeks as one day span, joined to none"
        );
        assert_eq!(
            weeks_from_complete_rows(spans.clone(), &Default::default(), DAY as u32),
            spans,
            "all complete: unchanged"
        );
        // A subtracted week, incomplete, is subtracted as days.
        let spans = vec![Span::plus(86_400, MONDAY, MONDAY + 9 * DAY), Span::minus(604_800, MONDAY, MONDAY + WEEK)];
        assert_eq!(
            weeks_from_complete_rows(spans, &[MONDAY].into(), DAY as u32),
            vec![Span::plus(86_400, MONDAY + WEEK, MONDAY + 9 * DAY)],
            "days added and subtracted drop out"
        );
    }
}
