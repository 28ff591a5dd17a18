use super::*;
use proptest::prelude::*;
use std::sync::OnceLock;

fn dims() -> &'static Dimensioner {
    static D: OnceLock<Dimensioner> = OnceLock::new();
    D.get_or_init(|| Dimensioner::with_cache_entries(1024).unwrap())
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

const IPHONE_SAFARI: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1";
const ANDROID_CHROME: &str = "Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.6778.81 Mobile Safari/537.36";
const IPAD_SAFARI: &str = "Mozilla/5.0 (iPad; CPU OS 17_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.6 Mobile/15E148 Safari/604.1";
const ANDROID_TABLET: &str = "Mozilla/5.0 (Linux; Android 13; SM-X710) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.6778.81 Safari/537.36";
const WINDOWS_CHROME: &str =
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
const MACOS_SAFARI: &str = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15";
const LINUX_FIREFOX: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0";
const GOOGLEBOT: &str = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";
const GOOGLE_IMAGE_PROXY: &str =
    "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)";
const YAHOO_MAIL_PROXY: &str = "YahooMailProxy; https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html";
const OUTLOOK_DESKTOP: &str = "Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.17928; Pro)";
const OUTLOOK_MAC: &str = "Microsoft Office/16.0 (Macintosh; Mac OS X 10_15_7; Microsoft Outlook 16.89)";
const APPLE_MPP: &str = "Mozilla/5.0";
const APPLE_MAIL_MACOS: &str =
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko)";

#[test]
fn device_os_and_browser_of_real_user_agents() {
    use DeviceClass::*;
    for (ua, device, os, browser) in [
        (IPHONE_SAFARI, Mobile, "iOS", "Mobile Safari"),
        (ANDROID_CHROME, Mobile, "Android", "Chrome Mobile"),
        (IPAD_SAFARI, Tablet, "iOS", "Mobile Safari"),
        (ANDROID_TABLET, Tablet, "Android", "Chrome"),
        (WINDOWS_CHROME, Desktop, "Windows", "Chrome"),
        (MACOS_SAFARI, Desktop, "Mac OS X", "Safari"),
        (LINUX_FIREFOX, Desktop, "Linux", "Firefox"),
        (GOOGLEBOT, Bot, "Other", "Googlebot"),
        (OUTLOOK_DESKTOP, Desktop, "Windows", "Outlook"),
        ("Outlook-iOS/723.4027091.prod.iphone (4.2425.0)", Mobile, "iOS", "Outlook-iOS"),
        // Android apps' own agents carry no browser's `Mobile` token: most of
        // them run on phones, so they are not taken for tablets.
        ("Outlook-Android/2.0", Mobile, "Android", "Outlook"),
        ("Dalvik/2.1.0 (Linux; U; Android 14; SM-S918B Build/UP1A.231005.007)", Mobile, "Android", "Android"),
        // Outlook for Mac, which uap-core's Outlook parsers miss.
        (OUTLOOK_MAC, Desktop, "Mac OS X", "Outlook"),
        // Image proxies stand for the reader: no device, no OS (Gmail's claims
        // Windows XP, and uap-core calls Yahoo's a spider), their own browser name.
        (GOOGLE_IMAGE_PROXY, Other, "Other", "GmailImageProxy"),
        (YAHOO_MAIL_PROXY, Other, "Other", "YahooMailProxy"),
        (APPLE_MAIL_MACOS, Desktop, "Mac OS X", "Apple Mail"),
        (APPLE_MPP, Other, "Other", "Other"),
        ("curl/8.5.0", Other, "Other", "curl"),
    ] {
        for (what, got) in
            [("cached", dims().agents().dimensions(ua)), ("uncached", dims().agents().dimensions_uncached(ua))]
        {
            assert_eq!((got.device, &*got.os, &*got.browser), (device, os, browser), "{what}: {ua}");
        }
    }
}

