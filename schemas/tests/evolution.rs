//! Schema evolution rules: every published version of a contract can read every
//! other (readers of v1 read v2 and the reverse), so old and new edges and
//! aggregators can share a topic during a rolling deploy.

use apache_avro::schema_compatibility::SchemaCompatibility;
use apache_avro::types::Value;
use apache_avro::Schema;
use ricochet_schemas::codec::Contract;
use ricochet_schemas::{ApiKeyRecord, ClickEvent, ClientRecord, LinkCount, LinkRecord};

fn assert_all_versions_mutually_readable<T: Contract>() {
    let schemas: Vec<(u32, Schema)> =
        T::VERSIONS.iter().map(|(id, text)| (id.0, Schema::parse_str(text).unwrap())).collect();
    for (a_id, a) in &schemas {
        for (b_id, b) in &schemas {
            assert!(
                SchemaCompatibility::mutual_read(a, b).is_ok(),
                "{}: versions {a_id} and {b_id} cannot read each other",
                T::NAME
            );
        }
    }
}

#[test]
fn published_versions_are_mutually_readable() {
    assert_all_versions_mutually_readable::<ClickEvent>();
    assert_all_versions_mutually_readable::<LinkRecord>();
    assert_all_versions_mutually_readable::<ClientRecord>();
    assert_all_versions_mutually_readable::<LinkCount>();
    assert_all_versions_mutually_readable::<ApiKeyRecord>();
    assert_all_versions_mutually_readable::<ricochet_schemas::DecidedEvent>();
}

/// The rule the check above enforces, shown on a candidate next version: adding a
/// field *with* a default keeps both directions readable; adding one without a
/// default breaks old data for new readers, and the check catches it.
#[test]
fn the_rule_accepts_defaulted_additions_and_rejects_required_ones() {
    let v1 = Schema::parse_str(ClickEvent::VERSIONS[0].1).unwrap();
    let with_default = ClickEvent::VERSIONS[0].1.replacen(
        r#""fields": ["#,
        r#""fields": [{"name": "kind", "type": "string", "default": "click"},"#,
        1,
    );
    let v2_ok = Schema::parse_str(&with_default).unwrap();
    assert!(SchemaCompatibility::mutual_read(&v1, &v2_ok).is_ok());

    let without_default =
        ClickEvent::VERSIONS[0].1.replacen(r#""fields": ["#, r#""fields": [{"name": "kind", "type": "string"},"#, 1);
    let v2_bad = Schema::parse_str(&without_default).unwrap();
    assert!(SchemaCompatibility::can_read(&v1, &v2_bad).is_err(), "a v2 reader cannot read v1 data");

    // And the data itself: a v1 datum read as v2 gets the default.
    let codec = ricochet_schemas::Codec::<ClickEvent>::new();
    let framed = codec.encode(&sample()).unwrap();
    let mut datum = &framed[5..];
    let read = apache_avro::from_avro_datum(&v1, &mut datum, Some(&v2_ok)).unwrap();
    let Value::Record(fields) = read else { panic!("not a record") };
    assert_eq!(fields.iter().find(|(n, _)| n == "kind").unwrap().1, Value::String("click".into()));
}

fn sample() -> ClickEvent {
    use ricochet_schemas::*;
    ClickEvent {
        event_id: EventId::mint(),
        event_time_ms: 1,
        client_id: ClientId::parse("c").unwrap(),
        campaign_id: CampaignId::parse("k").unwrap(),
        link_id: LinkId::mint(),
        recipient_id: None,
        destination_url: "https://x.example/".into(),
        http_method: "GET".into(),
        user_agent: None,
        referer: None,
        client_ip: None,
        edge_node: "e".into(),
        event_type: ricochet_schemas::EventType::Click,
        is_prefetch: false,
        recipient_token: ricochet_schemas::RecipientToken::Absent,
        signals: ricochet_schemas::Signals::default(),
    }
}
