//! Device class, OS family and browser family of a user agent, from uap-core's
//! `regexes.yaml` (vendored as `data/uap-regexes.json.gz`) through the
//! `ua-parser` crate, uap-core's own Rust implementation.
//!
//! Running ~1200 uap regexes costs ~9 µs a user agent, but user agents repeat
//! massively, so the answer is cached per distinct user agent, as the UA class
//! is in [`crate::user_agent`]: a table of atomic words, one hash and a load or
//! two per hit, no lock, no allocation, bounded by construction. The
//! families are strings, so each is interned once and the word holds its id.
//!
//! # Device class rules
//! uap-core names device, OS and browser families but has no form factor, so
//! the class is derived, first rule that holds:
//! 0. `other`, and OS `Other`: a mail provider's image proxy fetched the
//!    pixel (`proxy-*` lines of `data/mail-clients.txt`: Gmail's, Yahoo's,
//!    Apple's); it stands for the reader and says nothing of their device.
//! 1. `bot`: uap's device family is `Spider` (its crawler parsers set it).
//! 2. `other`: a television, streaming stick or game console
//!    (`TV_AND_CONSOLE_TOKENS`: `SMART-TV`, `CrKey`, `Xbox`, ...), whose
//!    Android, Tizen, webOS or Windows would otherwise make it a tablet, a
//!    phone or a desktop.
//! 3. `tablet`: device family `iPad`, a Kindle, or one with "Tablet" in it; or
//!    an Android browser (`Mozilla/...`) whose user agent lacks the `Mobile`
//!    token (Android tablets' browsers leave it out, phones' put it in: Google's
//!    guidance for Android UAs). Apps' own agents (`Outlook-Android/2.0`,
//!    `Dalvik/...`) never carry the token, so they fall to rule 4.
//! 4. `mobile`: device family `iPhone`, `iPod`, a generic smart or feature phone;
//!    or a mobile OS (iOS, Android, Windows Phone, BlackBerry, KaiOS, ...); or a
//!    user agent with `Mobi` in it (MDN's rule for "is this mobile").
//! 5. `desktop`: a desktop OS (Windows, Mac OS X, Linux and its distributions,
//!    Chrome OS, the BSDs, Solaris).
//! 6. `other`: the rest (HTTP libraries, bare or empty agents).
//!
//! iPadOS 13+ Safari asks for desktop pages with a Mac user agent, so it reads
//! as `desktop`: the user agent does not tell them apart.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::{fmt, str};

use super::mail::{MailClient, MailClients};
use crate::data;
use crate::SignalsError;

/// Distinct user agents remembered (rounded up to a power of two; 8 bytes each).
/// A hit costs tens of nanoseconds, a miss ~9 µs (`lookup_costs` in the tests).
pub const DEFAULT_CACHE_ENTRIES: u64 = 20_000;

/// Longer user agents are parsed on their first this-many bytes, as the UA
/// class is: a hostile header costs bounded work.
const MAX_UA_BYTES: usize = 512;

/// Distinct OS (and browser) families kept; later ones read as `Other`.
/// uap-core knows a few hundred of each; the bound only matters for families
/// built from a user agent's own text (`$1` replacements), which an attacker
/// could vary without end. 12 bits each, to fit the cache word.
const MAX_FAMILIES: usize = 1 << 12;

/// A family name is cut to this many bytes, for the same reason.
const MAX_FAMILY_BYTES: usize = 64;

/// uap-core's name for "no parser matched".
pub const OTHER_FAMILY: &str = "Other";

/// The device classes the breakdowns name. `as_str` gives the stored value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum DeviceClass {
    Desktop = 0,
    Mobile = 1,
    Tablet = 2,
    Bot = 3,
    Other = 4,
}

impl DeviceClass {
    pub const ALL: [DeviceClass; 5] =
        [DeviceClass::Desktop, DeviceClass::Mobile, DeviceClass::Tablet, DeviceClass::Bot, DeviceClass::Other];