#[test]
fn device_class_rules_on_families() {
    use device::device_class;
    assert_eq!(device_class("x", "Spider", "Android"), DeviceClass::Bot, "a crawler first");
    assert_eq!(device_class("Android 14; Mobile", "Generic Smartphone", "Android"), DeviceClass::Mobile);
    assert_eq!(
        device_class("Mozilla/5.0 (Linux; Android 14; SM-X710)", "Samsung SM-X710", "Android"),
        DeviceClass::Tablet,
        "a browser without the Mobile token"
    );
    assert_eq!(device_class("SomeApp/1.0 (Android 14)", "Other", "Android"), DeviceClass::Mobile, "an app");
    assert_eq!(device_class("x", "Kindle", "Other"), DeviceClass::Tablet);
    assert_eq!(device_class("x", "Generic Tablet", "Other"), DeviceClass::Tablet);
    assert_eq!(device_class("x", "Other", "Windows Phone"), DeviceClass::Mobile);
    assert_eq!(device_class("Opera Mobi", "Other", "Other"), DeviceClass::Mobile, "MDN's Mobi rule");
    assert_eq!(device_class("x", "Other", "Windows 7"), DeviceClass::Desktop, "older uap Windows names");
    assert_eq!(device_class("x", "Other", "Chrome OS"), DeviceClass::Desktop);
    assert_eq!(device_class("x", "Other", "Other"), DeviceClass::Other);
    assert_eq!(device_class("x", "Other", "PlayStation"), DeviceClass::Other);
}

/// Televisions, streaming sticks and consoles run Android, Tizen, webOS or
/// Windows, which alone would make them tablets, phones or desktops.
#[test]
fn televisions_and_consoles_are_other_devices() {
    for ua in [
        "Mozilla/5.0 (SMART-TV; Linux; Tizen 6.0) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/4.0 Chrome/76.0.3809.146 TV Safari/537.36",
        "Mozilla/5.0 (Web0S; Linux/SmartTV) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/87.0.4280.88 Safari/537.36 WebAppManager",
        "Mozilla/5.0 (Linux; Android 12.0; Build/STT1.211025.001.Z4) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/98.0.4758.87 Safari/537.36 CrKey/1.56.500000 DeviceType/AndroidTV",
        "Mozilla/5.0 (Linux; Android 9; AFTMM Build/PS7233) AppleWebKit/537.36 (KHTML, like Gecko) Silk/98.5.4 like Chrome/98.0.4758.136 Safari/537.36",
        "Mozilla/5.0 (Linux; Android 11; BRAVIA 4K VH2 Build/RTM2.211013.018) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/96.0.4664.104 Safari/537.36 OPR/46.0.2207.0 OMI/4.21",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64; Xbox; Xbox One) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36 Edge/44.18363.8131",
        "Mozilla/5.0 (PlayStation; PlayStation 5/2.26) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/13.0 Safari/605.1.15",
        "Roku/DVP-12.0 (12.0.0.4182-88)",
        "Mozilla/5.0 (Nintendo Switch; WifiWebAuthApplet) AppleWebKit/606.4 (KHTML, like Gecko) NF/6.0.1.15.4 NintendoBrowser/5.1.0.20393",
    ] {
        assert_eq!(dims().agents().dimensions_uncached(ua).device, DeviceClass::Other, "{ua}");
    }
    // Phones and tablets are still phones and tablets.
    assert_eq!(dims().agents().dimensions_uncached(ANDROID_CHROME).device, DeviceClass::Mobile);
    assert_eq!(dims().agents().dimensions_uncached(ANDROID_TABLET).device, DeviceClass::Tablet);
}

#[test]
fn device_names_round_trip_and_are_the_stored_values() {
    let names: Vec<_> = DeviceClass::ALL.iter().map(|d| d.as_str()).collect();
    assert_eq!(names, ["desktop", "mobile", "tablet", "bot", "other"]);
    for d in DeviceClass::ALL {
        assert_eq!(DeviceClass::parse(d.as_str()), Some(d));
        assert_eq!(d.to_string(), d.as_str());
    }
    assert_eq!(DeviceClass::parse("Mobile"), None);
}

