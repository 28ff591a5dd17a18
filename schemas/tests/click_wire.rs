//! The hand encoder and decoder (`click_wire`) against the contract: for
//! random events covering every field, the generic encoder's bytes and a
//! decode by `apache-avro` against `click_event.v3.avsc` itself; for damaged
//! bytes, the same verdict (the same event, or an error) as `apache-avro`'s.
//! The golden v3 vector is checked in `golden.rs`.

use std::net::IpAddr;

use proptest::prelude::*;
use ricochet_schemas::click::CLICK_EVENT_V3;
use ricochet_schemas::codec::Contract;
use ricochet_schemas::*;

/// Decodes with `apache-avro` alone, against the schema text, not through `Codec`.
fn decode_with_apache_avro(bytes: &[u8]) -> ClickEvent {
    let schema = apache_avro::Schema::parse_str(include_str!("../avro/click_event.v3.avsc")).unwrap();
    assert_eq!(&bytes[..5], &[0, 0, 0, 0, CLICK_EVENT_V3.0 as u8], "Confluent header with schema id 7");
    let mut datum = &bytes[5..];
    let value = apache_avro::from_avro_datum(&schema, &mut datum, None).unwrap();
    assert!(datum.is_empty(), "{} bytes left after the record", datum.len());
    ClickEvent::from_avro(value).unwrap()
}

/// Longs, weighted towards the zig-zag and varint edges.
fn long() -> impl Strategy<Value = i64> {
    prop_oneof![
        any::<i64>(),
        Just(0),
        Just(-1),
        Just(1),
        Just(63),
        Just(-64),
        Just(64),
        Just(-65),
        Just(i64::MAX),
        Just(i64::MIN),
        Just(i64::from(i32::MAX) + 1),
        Just(i64::from(i32::MIN) - 1),
        -1_000_000i64..1_000_000,
    ]
}

fn token() -> impl Strategy<Value = String> {
    "[A-Za-z0-9._-]{1,64}"
}

/// Any text, including control characters and characters outside the BMP.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![any::<String>(), "\\PC{0,40}", Just(String::new()), Just("é🦀\u{0}\u{FFFD}".to_owned())]
}

/// Header bytes: usually text, sometimes not UTF-8 at all.
fn header() -> impl Strategy<Value = Option<Vec<u8>>> {
    proptest::option::of(prop_oneof![
        text().prop_map(String::into_bytes),
        proptest::collection::vec(any::<u8>(), 0..64),
    ])
}

fn ip() -> impl Strategy<Value = Option<IpAddr>> {
    proptest::option::of(prop_oneof![
        any::<[u8; 4]>().prop_map(IpAddr::from),
        any::<[u16; 8]>().prop_map(IpAddr::from),
        // IPv4-mapped IPv6 prints in its mixed form.
        any::<[u8; 4]>().prop_map(|v4| IpAddr::V6(std::net::Ipv4Addr::from(v4).to_ipv6_mapped())),
    ])
}

prop_compose! {
    fn signals()(
        prefetch_header in any::<bool>(),
        ua_class in prop_oneof![
            Just(UaClass::Unknown), Just(UaClass::Browser), Just(UaClass::Bot),
            Just(UaClass::Preview), Just(UaClass::HttpClient), Just(UaClass::Absent),
        ],
        has_accept in any::<bool>(),
        has_accept_language in any::<bool>(),
        scanner_referer in any::<bool>(),
        network_class in prop_oneof![
            Just(NetworkClass::Unknown), Just(NetworkClass::Scanner), Just(NetworkClass::Cloud), Just(NetworkClass::Other),
        ],
        network_name in proptest::option::of(text()),
        asn in prop_oneof![any::<u32>(), Just(0), Just(u32::MAX)],
        network_allow_listed in any::<bool>(),
        sent_at_ms in proptest::option::of(long()),
        honeypot in any::<bool>(),
    ) -> Signals {
        Signals {
            prefetch_header, ua_class, has_accept, has_accept_language, scanner_referer,
            network_class, network_name, asn, network_allow_listed, sent_at_ms, honeypot,
        }
    }
}