    pub fn as_str(self) -> &'static str {
        match self {
            DeviceClass::Desktop => "desktop",
            DeviceClass::Mobile => "mobile",
            DeviceClass::Tablet => "tablet",
            DeviceClass::Bot => "bot",
            DeviceClass::Other => "other",
        }
    }

    /// The inverse of [`as_str`](Self::as_str); `None` for anything else.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }

    fn from_u8(x: u8) -> Self {
        Self::ALL.get(usize::from(x)).copied().unwrap_or(DeviceClass::Other)
    }
}

impl fmt::Display for DeviceClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a user agent says, as the breakdowns need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentDimensions {
    pub device: DeviceClass,
    /// uap-core's OS family (`Windows`, `Mac OS X`, `iOS`, `Android`, ...; `Other`).
    pub os: Arc<str>,
    /// uap-core's browser family (`Chrome`, `Mobile Safari`, `Chrome Mobile`, ...; `Other`).
    pub browser: Arc<str>,
    /// The mail client, if this user agent fetched an open's pixel.
    pub open_mail_client: MailClient,
    /// The user agent is a mail provider's image proxy (Gmail's, Yahoo's,
    /// Apple's Mail Privacy Protection): it fetched the pixel, not the
    /// reader's device (`signals/data/mail-clients.txt`, `proxy-*` lines).
    pub open_proxy: bool,
}

/// The uap-core extractor, the mail-client list and the cache; built once at
/// start (compiling the regexes takes ~150 ms).
pub struct Agents {
    extractor: ua_parser::Extractor<'static>,
    mail: MailClients,
    os: Families,
    browsers: Families,
    cache: AgentCache,
}

impl Agents {
    /// The vendored regexes and mail-client list, with a cache of `cache_entries`.
    pub fn load(cache_entries: u64) -> Result<Self, SignalsError> {
        let mut json = Vec::new();
        flate2::read::GzDecoder::new(data::UAP_REGEXES_JSON_GZ)
            .read_to_end(&mut json)
            .map_err(|source| SignalsError::Io { file: "uap-regexes.json.gz", source })?;
        let bad = |problem: String| SignalsError::BadUapRegexes { problem };
        // Deserialized into owned strings (ua-parser's `Cow`s do not borrow from
        // serde_json), so the extractor is `'static` and the JSON can go.
        let regexes: ua_parser::Regexes<'static> = serde_json::from_slice(&json).map_err(|e| bad(e.to_string()))?;
        let extractor = ua_parser::Extractor::try_from(regexes).map_err(|e| bad(e.to_string()))?;
        Ok(Agents {
            extractor,
            mail: MailClients::load()?,
            os: Families::new(),
            browsers: Families::new(),
            cache: AgentCache::new(cache_entries),
        })
    }

    /// The mail-client list, for referers.
    pub fn mail_clients(&self) -> &MailClients {
        &self.mail
    }

    /// The dimensions of one user agent, from the cache when it was seen before.
    pub fn dimensions(&self, ua: &str) -> AgentDimensions {
        let ua = cut(ua.trim(), MAX_UA_BYTES);
        let packed = match self.cache.get(ua) {
            Some(p) => p,
            None => {
                let p = self.parse(ua);
                self.cache.insert(ua, p);
                p
            }
        };
        AgentDimensions {
            device: packed.device,
            os: self.os.name(packed.os),
            browser: self.browsers.name(packed.browser),
            open_mail_client: packed.mail,
            open_proxy: packed.proxy,
        }
    }

    /// The dimensions of a request with no user agent: all unknown, with the
    /// interned `Other` names (no allocation).
    pub fn absent(&self) -> AgentDimensions {
        AgentDimensions {
            device: DeviceClass::Other,
            os: self.os.name(0),
            browser: self.browsers.name(0),
            open_mail_client: MailClient::Other,
            open_proxy: false,
        }
    }

