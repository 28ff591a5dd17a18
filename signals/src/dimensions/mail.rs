//! The mail client an open or a click came from, from the hand-kept list in
//! `data/mail-clients.txt` (which names its sources).
//!
//! An open is the pixel's fetch, so its user agent is the mail client's (or its
//! image proxy's). A click is the recipient's browser, whose user agent says
//! nothing about mail, but webmail leaves its host in the Referer.

use std::fmt;

use crate::data;
use crate::SignalsError;

/// The mail clients the breakdowns name. `as_str` gives the stored value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum MailClient {
    Gmail = 0,
    Outlook = 1,
    Yahoo = 2,
    AppleMail = 3,
    Other = 4,
}

impl MailClient {
    pub const ALL: [MailClient; 5] =
        [MailClient::Gmail, MailClient::Outlook, MailClient::Yahoo, MailClient::AppleMail, MailClient::Other];

    pub fn as_str(self) -> &'static str {
        match self {
            MailClient::Gmail => "gmail",
            MailClient::Outlook => "outlook",
            MailClient::Yahoo => "yahoo",
            MailClient::AppleMail => "apple_mail",
            MailClient::Other => "other",
        }
    }

    /// The inverse of [`as_str`](Self::as_str); `None` for anything else.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }

    pub(crate) fn from_u8(x: u8) -> Self {
        Self::ALL.get(usize::from(x)).copied().unwrap_or(MailClient::Other)
    }
}

impl fmt::Display for MailClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug)]
enum UaRule {
    Exact(String),
    /// Lowercase; matched against the lowercased user agent.
    Contains(String),
    Regex(regex::Regex),
}

/// What the list says of a pixel fetcher's user agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fetcher {
    pub client: MailClient,
    /// The mail provider's image proxy fetched the pixel, not the reader's
    /// device: its user agent says nothing of the reader's device or OS.
    pub proxy: bool,
}

/// The parsed list, built once at start.
#[derive(Debug)]
pub struct MailClients {
    /// Rules in file order, with the client and whether the fetcher is a proxy.
    user_agents: Vec<(UaRule, Fetcher)>,
    /// Lowercase hosts (or Android package names).
    hosts: Vec<(String, MailClient)>,
}

const FILE: &str = "mail-clients.txt";

impl MailClients {
    /// The vendored list.
    pub fn load() -> Result<Self, SignalsError> {
        Self::parse(data::MAIL_CLIENTS)
    }

    /// A list in the format of `data/mail-clients.txt`.
    pub fn parse(text: &str) -> Result<Self, SignalsError> {
        let bad = |line, problem: String| SignalsError::BadData { file: FILE, line, problem };
        let mut list = MailClients { user_agents: Vec::new(), hosts: Vec::new() };
        for (n, line) in data::pattern_lines(text) {
            let (kind, rest) = first_word(line);
            let (client, rest) = first_word(rest);
            let (_source, pattern) = first_word(rest);
            let pattern = pattern.trim();
            if pattern.is_empty() {
                return Err(bad(n, "expected `kind client source pattern`".into()));
            }
            let client = MailClient::parse(client).ok_or_else(|| bad(n, format!("unknown client {client:?}")))?;
            let fetcher = |proxy| Fetcher { client, proxy };
            match kind {
                "ua-exact" | "proxy-exact" => {
                    list.user_agents.push((UaRule::Exact(pattern.to_owned()), fetcher(kind == "proxy-exact")))
                }
                "ua-contains" | "proxy-contains" => list
                    .user_agents
                    .push((UaRule::Contains(pattern.to_ascii_lowercase()), fetcher(kind == "proxy-contains"))),
                "ua-regex" => {
                    let re = regex::Regex::new(pattern).map_err(|e| bad(n, e.to_string()))?;
                    list.user_agents.push((UaRule::Regex(re), fetcher(false)));
                }
                "referer-host" => list.hosts.push((pattern.to_ascii_lowercase(), client)),
                other => return Err(bad(n, format!("unknown kind {other:?}"))),
            }
        }
        Ok(list)
    }

    /// The mail client whose pixel fetch carries this user agent (`Other` when
    /// none matches).
    pub fn from_user_agent(&self, ua: &str) -> MailClient {
        self.fetcher(ua).client
    }

    /// The first rule this user agent matches, as a [`Fetcher`]; `Other`, not a
    /// proxy, when none does. Lowercases a copy: called on cache misses only.
    pub fn fetcher(&self, ua: &str) -> Fetcher {
        let ua = ua.trim();
        let lower = ua.to_ascii_lowercase();
        self.user_agents
            .iter()
            .find(|(rule, _)| match rule {
                UaRule::Exact(s) => ua == s,
                UaRule::Contains(s) => lower.contains(s.as_str()),
                UaRule::Regex(re) => re.is_match(ua),
            })
            .map_or(Fetcher { client: MailClient::Other, proxy: false }, |&(_, fetcher)| fetcher)
    }

