//! The user-agent class: browser, bot, link-preview fetcher, HTTP client, absent.
//!
//! Bots are recognised with isbot's maintained pattern list (`data/isbot-patterns.txt`);
//! the edge splits out two small named lists that isbot lumps in with bots
//! (`data/preview-fetchers.txt`, `data/http-clients.txt`), checked first.
//! Matching a few hundred patterns costs microseconds, but user agents repeat
//! massively (a blast's clicks come from a few thousand distinct strings), so
//! the class is cached per user agent in a bounded cache ([`ClassCache`]).

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};

use http::HeaderMap;
use ricochet_schemas::UaClass;

use crate::data::{self, NeedleList};
use crate::SignalsError;

/// Distinct user agents remembered (rounded up to a power of two; 8 bytes each).
pub const DEFAULT_CACHE_ENTRIES: u64 = 20_000;

/// Longer user agents are classified on their first this-many bytes (the edge
/// keeps no more in events either), so a hostile header costs bounded work.
const MAX_UA_BYTES: usize = 512;

pub struct UserAgents {
    previews: NeedleList,
    http_clients: NeedleList,
    /// Scanners that name themselves, which isbot misses.
    scanner_agents: NeedleList,
    /// The isbot patterns `regex` can run, as one alternation. Bytes, not `str`:
    /// with Unicode off, `[^ ]` may match any byte, which only a bytes regex allows.
    bots: regex::bytes::Regex,
    /// The few with look-around, which only a backtracking engine runs.
    bots_fancy: Vec<fancy_regex::Regex>,
    /// Those few with their look-arounds removed, as one alternation: a
    /// necessary condition (dropping a look-around only widens a pattern), so
    /// a user agent it does not match skips the backtracking engine, which is
    /// what made a never-seen user agent cost ~0.5 ms.
    bots_fancy_prefilter: regex::bytes::Regex,
    cache: ClassCache,
}

/// The class of recently seen user agents: a direct-mapped table of atomic
/// words, each the top 56 bits of the agent's hash (a seeded one, fresh per
/// process) and its class. A lookup is one hash and one load, with no lock and
/// no allocation; a miss classifies and overwrites the slot. Two agents that
/// share a slot evict each other, which costs a reclassification, never a
/// wrong class: a stale slot's tag does not match. (A general-purpose cache
/// such as moka, used before, spent more per hit on its eviction policy than
/// the rest of the signals together.)
struct ClassCache {
    slots: Box<[AtomicU64]>,
    hasher: foldhash::fast::RandomState,
}

impl ClassCache {
    fn new(entries: u64) -> Self {
        let len = entries.clamp(1, 1 << 24).next_power_of_two() as usize;
        ClassCache { slots: (0..len).map(|_| AtomicU64::new(0)).collect(), hasher: Default::default() }
    }

    /// The slot of `ua`, and the tag a hit holds there (the class byte zeroed).
    fn slot(&self, ua: &str) -> (usize, u64) {
        let hash = self.hasher.hash_one(ua);
        ((hash as usize) & (self.slots.len() - 1), hash & !0xff)
    }

    fn get(&self, ua: &str) -> Option<UaClass> {
        let (slot, tag) = self.slot(ua);
        let word = self.slots[slot].load(Ordering::Relaxed);
        if word & !0xff != tag {
            return None;
        }
        // Stored as the discriminant + 1, so that an empty slot (0) never decodes.
        match word & 0xff {
            1 => Some(UaClass::Unknown),
            2 => Some(UaClass::Browser),
            3 => Some(UaClass::Bot),
            4 => Some(UaClass::Preview),
            5 => Some(UaClass::HttpClient),
            6 => Some(UaClass::Absent),
            _ => None,
        }
    }

    fn insert(&self, ua: &str, class: UaClass) {
        let (slot, tag) = self.slot(ua);
        self.slots[slot].store(tag | (class as u64 + 1), Ordering::Relaxed);
    }
}