    /// The dimensions without the cache: runs every regex.
    pub fn dimensions_uncached(&self, ua: &str) -> AgentDimensions {
        let ua = cut(ua.trim(), MAX_UA_BYTES);
        let p = self.parse(ua);
        AgentDimensions {
            device: p.device,
            os: self.os.name(p.os),
            browser: self.browsers.name(p.browser),
            open_mail_client: p.mail,
            open_proxy: p.proxy,
        }
    }

    fn parse(&self, ua: &str) -> Packed {
        let browser = self.extractor.ua.extract(ua).map(|v| v.family);
        let os = self.extractor.os.extract(ua).map(|v| v.os);
        let device = self.extractor.dev.extract(ua).map(|v| v.device);
        let (browser, os, device) = (
            browser.as_deref().unwrap_or(OTHER_FAMILY),
            os.as_deref().unwrap_or(OTHER_FAMILY),
            device.as_deref().unwrap_or(OTHER_FAMILY),
        );
        let fetcher = self.mail.fetcher(ua);
        // Outlook for Mac ("Microsoft Office/16.0 (Macintosh; ...; Microsoft
        // Outlook 16.89)") escapes uap-core's Outlook parsers, which name the
        // Windows builds `Outlook`: the same app, the same family.
        let browser = if browser == OTHER_FAMILY && fetcher.client == MailClient::Outlook && !fetcher.proxy {
            "Outlook"
        } else {
            browser
        };
        // A mail provider's image proxy is nobody's device (rule 0 below).
        let (device, os) =
            if fetcher.proxy { (DeviceClass::Other, OTHER_FAMILY) } else { (device_class(ua, device, os), os) };
        Packed {
            device,
            mail: fetcher.client,
            proxy: fetcher.proxy,
            os: self.os.id(os),
            browser: self.browsers.id(browser),
        }
    }
}

const MOBILE_OSES: &[&str] = &[
    "iOS",
    "Android",
    "Windows Phone",
    "Windows Mobile",
    "BlackBerry OS",
    "BlackBerry Tablet OS",
    "KaiOS",
    "Firefox OS",
    "Symbian OS",
    "Symbian^3",
    "Tizen",
    "HarmonyOS",
    "Sailfish",
    "webOS",
];

const DESKTOP_OSES: &[&str] = &[
    "Windows",
    "Mac OS X",
    "macOS",
    "Linux",
    "Ubuntu",
    "Kubuntu",
    "Xubuntu",
    "Lubuntu",
    "Debian",
    "Fedora",
    "Red Hat",
    "CentOS",
    "SUSE",
    "openSUSE",
    "Gentoo",
    "Slackware",
    "Mandriva",
    "Linux Mint",
    "Arch Linux",
    "Chrome OS",
    "ChromeOS",
    "FreeBSD",
    "OpenBSD",
    "NetBSD",
    "Solaris",
];

/// What only the agents of televisions, streaming sticks and game consoles
/// carry: Samsung's and LG's TVs, HbbTV sets, Android and Google TV,
/// Chromecast (`CrKey`), Sony's BRAVIA, Apple TV, Roku, Amazon's Fire TV
/// (model codes `AFT…`), PlayStation, Xbox and Nintendo consoles.
const TV_AND_CONSOLE_TOKENS: &[&str] = &[
    "SMART-TV",
    "SmartTV",
    "Smart TV",
    "HbbTV",
    "GoogleTV",
    "Google TV",
    "AndroidTV",
    "Android TV",
    "AppleTV",
    "Apple TV",
    "CrKey",
    "BRAVIA",
    "Web0S",
    "webOS.TV",
    "NetCast",
    "Roku",
    "; AFT",
    "PlayStation",
    "Xbox",
    "Nintendo",
];

