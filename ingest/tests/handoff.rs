//! The hand-off from request handlers to the spool, without a broker: every
//! accepted event is on disk after a graceful shutdown, in order, whole, and
//! an event after an idle spell (the writer parked) is not left behind.

use std::time::Duration;

use ricochet_ingest::spool::{self, Position, SegmentReader};
use ricochet_ingest::{PublishError, Publisher, PublisherConfig};
use ricochet_schemas::{click_wire, ClickEvent, ClickWire, Codec};

mod common;
use common::event;

fn config(dir: &std::path::Path) -> PublisherConfig {
    // Nothing listens on port 1: the forwarder never gets an acknowledgement.
    common::config(dir, &["--kafka-brokers", "127.0.0.1:1"])
}

/// Every record in the spool, oldest first, as (key, value).
fn spooled(dir: &std::path::Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    for segment in spool::list_segments(dir).unwrap() {
        let mut r = SegmentReader::open(dir, Position { segment, offset: 0 }).unwrap();
        while let Some(record) = r.next(u64::MAX).unwrap() {
            out.push((record.key().to_vec(), record.value().to_vec()));
        }
    }
    out
}

#[test]
fn every_accepted_event_is_in_the_spool_after_shutdown_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let publisher = Publisher::start(&config(dir.path())).unwrap();
    let events: Vec<ClickEvent> = (0..5_000).map(event).collect();
    for (i, e) in events.iter().enumerate() {
        publisher.publish(if i % 2 == 0 { "acme" } else { "acme#3" }, &ClickWire::of(e)).unwrap();
        if i % 1_000 == 0 {
            // Let some ticks pass mid-stream, so the events span several takes.
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    publisher.shutdown(Duration::from_millis(300));
    assert_eq!(publisher.stats().accepted.load(std::sync::atomic::Ordering::Relaxed), 5_000);
    assert!(matches!(publisher.publish("acme", &ClickWire::of(&events[0])), Err(PublishError::Closed)));

    let codec = Codec::<ClickEvent>::new();
    let records = spooled(dir.path());
    assert_eq!(records.len(), events.len(), "every accepted event reached the disk");
    for (i, ((key, value), e)) in records.iter().zip(&events).enumerate() {
        assert_eq!(key, if i % 2 == 0 { &b"acme"[..] } else { &b"acme#3"[..] });
        let mut expected = Vec::new();
        click_wire::encode(&ClickWire::of(e), &mut expected);
        assert_eq!(value, &expected, "record {i} is the encoded event");
        assert_eq!(&codec.decode(value).unwrap(), e);
    }
}

#[test]
fn an_event_after_an_idle_spell_wakes_the_parked_writer_and_is_fsynced() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.spool.fsync_interval_ms = 20;
    let publisher = Publisher::start(&c).unwrap();
    // Well past the writer's idle ticks: it parks.
    std::thread::sleep(Duration::from_millis(400));
    let e = event(1);
    publisher.publish("acme", &ClickWire::of(&e)).unwrap();
    // No shutdown: the record must reach the disk on its own, fsync included.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while spooled(dir.path()).is_empty() {
        assert!(std::time::Instant::now() < deadline, "the parked writer never took the event");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(spooled(dir.path()).len(), 1);
    publisher.shutdown(Duration::from_millis(100));
}