#[test]
fn opens_take_the_mail_client_from_the_fetcher() {
    let home = ip("79.192.0.1");
    for (ua, client) in [
        (GOOGLE_IMAGE_PROXY, MailClient::Gmail),
        (YAHOO_MAIL_PROXY, MailClient::Yahoo),
        (OUTLOOK_DESKTOP, MailClient::Outlook),
        (APPLE_MPP, MailClient::AppleMail),
        (APPLE_MAIL_MACOS, MailClient::AppleMail),
        (WINDOWS_CHROME, MailClient::Other),
    ] {
        let d = dims().dimensions(home, Some(ua), None, true);
        assert_eq!(d.mail_client, client, "{ua}");
        // The same agent clicking says nothing about mail: a click's agent is a browser.
        assert_eq!(dims().dimensions(home, Some(ua), None, false).mail_client, MailClient::Other, "{ua}");
    }
}

#[test]
fn clicks_take_the_mail_client_from_the_webmail_referer() {
    let d = dims().dimensions(ip("8.8.8.8"), Some(WINDOWS_CHROME), Some("https://mail.google.com/"), false);
    assert_eq!((d.mail_client, d.referrer_domain.as_deref()), (MailClient::Gmail, Some("mail.google.com")));
    for (referer, client) in [
        ("https://outlook.live.com/mail/0/inbox", MailClient::Outlook),
        ("https://outlook.office.com/", MailClient::Outlook),
        ("https://outlook.office365.com/owa/", MailClient::Outlook),
        ("https://mail.yahoo.com/d/folders/1", MailClient::Yahoo),
        ("android-app://com.google.android.gm/", MailClient::Gmail),
        ("https://news.ycombinator.com/item?id=1", MailClient::Other),
        ("not a url", MailClient::Other),
    ] {
        let d = dims().dimensions(ip("8.8.8.8"), Some(WINDOWS_CHROME), Some(referer), false);
        assert_eq!(d.mail_client, client, "{referer}");
        // An open's referer does not decide its mail client.
        assert_eq!(
            dims().dimensions(ip("8.8.8.8"), Some(WINDOWS_CHROME), Some(referer), true).mail_client,
            MailClient::Other
        );
    }
}

#[test]
fn a_whole_request() {
    let d = dims().dimensions(ip("2003::1"), Some(IPHONE_SAFARI), Some("https://www.Example.com/a?b"), false);
    assert_eq!(
        d,
        Dimensions {
            country: CountryCode::parse("DE"),
            device: DeviceClass::Mobile,
            os: "iOS".into(),
            browser: "Mobile Safari".into(),
            mail_client: MailClient::Other,
            referrer_domain: Some("example.com".into()),
        }
    );
    let bare = dims().dimensions(ip("127.0.0.1"), None, None, true);
    assert_eq!((bare.country, bare.device, &*bare.os, &*bare.browser), (None, DeviceClass::Other, "Other", "Other"));
    assert_eq!((bare.mail_client, bare.referrer_domain.as_deref()), (MailClient::Other, None));
    assert_eq!(dims().dimensions(ip("127.0.0.1"), Some("   "), None, true), bare, "blank is absent");
}

