//! The hand encoder (`click_wire`) against the contract: for random events
//! covering every field, the generic encoder's bytes and a decode by
//! `apache-avro` against `click_event.v3.avsc` itself. The golden v3 vector
//! is checked in `golden.rs`.

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
        prop_assert_eq!(&codec.decode(&bytes).unwrap(), &case.event);
    }
}