/// The rules in the module documentation, on uap's device and OS families.
pub fn device_class(ua: &str, device: &str, os: &str) -> DeviceClass {
    if device == "Spider" {
        return DeviceClass::Bot;
    }
    if TV_AND_CONSOLE_TOKENS.iter().any(|token| ua.contains(token)) {
        return DeviceClass::Other;
    }
    let android = os == "Android";
    if device == "iPad"
        || device.starts_with("Kindle")
        || device.contains("Tablet")
        || (android && ua.starts_with("Mozilla/") && !ua.contains("Mobile"))
    {
        return DeviceClass::Tablet;
    }
    if matches!(device, "iPhone" | "iPod" | "Generic Smartphone" | "Generic Feature Phone")
        || MOBILE_OSES.contains(&os)
        || ua.contains("Mobi")
    {
        return DeviceClass::Mobile;
    }
    // uap-core 0.18 says `Windows`; older releases said `Windows 10`, `Windows 7`, ...
    let windows_desktop = os.starts_with("Windows ") && !os.contains("Phone") && !os.contains("Mobile");
    if DESKTOP_OSES.contains(&os) || windows_desktop {
        return DeviceClass::Desktop;
    }
    DeviceClass::Other
}

/// One parse, as the cache word holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Packed {
    device: DeviceClass,
    mail: MailClient,
    proxy: bool,
    os: u16,
    browser: u16,
}

/// Interned family names: a name's id is its index, stable for the process.
/// Reading a name is lock-free (`OnceLock`); adding one, on a cache miss, locks.
struct Families {
    names: Box<[OnceLock<Arc<str>>]>,
    ids: Mutex<HashMap<Arc<str>, u16>>,
}

impl Families {
    fn new() -> Self {
        let families =
            Families { names: (0..MAX_FAMILIES).map(|_| OnceLock::new()).collect(), ids: Mutex::new(HashMap::new()) };
        // Id 0 is `Other`: what an id that cannot be read, or a full table, means.
        families.id(OTHER_FAMILY);
        families
    }

    fn id(&self, name: &str) -> u16 {
        let name = cut(name, MAX_FAMILY_BYTES);
        // A panic elsewhere cannot leave the map half-written: insert is the last step.
        let mut ids = self.ids.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(&id) = ids.get(name) {
            return id;
        }
        let id = ids.len();
        let Some(slot) = self.names.get(id) else {
            return 0;
        };
        let name: Arc<str> = name.into();
        // Set before the id can be seen anywhere: the map and the cache publish it after.
        let _ = slot.set(name.clone());
        ids.insert(name, id as u16);
        id as u16
    }

    fn name(&self, id: u16) -> Arc<str> {
        match self.names.get(usize::from(id)).and_then(OnceLock::get) {
            Some(name) => name.clone(),
            None => self.names[0].get().cloned().unwrap_or_else(|| OTHER_FAMILY.into()),
        }
    }
}

/// The parse of recently seen user agents: a table of atomic words in buckets
/// of two (one cache line holds both). A word is the top 33 bits of the
/// agent's hash (a seeded one, fresh per process) over 31 bits of answer:
/// image proxy (1), browser id (12), OS id (12), mail client (3) and device
/// class + 1 (3; so an empty slot, 0, never decodes). The bucket comes from the
/// hash's low bits, so a false hit needs two agents to agree on the bucket and
/// on 33 more bits (odds ~2^-33 per miss).
///
/// Two ways, not the UA class cache's one: a miss here costs ~9 µs, not ~1, and
/// with one way a few thousand agents in 32 k slots still collide in pairs
/// that evict each other on every use (measured: a "hit" averaged 480 ns, all
/// of it those misses). A new agent goes to the bucket's first way and the
/// agent it displaces to the second, so an agent leaves only when two newer ones
/// share its bucket. The two stores are not atomic together: a racing reader
/// may miss an agent, never get a wrong answer (every word checks its own tag).
struct AgentCache {
    slots: Box<[AtomicU64]>,
    hasher: foldhash::fast::RandomState,
}

const ANSWER_BITS: u32 = 31;
const ANSWER_MASK: u64 = (1 << ANSWER_BITS) - 1;

impl AgentCache {
    fn new(entries: u64) -> Self {
        let len = entries.clamp(2, 1 << 24).next_power_of_two() as usize;
        AgentCache { slots: (0..len).map(|_| AtomicU64::new(0)).collect(), hasher: Default::default() }
    }