/// An event as the edge sees it: raw header bytes beside the owned event
/// those bytes stand for (`from_utf8_lossy`, as the old event builder did).
#[derive(Debug)]
struct Case {
    event: ClickEvent,
    user_agent: Option<Vec<u8>>,
    referer: Option<Vec<u8>>,
    ip: Option<IpAddr>,
}

prop_compose! {
    fn case()(
        id in any::<u128>(),
        event_time_ms in long(),
        client_id in token(),
        campaign_id in token(),
        link_id in token(),
        recipient_id in proptest::option::of("[A-Za-z0-9._@+-]{1,128}"),
        destination_url in text(),
        http_method in prop_oneof![Just("GET".to_owned()), Just("HEAD".to_owned()), text()],
        user_agent in header(),
        referer in header(),
        ip in ip(),
        edge_node in text(),
        event_type in prop_oneof![Just(EventType::Click), Just(EventType::Open)],
        is_prefetch in any::<bool>(),
        recipient_token in prop_oneof![
            Just(RecipientToken::Absent), Just(RecipientToken::Valid), Just(RecipientToken::Invalid),
        ],
        signals in signals(),
    ) -> Case {
        let lossy = |b: &Option<Vec<u8>>| b.as_deref().map(|b| String::from_utf8_lossy(b).into_owned());
        let event = ClickEvent {
            event_id: EventId(uuid::Uuid::from_u128(id)),
            event_time_ms,
            client_id: ClientId::parse(client_id).unwrap(),
            campaign_id: CampaignId::parse(campaign_id).unwrap(),
            link_id: LinkId::parse(link_id).unwrap(),
            recipient_id: recipient_id.map(|r| RecipientId::parse(r).unwrap()),
            destination_url,
            http_method,
            user_agent: lossy(&user_agent),
            referer: lossy(&referer),
            client_ip: ip.map(|ip| ip.to_string()),
            edge_node,
            event_type,
            is_prefetch,
            recipient_token,
            signals,
        };
        Case { event, user_agent, referer, ip }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1_000))]

    #[test]
    fn hand_bytes_equal_the_generic_encoder_and_decode_to_the_same_event(case in case(), split in any::<prop::sample::Index>()) {
        let codec = Codec::<ClickEvent>::new();
        // What the edge hands the encoder: raw header bytes, an address, and
        // the destination in two pieces, cut anywhere on a char boundary.
        let url = case.event.destination_url.as_str();
        let boundaries: Vec<usize> = url.char_indices().map(|(i, _)| i).chain([url.len()]).collect();
        let (head, tail) = url.split_at(boundaries[split.index(boundaries.len())]);
        let wire = ClickWire {
            destination_url: [head, tail],
            user_agent: case.user_agent.as_deref(),
            referer: case.referer.as_deref(),
            client_ip: case.ip,
            ..ClickWire::of(&case.event)
        };
        let mut bytes = Vec::new();
        click_wire::encode(&wire, &mut bytes);
        let generic = codec.encode(&case.event).unwrap();
        prop_assert_eq!(hex::encode(&bytes), hex::encode(&generic));
        prop_assert_eq!(&decode_with_apache_avro(&bytes), &case.event);
        prop_assert_eq!(&codec.decode(&bytes).unwrap(), &case.event, "the hand decoder");
        prop_assert_eq!(&codec.decode_generic(&bytes).unwrap(), &case.event);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4_000))]

    /// Whatever a broker or a bug does to the bytes, the hand decoder and
    /// `apache-avro` agree: both read the same event, or both refuse it.
    #[test]
    fn damaged_bytes_are_refused_or_read_exactly_as_apache_avro_does(
        case in case(),
        damage in prop_oneof![
            // Small values are the edges of booleans, enum indexes and union branches.
            (any::<prop::sample::Index>(), prop_oneof![0u8..4, any::<u8>()]).prop_map(|(at, b)| Damage::Set(at, b)),
            any::<prop::sample::Index>().prop_map(Damage::Truncate),
            (any::<prop::sample::Index>(), any::<u8>()).prop_map(|(at, b)| Damage::Insert(at, b)),
            any::<u8>().prop_map(Damage::Append),
        ],
    ) {
        let codec = Codec::<ClickEvent>::new();
        let mut bytes = codec.encode(&case.event).unwrap();
        // The damage lands in the datum: the header is checked before either decoder runs.
        let datum_len = bytes.len() - 5;
        match damage {
            Damage::Set(at, b) => bytes[5 + at.index(datum_len)] = b,
            Damage::Truncate(at) => bytes.truncate(5 + at.index(datum_len)),
            Damage::Insert(at, b) => bytes.insert(5 + at.index(datum_len), b),
            Damage::Append(b) => bytes.push(b),
        }
        let hand = codec.decode(&bytes);
        let generic = codec.decode_generic(&bytes);
        prop_assert_eq!(hand.as_ref().ok(), generic.as_ref().ok(), "hand {:?}, apache-avro {:?}", hand, generic);
    }
}