impl UserAgents {
    pub fn load(cache_entries: u64) -> Result<Self, SignalsError> {
        let mut plain = Vec::new();
        let mut bots_fancy = Vec::new();
        let mut widened = Vec::new();
        for (_, pattern) in data::pattern_lines(data::ISBOT_PATTERNS) {
            let pattern = &from_javascript(pattern);
            if plain_regex(pattern).is_ok() {
                plain.push(format!("(?:{pattern})"));
            } else {
                let compiled = fancy_regex::Regex::new(&format!("(?i){pattern}"))
                    .map_err(|e| SignalsError::BadPattern { pattern: pattern.to_owned(), problem: e.to_string() })?;
                bots_fancy.push(compiled);
                // A pattern whose remainder still needs backtracking gets an
                // always-true prefilter: slower, never wrong.
                let rest = without_lookaround(pattern);
                widened.push(if plain_regex(&rest).is_ok() { format!("(?:{rest})") } else { String::new() });
            }
        }
        let bots = plain_regex(&plain.join("|"))
            .map_err(|e| SignalsError::BadPattern { pattern: "(isbot list)".into(), problem: e.to_string() })?;
        let bots_fancy_prefilter = plain_regex(&widened.join("|")).map_err(|e| SignalsError::BadPattern {
            pattern: "(look-around prefilter)".into(),
            problem: e.to_string(),
        })?;
        Ok(UserAgents {
            previews: NeedleList::parse(data::PREVIEW_FETCHERS),
            http_clients: NeedleList::parse(data::HTTP_CLIENTS),
            scanner_agents: NeedleList::parse(data::SCANNER_AGENTS),
            bots,
            bots_fancy,
            bots_fancy_prefilter,
            cache: ClassCache::new(cache_entries),
        })
    }

    /// The class of the request's `User-Agent` header.
    pub fn classify_header(&self, headers: &HeaderMap) -> UaClass {
        match headers.get(http::header::USER_AGENT) {
            None => UaClass::Absent,
            // Not visible ASCII: no browser sends that.
            Some(v) => match v.to_str() {
                Ok(ua) => self.classify(ua),
                Err(_) => UaClass::Bot,
            },
        }
    }

    /// The class of one user agent, from the cache when it was seen before.
    pub fn classify(&self, ua: &str) -> UaClass {
        let ua = cut(ua.trim());
        if ua.is_empty() {
            return UaClass::Absent;
        }
        if let Some(class) = self.cache.get(ua) {
            return class;
        }
        let class = self.classify_uncached(ua);
        self.cache.insert(ua, class);
        class
    }

    /// The lists, in order: preview fetchers, HTTP clients, then named scanners and isbot. What none
    /// of them matches is a browser.
    pub fn classify_uncached(&self, ua: &str) -> UaClass {
        let ua = cut(ua.trim());
        if ua.is_empty() {
            return UaClass::Absent;
        }
        let lower = ua.to_ascii_lowercase();
        if self.previews.matches(&lower) {
            UaClass::Preview
        } else if self.http_clients.matches(&lower) {
            UaClass::HttpClient
        } else if self.scanner_agents.matches(&lower)
            || self.bots.is_match(ua.as_bytes())
            || (self.bots_fancy_prefilter.is_match(ua.as_bytes())
                && self.bots_fancy.iter().any(|r| r.is_match(ua).unwrap_or(true)))
        {
            // A pattern that gives up (backtrack limit) counts as a match: a
            // user agent built to defeat the matcher is no browser.
            UaClass::Bot
        } else {
            UaClass::Browser
        }
    }
}

/// JavaScript reads a `-` right after a class escape inside brackets (`[\w\d-.]`)
/// as a literal; Rust's regex syntax rejects it as a range. Escape those.
fn from_javascript(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len() + 4);
    let (mut in_class, mut after_class_escape) = (false, false);
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                let next = chars.next();
                out.push(c);
                out.extend(next);
                after_class_escape = in_class && matches!(next, Some('w' | 'W' | 'd' | 'D' | 's' | 'S'));
                continue;
            }
            '[' if !in_class => in_class = true,
            ']' if in_class => in_class = false,
            '-' if in_class && after_class_escape => out.push('\\'),
            _ => {}
        }
        after_class_escape = false;
        out.push(c);
    }
    out
}

/// The pattern with every look-around group (`(?=…)`, `(?!…)`, `(?<=…)`,
/// `(?<!…)`) removed. Whatever the pattern matches, this matches too.
fn without_lookaround(pattern: &str) -> String {
    let bytes = pattern.as_bytes();
    let mut out = String::with_capacity(pattern.len());
    let mut i = 0;
    let mut in_class = false;
    while i < bytes.len() {
        let rest = &pattern[i..];
        if bytes[i] == b'\\' {
            let len = rest.chars().take(2).map(char::len_utf8).sum::<usize>();
            out.push_str(&rest[..len]);
            i += len;
            continue;
        }
        if !in_class && ["(?=", "(?!", "(?<=", "(?<!"].iter().any(|open| rest.starts_with(open)) {
            i += group_len(rest);
            continue;
        }
        match bytes[i] {
            b'[' if !in_class => in_class = true,
            b']' if in_class => in_class = false,
            _ => {}
        }
        let c = rest.chars().next().expect("not at the end");
        out.push(c);
        i += c.len_utf8();
    }
    out
}

