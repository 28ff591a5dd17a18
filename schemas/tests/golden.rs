//! Golden byte vectors: the exact bytes each contract puts on the wire.
//!
//! A change to these bytes breaks every reader in production. If the change is
//! intended (a new schema version), add the new version's vector beside the old
//! one; never edit an old vector. `RICOCHET_BLESS=1 cargo test -p ricochet-schemas`
//! writes missing vectors.

use std::path::PathBuf;

use apache_avro::types::Value;
use ricochet_schemas::click::{CLICK_EVENT_V1, CLICK_EVENT_V2, CLICK_EVENT_V3};
use ricochet_schemas::codec::Contract;
use ricochet_schemas::link::{LINK_V1, LINK_V2};
use ricochet_schemas::*;

fn fixture_click() -> ClickEvent {
    ClickEvent {
        event_id: EventId(uuid::Uuid::parse_str("01936a4e-7c3f-7b21-9a55-2f1e3d4c5b6a").unwrap()),
        event_time_ms: 1_732_233_600_123,
        client_id: ClientId::parse("acme").unwrap(),
        campaign_id: CampaignId::parse("black-friday").unwrap(),
        link_id: LinkId::parse("01936a4e7c3f7b219a552f1e3d4c5b6b").unwrap(),
        recipient_id: Some(RecipientId::parse("r-42").unwrap()),
        destination_url: "https://shop.example/deals?utm=bf".into(),
        http_method: "GET".into(),
        user_agent: Some("Mozilla/5.0".into()),
        referer: None,
        client_ip: Some("203.0.113.0".into()),
        edge_node: "edge-1".into(),
        event_type: EventType::Click,
        is_prefetch: false,
        recipient_token: RecipientToken::Valid,
        signals: ricochet_schemas::Signals::default(),
    }
}

fn fixture_link() -> LinkRecord {
    LinkRecord {
        link_id: LinkId::parse("01936a4e7c3f7b219a552f1e3d4c5b6b").unwrap(),
        code: LinkCode::parse("Ab3dE5gH").unwrap(),
        client_id: ClientId::parse("acme").unwrap(),
        campaign_id: CampaignId::parse("black-friday").unwrap(),
        destination_url: "https://shop.example/deals?utm=bf".into(),
        status: LinkStatus::Active,
        created_at_ms: 1_732_233_600_000,
        valid_from_ms: None,
        valid_until_ms: Some(1_735_000_000_000),
        click_limit: Some(1000),
        honeypot: false,
    }
}

fn check_golden(name: &str, bytes: &[u8]) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("golden").join(name);
    let actual = hex::encode(bytes);
    match std::fs::read_to_string(&path) {
        Ok(expected) => assert_eq!(actual, expected.trim(), "bytes on the wire changed for {name}"),
        Err(_) if std::env::var_os("RICOCHET_BLESS").is_some() => std::fs::write(&path, actual + "\n").unwrap(),
        Err(e) => panic!("golden vector {} missing ({e}); run with RICOCHET_BLESS=1 once", path.display()),
    }
}

/// The fields v3 added.
const V3_FIELDS: [&str; 11] = [
    "prefetch_header",
    "ua_class",
    "has_accept",
    "has_accept_language",
    "scanner_referer",
    "network_class",
    "network_name",
    "asn",
    "network_allow_listed",
    "sent_at",
    "honeypot",
];

/// The v1 record an old edge writes: the fixture without the v2 and v3 fields.
fn v1_record(event: &ClickEvent) -> Value {
    let Value::Record(fields) = v2_record(event) else { unreachable!() };
    Value::Record(
        fields
            .into_iter()
            .filter(|(n, _)| !matches!(n.as_str(), "event_type" | "is_prefetch" | "recipient_token"))
            .collect(),
    )
}

/// The v2 record an edge of the previous release writes: without the v3 fields.
fn v2_record(event: &ClickEvent) -> Value {
    let Value::Record(fields) = event.to_avro() else { unreachable!() };
    Value::Record(fields.into_iter().filter(|(n, _)| !V3_FIELDS.contains(&n.as_str())).collect())
}

fn golden(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("golden").join(name);
    hex::decode(std::fs::read_to_string(path).unwrap().trim()).unwrap()
}

#[test]
fn click_event_v1_bytes_are_stable() {
    let codec = Codec::<ClickEvent>::new();
    let bytes = codec.encode_value(CLICK_EVENT_V1, v1_record(&fixture_click())).unwrap();
    assert_eq!(&bytes[..5], &[0, 0, 0, 0, CLICK_EVENT_V1.0 as u8], "Confluent header with schema id 1");
    check_golden("click_event.v1.hex", &bytes);
}