#[derive(Debug, Clone)]
enum Damage {
    Set(prop::sample::Index, u8),
    Truncate(prop::sample::Index),
    Insert(prop::sample::Index, u8),
    Append(u8),
}

/// Every byte of two small events set to every value: the hand decoder and
/// `apache-avro` read the same event or both refuse it. Exhaustive where the
/// random damage above is sparse: booleans, enum indexes, union branches.
#[test]
fn every_single_byte_change_is_judged_as_apache_avro_judges_it() {
    let codec = Codec::<ClickEvent>::new();
    let mut full = sample();
    full.recipient_id = Some(RecipientId::parse("r@x.example").unwrap());
    full.user_agent = Some("Mozilla/5.0".into());
    full.client_ip = Some("192.0.2.0".into());
    full.signals.network_name = Some("EOP".into());
    full.signals.sent_at_ms = Some(1_799_999_000_000);
    let mut checked = 0;
    for event in [sample(), full] {
        let bytes = codec.encode(&event).unwrap();
        for at in 5..bytes.len() {
            for value in 0..=255u8 {
                let mut damaged = bytes.clone();
                damaged[at] = value;
                let (hand, generic) = (codec.decode(&damaged), codec.decode_generic(&damaged));
                assert_eq!(hand.as_ref().ok(), generic.as_ref().ok(), "byte {at} = {value}: {hand:?} / {generic:?}");
                checked += 1;
            }
        }
    }
    assert!(checked > 40_000, "{checked}");
}

#[test]
fn hand_decoding_names_the_field_that_is_wrong() {
    let codec = Codec::<ClickEvent>::new();
    let bytes = codec.encode(&sample()).unwrap();
    let mut cut = bytes.clone();
    cut.truncate(cut.len() - 1); // the last field, `honeypot`, is a boolean
    let err = codec.decode(&cut).unwrap_err().to_string();
    assert!(err.contains("`honeypot`") && err.contains("ends early"), "{err}");
    let mut longer = bytes.clone();
    longer.push(0);
    let err = codec.decode(&longer).unwrap_err().to_string();
    assert!(err.contains("1 trailing bytes"), "{err}");
    let mut bad_bool = bytes;
    *bad_bool.last_mut().unwrap() = 2;
    let err = codec.decode(&bad_bool).unwrap_err().to_string();
    assert!(err.contains("`honeypot`") && err.contains("found 2"), "{err}");
}

fn sample() -> ClickEvent {
    ClickEvent {
        event_id: EventId(uuid::Uuid::from_u128(7)),
        event_time_ms: 1_800_000_000_000,
        client_id: ClientId::parse("acme").unwrap(),
        campaign_id: CampaignId::parse("spring").unwrap(),
        link_id: LinkId::parse("l1").unwrap(),
        recipient_id: None,
        destination_url: "https://acme.example/".into(),
        http_method: "GET".into(),
        user_agent: None,
        referer: None,
        client_ip: None,
        edge_node: "edge-1".into(),
        event_type: EventType::Click,
        is_prefetch: false,
        recipient_token: RecipientToken::Absent,
        signals: Signals::default(),
    }
}