/// Rows read from the package's own CSV (`geo-whois-asn-country-ipv4-num.csv` and
/// `-ipv6-num.csv` of 2.3.2026061719), not from memory.
#[test]
fn countries_the_data_set_states() {
    for (addr, cc) in [
        ("8.8.8.8", "US"),           // 6.0.0.0-8.10.5.255 US
        ("79.192.0.1", "DE"),        // 79.192.0.0-79.255.255.255 DE
        ("81.2.69.142", "GB"),       // 81.2.64.0-81.2.127.255 GB
        ("133.11.0.1", "JP"),        // 133.0.0.0-133.255.255.255 JP
        ("200.160.2.3", "BR"),       // 200.150.252.0-200.162.143.255 BR
        ("41.0.0.1", "ZA"),          // 41.0.0.0-41.31.255.255 ZA
        ("79.255.255.255", "DE"),    // the last address of a range
        ("2003::1", "DE"),           // 2003::-2003:1fff:... DE
        ("2a00:1450:4001::1", "IE"), // 2a00:1450::-2a00:1457:... IE
        ("::ffff:79.192.0.1", "DE"), // IPv4-mapped reads as IPv4
    ] {
        assert_eq!(dims().countries().country(ip(addr)).map(|c| c.to_string()), Some(cc.to_owned()), "{addr}");
    }
    // Special-purpose blocks, though the data set gives 172.16/12, 192.168/16,
    // 198.51.100/24 and 203.0.113/24 to AU and 2001:db8::/32 to JP; and an
    // address no row holds (2c0f:fb50::1).
    for none in [
        "10.0.0.1",
        "127.0.0.1",
        "172.16.5.5",
        "192.168.1.1",
        "198.51.100.7",
        "203.0.113.1",
        "100.64.0.1",
        "224.0.0.1",
        "255.255.255.255",
        "::ffff:192.168.1.1",
        "::",
        "::1",
        "fd00::1",
        "fe80::1",
        "2001:db8::1",
        "ff02::1",
        "2c0f:fb50::1",
    ] {
        assert_eq!(dims().countries().country(ip(none)), None, "{none}");
    }
    let t = dims().countries().table();
    assert!(t.v4().len() > 300_000 && t.v6().len() > 150_000, "the whole table loaded");
}

#[test]
fn country_codes_parse_two_letters_only() {
    assert_eq!(CountryCode::parse("de").map(|c| c.to_string()), Some("DE".into()));
    assert_eq!(CountryCode::parse("DE").unwrap().as_bytes(), *b"DE");
    for bad in ["", "D", "DEU", "D1", "Dé", "  "] {
        assert_eq!(CountryCode::parse(bad), None, "{bad:?}");
    }
    assert_eq!(format!("{:?}", CountryCode::parse("fr").unwrap()), "CountryCode(FR)");
}

#[test]
fn referrer_domains() {
    for (referer, domain) in [
        ("https://www.google.com/", Some("google.com")),
        ("https://WWW.Example.COM:8443/path?q=1#x", Some("example.com")),
        ("http://news.ycombinator.com/item?id=1", Some("news.ycombinator.com")),
        ("https://example.com./", Some("example.com")),
        ("https://www./", Some("www")),
        ("https://bücher.example/", Some("xn--bcher-kva.example")),
        ("http://192.0.2.1/x", Some("192.0.2.1")),
        ("http://[2001:db8::1]/", Some("[2001:db8::1]")),
        ("android-app://com.google.android.gm/", Some("com.google.android.gm")),
        ("  https://t.co/abc  ", Some("t.co")),
        ("", None),
        ("not a url", None),
        ("/relative/path", None),
        ("ftp://files.example.com/", None),
        ("mailto:someone@example.com", None),
        ("file:///etc/passwd", None),
    ] {
        assert_eq!(referrer_domain(referer).as_deref(), domain, "{referer:?}");
    }
}

#[test]
fn utm_tags() {
    let t =
        utm("https://shop.example/sale?utm_source=newsletter&utm_medium=email&utm_campaign=black%20friday+2026#top");
    assert_eq!(
        t,
        Utm {
            source: Some("newsletter".into()),
            medium: Some("email".into()),
            campaign: Some("black friday 2026".into())
        }
    );
    // Repeated: the first non-empty value. Empty and blank: absent.
    let t = utm("https://x.example/?utm_source=&utm_source=a&utm_source=b&utm_medium=%20%20&utm_campaign");
    assert_eq!(t, Utm { source: Some("a".into()), medium: None, campaign: None });
    // Percent-encoded UTF-8 and control characters; names are exact.
    let t = utm("https://x.example/?utm_source=caf%C3%A9%0A&UTM_MEDIUM=email&utm_campaign=%E2%9C%93");
    assert_eq!(t, Utm { source: Some("café".into()), medium: None, campaign: Some("✓".into()) });
    // Bounded, on characters, not bytes.
    let long = "é".repeat(300);
    let t = utm(&format!("https://x.example/?utm_campaign={long}"));
    assert_eq!(t.campaign.as_deref().map(|c| c.chars().count()), Some(MAX_UTM_CHARS));
    // No query, a fragment only, a relative destination.
    assert_eq!(utm("https://x.example/"), Utm::default());
    assert_eq!(utm("https://x.example/#?utm_source=a"), Utm::default());
    assert_eq!(utm("/landing?utm_medium=social").medium.as_deref(), Some("social"));
    // Invalid percent escapes are kept literally, not dropped.
    assert_eq!(utm("https://x.example/?utm_source=100%").source.as_deref(), Some("100%"));
}