#[test]
fn click_event_v2_bytes_are_stable() {
    let codec = Codec::<ClickEvent>::new();
    let bytes = codec.encode_value(CLICK_EVENT_V2, v2_record(&fixture_click())).unwrap();
    assert_eq!(&bytes[..5], &[0, 0, 0, 0, CLICK_EVENT_V2.0 as u8]);
    check_golden("click_event.v2.hex", &bytes);
    // v2 data reads with the v3 defaults: no evidence either way.
    assert_eq!(codec.decode(&golden("click_event.v2.hex")).unwrap(), fixture_click());
}

/// The v3 fixture: every signal set away from its default, so that a field
/// the encoder forgets or misplaces changes the bytes.
fn fixture_click_v3() -> ClickEvent {
    ClickEvent {
        signals: Signals {
            prefetch_header: true,
            ua_class: UaClass::HttpClient,
            has_accept: false,
            has_accept_language: false,
            scanner_referer: true,
            network_class: NetworkClass::Scanner,
            network_name: Some("microsoft-eop".into()),
            asn: 8075,
            network_allow_listed: true,
            sent_at_ms: Some(1_732_233_556_000),
            honeypot: true,
        },
        ..fixture_click()
    }
}

#[test]
fn click_event_v3_bytes_are_stable() {
    let codec = Codec::<ClickEvent>::new();
    let bytes = codec.encode(&fixture_click_v3()).unwrap();
    assert_eq!(&bytes[..5], &[0, 0, 0, 0, CLICK_EVENT_V3.0 as u8], "this build writes v3 (schema id 7)");
    check_golden("click_event.v3.hex", &bytes);
    assert_eq!(codec.decode(&golden("click_event.v3.hex")).unwrap(), fixture_click_v3());
}

/// The edge writes with the hand encoder (`click_wire`), not `Codec`: it must
/// put the same bytes on the wire, appended to whatever its buffer holds.
#[test]
fn the_hand_encoder_writes_the_golden_v3_vector() {
    let event = fixture_click_v3();
    let mut out = b"kept".to_vec();
    ricochet_schemas::click_wire::encode(&ClickWire::of(&event), &mut out);
    assert_eq!(&out[..4], b"kept");
    assert_eq!(hex::encode(&out[4..]), hex::encode(golden("click_event.v3.hex")));
}

#[test]
fn a_v2_reader_reads_v3_data() {
    let codec = Codec::<ClickEvent>::new();
    let v3 = codec.encode(&fixture_click_v3()).unwrap();
    let as_v2 = codec.decode_value(&v3, CLICK_EVENT_V2).unwrap();
    assert_eq!(as_v2, v2_record(&fixture_click_v3()), "an old aggregator sees the v2 view of a v3 event");
}

#[test]
fn link_v2_bytes_are_stable_and_v1_reads_as_not_a_honeypot() {
    let codec = Codec::<LinkRecord>::new();
    let trap = LinkRecord { honeypot: true, ..fixture_link() };
    let bytes = codec.encode(&trap).unwrap();
    assert_eq!(&bytes[..5], &[0, 0, 0, 0, LINK_V2.0 as u8]);
    check_golden("link.v2.hex", &bytes);
    assert_eq!(codec.decode(&bytes).unwrap(), trap);
    assert_eq!(codec.decode(&golden("link.v1.hex")).unwrap(), fixture_link());
}

#[test]
fn v1_data_from_an_old_edge_reads_with_v2_defaults() {
    let decoded = Codec::<ClickEvent>::new().decode(&golden("click_event.v1.hex")).unwrap();
    let expected = ClickEvent { recipient_token: RecipientToken::Absent, ..fixture_click() };
    assert_eq!(decoded, expected);
}

#[test]
fn a_v1_reader_reads_v2_data() {
    let codec = Codec::<ClickEvent>::new();
    let v2 = codec.encode(&fixture_click()).unwrap();
    let as_v1 = codec.decode_value(&v2, CLICK_EVENT_V1).unwrap();
    assert_eq!(as_v1, v1_record(&fixture_click()), "an old aggregator sees the v1 view of a current event");
}