    /// The webmail a Referer's host (lowercased, `www.` kept) belongs to: the
    /// listed host itself or any subdomain of it.
    pub fn from_referer_host(&self, host: &str) -> MailClient {
        self.hosts
            .iter()
            .find(|(h, _)| host.strip_suffix(h.as_str()).is_some_and(|head| head.is_empty() || head.ends_with('.')))
            .map_or(MailClient::Other, |&(_, client)| client)
    }
}

/// The first whitespace-separated word of `s`, and the rest after the spaces that follow it.
fn first_word(s: &str) -> (&str, &str) {
    let s = s.trim_start();
    s.split_once(char::is_whitespace).map_or((s, ""), |(word, rest)| (word, rest.trim_start()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list() -> MailClients {
        MailClients::load().unwrap()
    }

    #[test]
    fn names_round_trip_and_are_the_stored_values() {
        let names: Vec<_> = MailClient::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(names, ["gmail", "outlook", "yahoo", "apple_mail", "other"]);
        for c in MailClient::ALL {
            assert_eq!(MailClient::parse(c.as_str()), Some(c));
            assert_eq!(MailClient::from_u8(c as u8), c);
            assert_eq!(c.to_string(), c.as_str());
        }
        assert_eq!(MailClient::parse("Gmail"), None, "exact names only");
        assert_eq!(MailClient::from_u8(200), MailClient::Other);
    }

    #[test]
    fn pixel_fetchers_name_their_mail_client() {
        let l = list();
        for (ua, client) in [
            ("Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)", MailClient::Gmail),
            ("YahooMailProxy; https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html", MailClient::Yahoo),
            // Outlook for Windows (Microsoft 365 build) and the Word-engine one.
            ("Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.17928; Pro)", MailClient::Outlook),
            ("Mozilla/4.0 (compatible; MSIE 7.0; Windows NT 10.0; WOW64; Trident/7.0; .NET4.0C; .NET4.0E; Microsoft Outlook 16.0.5461; ms-office; MSOffice 16)", MailClient::Outlook),
            ("Outlook-iOS/723.4027091.prod.iphone (4.2425.0)", MailClient::Outlook),
            // Apple's MPP proxy, and Apple Mail on macOS and iOS with MPP off.
            ("Mozilla/5.0", MailClient::AppleMail),
            ("  Mozilla/5.0 ", MailClient::AppleMail),
            ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko)", MailClient::AppleMail),
            ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148", MailClient::AppleMail),
            // Browsers are no mail client.
            ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15", MailClient::Other),
            ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36", MailClient::Other),
            ("Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.6778.81 Mobile Safari/537.36", MailClient::Other),
            ("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", MailClient::Other),
            ("Mozilla/5.0 (X11; Linux x86_64)", MailClient::Other),
            ("", MailClient::Other),
        ] {
            assert_eq!(l.from_user_agent(ua), client, "{ua}");
        }
    }

    #[test]
    fn image_proxies_are_told_from_mail_apps() {
        let l = list();
        for (ua, proxy) in [
            ("Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)", true),
            ("YahooMailProxy; https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html", true),
            ("Mozilla/5.0", true),
            ("Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.17928; Pro)", false),
            ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko)", false),
            ("curl/8.5.0", false),
        ] {
            assert_eq!(l.fetcher(ua).proxy, proxy, "{ua}");
        }
    }

    #[test]
    fn webmail_hosts_and_their_subdomains() {
        let l = list();
        for (host, client) in [
            ("mail.google.com", MailClient::Gmail),
            ("outlook.live.com", MailClient::Outlook),
            ("outlook.office.com", MailClient::Outlook),
            ("outlook.office365.com", MailClient::Outlook),
            ("outlook.cloud.microsoft", MailClient::Outlook),
            ("mail.yahoo.com", MailClient::Yahoo),
            ("mg.mail.yahoo.com", MailClient::Yahoo),
            ("com.google.android.gm", MailClient::Gmail),
            ("google.com", MailClient::Other),
            ("evilmail.google.com", MailClient::Other),
            ("mail.google.com.evil.example", MailClient::Other),
            ("news.ycombinator.com", MailClient::Other),
            ("", MailClient::Other),
        ] {
            assert_eq!(l.from_referer_host(host), client, "{host}");
        }
    }

    #[test]
    fn a_bad_line_is_refused_with_its_number() {
        for text in [
            "ua-contains gmail [x]\n",
            "ua-contains hotmail [x] Hotmail\n",
            "ua-glob gmail [x] *Gmail*\n",
            "# ok\nua-regex gmail [x] (unclosed\n",
        ] {
            match MailClients::parse(text) {
                Err(SignalsError::BadData { line, .. }) => assert_eq!(line, text.lines().count(), "{text:?}"),
                other => panic!("{text:?}: {other:?}"),
            }
        }
        let l = MailClients::parse("ua-contains   yahoo    [y]   Two  Words  \n").unwrap();
        assert_eq!(l.from_user_agent("x two  words y"), MailClient::Yahoo, "the pattern keeps its inner spaces");
    }
}