#[test]
fn the_cache_answers_what_the_parser_answers() {
    let agents = Agents::load(64).unwrap();
    let uas: Vec<String> = (0..600)
        .map(|i| match i % 4 {
            0 => format!("Mozilla/5.0 (X11; Linux x86_64; rv:{i}.0) Gecko/20100101 Firefox/{i}.0"),
            1 => format!("Mozilla/5.0 (iPhone; CPU iPhone OS 17_{i} like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.{i} Mobile/15E148 Safari/604.1"),
            2 => format!("Mozilla/5.0 (compatible; Bot{i}/1.0; +http://example.com/bot)"),
            _ => format!("Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.{i}; Pro)"),
        })
        .collect();
    // Far more agents than slots, twice: every answer, first or cached, is the parser's.
    for _ in 0..2 {
        for ua in &uas {
            assert_eq!(agents.dimensions(ua), agents.dimensions_uncached(ua), "{ua}");
        }
    }
}

#[test]
fn hostile_user_agents_stay_bounded() {
    // A family taken from the agent's own text is cut, and the table of families is bounded.
    let ua = format!("Mozilla/5.0 (compatible; {}bot/1.0)", "A".repeat(5000));
    let d = dims().agents().dimensions(&ua);
    assert!(d.browser.len() <= 64 && d.os.len() <= 64, "{d:?}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// The prefix-indexed lookup agrees with a linear scan of the whole table,
    /// anywhere and at the edges of real ranges (where an off-by-one would show).
    #[test]
    fn country_lookup_agrees_with_a_linear_scan(x in any::<u32>(), y in any::<u128>(), near in any::<usize>()) {
        let t = dims().countries().table();
        let special = |ip: IpAddr| country::is_special_purpose(ip);
        let scan4 = |x: u32| t.v4().iter().find(|r| r.0 <= x && x <= r.1).map(|r| r.2).filter(|_| !special(IpAddr::from(x.to_be_bytes())));
        let scan6 = |x: u128| t.v6().iter().find(|r| r.0 <= x && x <= r.1).map(|r| r.2).filter(|_| !special(IpAddr::from(x.to_be_bytes())));
        let (s, e, _) = t.v4()[near % t.v4().len()];
        for x in [x, s, e, s.wrapping_sub(1), e.wrapping_add(1)] {
            prop_assert_eq!(dims().countries().country(IpAddr::from(x.to_be_bytes())), scan4(x), "{}", std::net::Ipv4Addr::from(x));
        }
        let (s, e, _) = t.v6()[near % t.v6().len()];
        for y in [y, s, e, s.wrapping_sub(1), e.wrapping_add(1)] {
            prop_assert_eq!(dims().countries().country(IpAddr::from(y.to_be_bytes())), scan6(y), "{}", std::net::Ipv6Addr::from(y));
        }
    }

    #[test]
    fn arbitrary_requests_never_panic(
        ua in proptest::option::of(".{0,700}"),
        referer in proptest::option::of(".{0,300}"),
        v6 in any::<u128>(),
        is_open in any::<bool>(),
        dest in ".{0,300}",
    ) {
        let d = dims().dimensions(IpAddr::from(v6.to_be_bytes()), ua.as_deref(), referer.as_deref(), is_open);
        prop_assert!(!d.os.is_empty() && !d.browser.is_empty());
        let t = utm(&dest);
        for v in [t.source, t.medium, t.campaign].into_iter().flatten() {
            prop_assert!(!v.is_empty() && v.chars().count() <= MAX_UTM_CHARS && v.trim() == v);
        }
    }
}

/// `cargo test -p ricochet-signals --release -- --ignored --nocapture lookup_costs`
#[test]
#[ignore]
fn lookup_costs() {
    use std::hint::black_box;
    use std::time::Instant;
    let t = Instant::now();
    let countries = Countries::load().unwrap();
    println!("load: country table {:.0} ms", t.elapsed().as_secs_f64() * 1e3);
    drop(countries);
    let t = Instant::now();
    let agents = Agents::load(device::DEFAULT_CACHE_ENTRIES).unwrap();
    println!("load: uap regexes and mail clients {:.0} ms", t.elapsed().as_secs_f64() * 1e3);
    drop(agents);
    let d = Dimensioner::load().unwrap();
    // Country, cold: random addresses over the whole space (most miss the caches).
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let v4: Vec<IpAddr> = (0..1_000_000).map(|_| IpAddr::from((next() as u32).to_be_bytes())).collect();
    let v6: Vec<IpAddr> = (0..1_000_000)
        .map(|_| {
            // Inside 2000::/3, where the ranges are.
            let hi = (next() & 0x1fff_ffff_ffff_ffff) | 0x2000_0000_0000_0000;
            IpAddr::from(((u128::from(hi) << 64) | u128::from(next())).to_be_bytes())
        })
        .collect();
    // And inside listed IPv6 ranges, where the search goes deepest and finds a country.
    let t6 = d.countries().table().v6();
    let v6_listed: Vec<IpAddr> = (0..1_000_000)
        .map(|_| {
            let (s, e, _) = t6[next() as usize % t6.len()];
            let x = s + (((u128::from(next()) << 64) | u128::from(next())) % (e - s).saturating_add(1).max(1));
            IpAddr::from(x.to_be_bytes())
        })
        .collect();
    // Warm: 5 k distinct addresses, as a blast's recipients repeat, over and over.
    let warm = |ips: &[IpAddr]| -> Vec<IpAddr> { ips[..5_000].iter().cycle().take(1_000_000).copied().collect() };
    let (warm4, warm6) = (warm(&v4), warm(&v6_listed));
    for (name, ips) in [
        ("v4, cold", &v4),
        ("v6 in 2000::/3, cold", &v6),
        ("v6 in listed ranges, cold", &v6_listed),
        ("v4 (5 k distinct), warm", &warm4),
        ("v6 in listed ranges (5 k distinct), warm", &warm6),
    ] {
        let t = Instant::now();
        let mut hits = 0usize;
        for ip in ips {
            hits += usize::from(black_box(d.countries().country(*ip)).is_some());
        }
        let ns = t.elapsed().as_nanos() as f64 / ips.len() as f64;
        println!("country {name}: {ns:.1} ns/lookup ({hits} of {} found)", ips.len());
    }
    // User agents: misses (each distinct, never seen) and hits (a few thousand, repeated).
    let uas: Vec<String> = (0..2_000)
        .map(|i| match i % 4 {
            0 => format!("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.{i}.0 Safari/537.36"),
            1 => format!("Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E{i} Safari/604.1"),
            2 => format!("Mozilla/5.0 (Linux; Android 14; SM-S9{i}B) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.6778.81 Mobile Safari/537.36"),
            _ => format!("Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.{i}; Pro)"),
        })
        .collect();
    let t = Instant::now();
    for ua in &uas {
        black_box(d.agents().dimensions(ua));
    }
    println!("user agent, cache miss: {:.0} ns/lookup", t.elapsed().as_nanos() as f64 / uas.len() as f64);
    let rounds = 500;
    let t = Instant::now();
    for _ in 0..rounds {
        for ua in &uas {
            black_box(d.agents().dimensions(ua));
        }
    }
    println!("user agent, cache hit: {:.1} ns/lookup", t.elapsed().as_nanos() as f64 / (rounds * uas.len()) as f64);
    let t = Instant::now();
    for _ in 0..rounds {
        for ua in &uas[..1000] {
            black_box(d.dimensions(v4[0], Some(ua), Some("https://mail.google.com/"), false));
        }
    }
    println!("whole request (hit): {:.1} ns", t.elapsed().as_nanos() as f64 / (rounds * 1000) as f64);
}