#[test]
fn link_v1_bytes_are_stable_and_round_trip() {
    let codec = Codec::<LinkRecord>::new();
    let Value::Record(fields) = fixture_link().to_avro() else { unreachable!() };
    let v1 = Value::Record(fields.into_iter().filter(|(n, _)| n != "honeypot").collect());
    let bytes = codec.encode_value(LINK_V1, v1).unwrap();
    assert_eq!(&bytes[..5], &[0, 0, 0, 0, LINK_V1.0 as u8]);
    check_golden("link.v1.hex", &bytes);
    assert_eq!(codec.decode(&bytes).unwrap(), fixture_link());
}

#[test]
fn garbage_is_a_typed_error_not_a_panic() {
    let codec = Codec::<ClickEvent>::new();
    assert!(matches!(codec.decode(b"hello world"), Err(CodecError::BadMagic { .. })));
    assert!(matches!(codec.decode(&[0, 0, 0, 0, 99, 1, 2]), Err(CodecError::UnknownSchema(SchemaId(99), _))));
    let mut truncated = codec.encode(&fixture_click()).unwrap();
    truncated.truncate(20);
    assert!(codec.decode(&truncated).is_err());
}

#[test]
fn client_v1_bytes_are_stable_and_round_trip() {
    let client = ClientRecord {
        client_id: ClientId::parse("acme").unwrap(),
        status: ClientStatus::Paused,
        fallback_url: Some("https://acme.example/expired".into()),
        hot_spread: 8,
        updated_at_ms: 1_732_233_600_000,
        allowed_networks: vec![],
    };
    let codec = Codec::<ClientRecord>::new();
    let Value::Record(fields) = client.to_avro() else { unreachable!() };
    let v1 = Value::Record(fields.into_iter().filter(|(n, _)| n != "allowed_networks").collect());
    let bytes = codec.encode_value(ricochet_schemas::client::CLIENT_V1, v1).unwrap();
    assert_eq!(&bytes[..5], &[0, 0, 0, 0, 4]);
    check_golden("client.v1.hex", &bytes);
    assert_eq!(codec.decode(&bytes).unwrap(), client, "v1 data reads with no allowed networks");

    let allowing = ClientRecord { allowed_networks: vec!["203.0.113.0/24".into(), "2001:db8::/32".into()], ..client };
    let bytes = codec.encode(&allowing).unwrap();
    assert_eq!(&bytes[..5], &[0, 0, 0, 0, 9], "this build writes client v2 (schema id 9)");
    check_golden("client.v2.hex", &bytes);
    assert_eq!(codec.decode(&bytes).unwrap(), allowing);
}

#[test]
fn link_count_v1_round_trips() {
    let count = LinkCount { link_id: LinkId::parse("l1").unwrap(), clicks: 42, as_of_ms: 1_732_233_600_000 };
    let codec = Codec::<LinkCount>::new();
    let bytes = codec.encode(&count).unwrap();
    assert_eq!(&bytes[..5], &[0, 0, 0, 0, 5]);
    check_golden("link_count.v1.hex", &bytes);
    assert_eq!(codec.decode(&bytes).unwrap(), count);
}

#[test]
fn api_key_v1_bytes_are_stable_and_read_as_a_legacy_key() {
    let key = ApiKeyRecord {
        key_hash: "ab".repeat(32),
        client_id: ClientId::parse("acme").unwrap(),
        label: Some("dashboard".into()),
        revoked: false,
        created_at_ms: 1_732_233_600_000,
        scopes: None,
        expires_at_ms: None,
    };
    let codec = Codec::<ApiKeyRecord>::new();
    let Value::Record(fields) = key.to_avro() else { unreachable!() };
    let v1 = Value::Record(fields.into_iter().filter(|(n, _)| n != "scopes" && n != "expires_at").collect());
    let bytes = codec.encode_value(ricochet_schemas::api_key::API_KEY_V1, v1).unwrap();
    assert_eq!(&bytes[..5], &[0, 0, 0, 0, 6]);
    check_golden("api_key.v1.hex", &bytes);
    assert_eq!(codec.decode(&bytes).unwrap(), key, "v1 data reads with no scopes (legacy) and no expiry");

    let scoped = ApiKeyRecord {
        scopes: Some(vec!["read".into(), "write".into()]),
        expires_at_ms: Some(1_764_000_000_000),
        ..key
    };
    let bytes = codec.encode(&scoped).unwrap();
    assert_eq!(&bytes[..5], &[0, 0, 0, 0, 10], "this build writes api_key v2 (schema id 10)");
    check_golden("api_key.v2.hex", &bytes);
    assert_eq!(codec.decode(&bytes).unwrap(), scoped);
}