    /// The index of the bucket's first way, and the tag a hit holds there.
    fn bucket(&self, ua: &str) -> (usize, u64) {
        let hash = self.hasher.hash_one(ua);
        ((hash as usize) & (self.slots.len() - 1) & !1, hash & !ANSWER_MASK)
    }

    fn get(&self, ua: &str) -> Option<Packed> {
        let (first, tag) = self.bucket(ua);
        // Acquire pairs with insert's Release: the family names an id points to
        // were interned before the word was stored, so they are visible here.
        let word = [first, first + 1]
            .into_iter()
            .map(|i| self.slots[i].load(Ordering::Acquire))
            .find(|w| w & !ANSWER_MASK == tag && w & 0b111 != 0)?;
        Some(Packed {
            device: DeviceClass::from_u8((word & 0b111) as u8 - 1),
            mail: MailClient::from_u8(((word >> 3) & 0b111) as u8),
            os: ((word >> 6) & 0xfff) as u16,
            browser: ((word >> 18) & 0xfff) as u16,
            proxy: (word >> 30) & 1 == 1,
        })
    }

    fn insert(&self, ua: &str, p: Packed) {
        let (first, tag) = self.bucket(ua);
        let word = tag
            | (u64::from(p.proxy) << 30)
            | (u64::from(p.browser & 0xfff) << 18)
            | (u64::from(p.os & 0xfff) << 6)
            | ((p.mail as u64) << 3)
            | (p.device as u64 + 1);
        let displaced = self.slots[first].swap(word, Ordering::AcqRel);
        if displaced & !ANSWER_MASK != tag {
            self.slots[first + 1].store(displaced, Ordering::Release);
        }
    }
}

fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packed(os: u16) -> Packed {
        Packed { device: DeviceClass::Tablet, mail: MailClient::AppleMail, proxy: os % 2 == 0, os, browser: 4095 - os }
    }

    #[test]
    fn a_bucket_keeps_the_two_newest_agents() {
        // Two slots: one bucket, so every agent shares it.
        let cache = AgentCache::new(2);
        cache.insert("a", packed(1));
        cache.insert("b", packed(2));
        assert_eq!((cache.get("a"), cache.get("b")), (Some(packed(1)), Some(packed(2))), "both ways hold");
        cache.insert("c", packed(3));
        assert_eq!(cache.get("a"), None, "the oldest left");
        assert_eq!((cache.get("b"), cache.get("c")), (Some(packed(2)), Some(packed(3))));
        cache.insert("c", packed(3));
        assert_eq!(cache.get("b"), Some(packed(2)), "inserting a present agent again displaces nobody");
        assert_eq!(cache.get("z"), None);
    }

    #[test]
    fn every_answer_survives_the_cache_word() {
        let cache = AgentCache::new(1 << 12);
        for (i, (device, mail)) in
            DeviceClass::ALL.into_iter().flat_map(|d| MailClient::ALL.map(move |m| (d, m))).enumerate()
        {
            let p = Packed { device, mail, proxy: i % 2 == 1, os: (i * 163 % 4096) as u16, browser: 4095 - i as u16 };
            let ua = format!("agent {i}");
            cache.insert(&ua, p);
            assert_eq!(cache.get(&ua), Some(p), "{ua}");
        }
    }

    #[test]
    fn family_ids_are_stable_and_bounded() {
        let f = Families::new();
        assert_eq!(f.id(OTHER_FAMILY), 0);
        let chrome = f.id("Chrome");
        assert_eq!((f.id("Chrome"), &*f.name(chrome)), (chrome, "Chrome"));
        for i in 0..MAX_FAMILIES + 10 {
            f.id(&format!("family {i}"));
        }
        assert_eq!(f.id("one too many"), 0, "a full table answers Other");
        assert_eq!(&*f.name(0), OTHER_FAMILY);
        assert_eq!(&*f.name(u16::MAX), OTHER_FAMILY, "an unknown id reads as Other");
        assert_eq!(&*f.name(chrome), "Chrome", "earlier names stay");
    }
}