/// The length of the group `s` opens with, up to its balanced `)` (all of `s` if unbalanced).
fn group_len(s: &str) -> usize {
    let bytes = s.as_bytes();
    let (mut depth, mut i, mut in_class) = (0usize, 0usize, false);
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 1,
            b'[' if !in_class => in_class = true,
            b']' if in_class => in_class = false,
            b'(' if !in_class => depth += 1,
            b')' if !in_class => {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    s.len()
}

fn plain_regex(pattern: &str) -> Result<regex::bytes::Regex, regex::Error> {
    regex::bytes::RegexBuilder::new(pattern)
        .case_insensitive(true)
        // isbot's `\w`, `\d` and `\b` are ASCII, as in JavaScript; Unicode
        // classes would only make the automaton bigger.
        .unicode(false)
        .size_limit(64 << 20)
        .build()
}

fn cut(ua: &str) -> &str {
    if ua.len() <= MAX_UA_BYTES {
        return ua;
    }
    let mut end = MAX_UA_BYTES;
    while !ua.is_char_boundary(end) {
        end -= 1;
    }
    &ua[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::OnceLock;

    fn uas() -> &'static UserAgents {
        static U: OnceLock<UserAgents> = OnceLock::new();
        U.get_or_init(|| UserAgents::load(1000).unwrap())
    }

    fn check(class: UaClass, list: &[&str]) {
        for ua in list {
            assert_eq!(uas().classify_uncached(ua), class, "{ua}");
            assert_eq!(uas().classify(ua), class, "{ua} (cached)");
        }
    }

    #[test]
    fn browsers() {
        check(
            UaClass::Browser,
            &[
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
                "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15",
                "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
                "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
                "Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.6778.81 Mobile Safari/537.36",
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0",
                "Mozilla/5.0 (iPhone; CPU iPhone OS 17_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
            ],
        );
    }

    #[test]
    fn bots_and_scanners() {
        check(
            UaClass::Bot,
            &[
                "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
                "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
                "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/120.0.0.0 Safari/537.36",
                "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)",
                "Mozilla/5.0 (compatible; Barracuda Sentinel (EE))",
                "Mozilla/5.0 (compatible; SemrushBot/7~bl; +http://www.semrush.com/bot.html)",
                "Mozilla/5.0 (compatible; Pingdom.com_bot_version_1.4_(http://www.pingdom.com/))",
                "Scrapy/2.11.2 (+https://scrapy.org)",
                "Mozilla/5.0 (compatible; YandexBot/3.0; +http://yandex.com/bots)",
                "Mozilla/5.0 (compatible; MSIE 9.0; Windows NT 6.1; Trident/5.0; AppEngine-Google; (+http://code.google.com/appengine))",
            ],
        );
    }

    #[test]
    fn link_preview_fetchers() {
        check(
            UaClass::Preview,
            &[
                "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
                "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
                "Twitterbot/1.0",
                "WhatsApp/2.23.20.0 A",
                "TelegramBot (like TwitterBot)",
                "Mozilla/5.0 (compatible; Discordbot/2.0; +https://discordapp.com)",
                "Mozilla/5.0 (Windows NT 6.1; WOW64) SkypeUriPreview Preview/0.5",
                "LinkedInBot/1.0 (compatible; Mozilla/5.0; Apache-HttpClient +http://www.linkedin.com)",
                "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)",
            ],
        );
    }

    #[test]
    fn http_clients() {
        check(
            UaClass::HttpClient,
            &[
                "curl/8.5.0",
                "Wget/1.21.4",
                "python-requests/2.32.3",
                "Python-urllib/3.12",
                "Python/3.12 aiohttp/3.10.10",
                "Go-http-client/1.1",
                "Go-http-client/2.0",
                "okhttp/4.12.0",
                "Java/17.0.9",
                "Apache-HttpClient/4.5.14 (Java/17.0.9)",
                "node-fetch/1.0 (+https://github.com/bitinn/node-fetch)",
                "axios/1.7.7",
                "libwww-perl/6.77",
                "HTTPie/3.2.4",
                "Mozilla/5.0 (Windows NT; Windows NT 10.0; en-US) WindowsPowerShell/5.1.22621.4391",
                "PostmanRuntime/7.42.0",
            ],
        );
    }

    #[test]
    fn absent_and_empty() {
        assert_eq!(uas().classify_header(&HeaderMap::new()), UaClass::Absent);
        assert_eq!(uas().classify(""), UaClass::Absent);
        assert_eq!(uas().classify("   "), UaClass::Absent);
    }

    #[test]
    fn the_cache_answers_what_the_lists_answer() {
        let u = UserAgents::load(64).unwrap();
        let ua = "curl/8.5.0";
        assert_eq!(u.classify(ua), UaClass::HttpClient);
        assert_eq!(u.cache.get(ua), Some(UaClass::HttpClient), "the class was cached");
        assert_eq!(u.cache.get("curl/8.5.1"), None, "another agent is not a hit");
        // Far more agents than slots: every answer, first or cached, is the lists' answer.
        let agents: Vec<String> = (0..2_000)
            .map(|i| match i % 4 {
                0 => format!("Mozilla/5.0 (X11; Linux x86_64; rv:{i}.0) Gecko/20100101 Firefox/{i}.0"),
                1 => format!("curl/{i}.0"),
                2 => format!("Mozilla/5.0 (compatible; Bot{i}/1.0; +http://example.com/bot)"),
                _ => format!("facebookexternalhit/1.{i}"),
            })
            .collect();
        for _ in 0..2 {
            for a in &agents {
                assert_eq!(u.classify(a), u.classify_uncached(a), "{a}");
            }
        }
        assert_eq!(u.cache.slots.len(), 64, "bounded by construction");
    }

    #[test]
    fn every_class_survives_the_cache_word() {
        let cache = ClassCache::new(8);
        let all =
            [UaClass::Unknown, UaClass::Browser, UaClass::Bot, UaClass::Preview, UaClass::HttpClient, UaClass::Absent];
        for (i, class) in all.iter().enumerate() {
            let ua = format!("agent {i}");
            cache.insert(&ua, *class);
            assert_eq!(cache.get(&ua), Some(*class));
        }
    }

    #[test]
    fn javascript_class_hyphens_are_escaped() {
        assert_eq!(from_javascript(r"[\w\d-.]+"), r"[\w\d\-.]+");
        assert_eq!(from_javascript(r"[a-z]-\d"), r"[a-z]-\d", "ranges and hyphens outside classes stay");
        assert_eq!(from_javascript(r"\[\w-x"), r"\[\w-x", "an escaped bracket opens no class");
    }

    #[test]
    fn look_arounds_are_dropped_whole_and_the_rest_kept() {
        assert_eq!(without_lookaround("(?<!lib)http"), "http");
        assert_eq!(without_lookaround("java(?!;)"), "java");
        assert_eq!(
            without_lookaround("(?<! channel/|google/)google(?!(?:wv|app|/google| pixel))"),
            "google",
            "nested groups inside a look-around go with it"
        );
        assert_eq!(without_lookaround(r"a(?=\))b[(?!]c"), r"ab[(?!]c", "escapes and classes are not groups");
        assert_eq!(without_lookaround("(?:x)y"), "(?:x)y", "other groups stay");
    }

    #[test]
    fn the_prefilter_never_hides_a_look_around_match() {
        // Every isbot pattern with look-around, on user agents it matches and
        // ones it refuses: the answer with the prefilter equals the engine's.
        let u = uas();
        let samples = [
            "Mozilla/5.0 (compatible; newsbot/1.0)",
            "NewsSapphire/1.0",
            "Mozilla/5.0 (Linux; Android 14; Pixel 8) google pixel",
            "Mozilla/5.0 AppEngine-Google; (+http://code.google.com/appengine)",
            "cubot note 30",
            "robots checker",
            "camscanner/6.0",
            "VirusScan/2.0",
            "libhttp/1.0",
            "some http fetcher",
            "java;",
            "Java/17",
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
        ];
        for ua in samples {
            let engine = u.bots_fancy.iter().any(|r| r.is_match(ua).unwrap_or(true));
            let filtered = u.bots_fancy_prefilter.is_match(ua.as_bytes()) && engine;
            assert_eq!(filtered, engine, "{ua}");
        }
        assert!(!u.bots_fancy_prefilter.is_match(samples[12].as_bytes()), "a browser skips the engine");
        assert!(u.bots_fancy.len() >= 5, "isbot still has its look-around patterns: {}", u.bots_fancy.len());
    }

    #[test]
    fn long_user_agents_are_cut_on_a_char_boundary() {
        let ua = format!("Mozilla/5.0 {}é", "a".repeat(MAX_UA_BYTES - 13));
        assert!(cut(&ua).len() <= MAX_UA_BYTES);
        assert!(ua.starts_with(cut(&ua)));
    }
}
