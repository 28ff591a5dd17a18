//! The disk spool: a segmented, append-only log of framed events.
//!
//! Every event the edge publishes is written here first; a forwarder then
//! produces it to Kafka (see `publisher`). The log is what makes a broker
//! outage, a graceful shutdown or an edge restart cost nothing: whatever the
//! broker has not acknowledged is still on disk and is sent again, in order.
//!
//! Layout: `DIR/{segment:020}.spool` files, rolled at `segment_bytes`, and
//! `DIR/cursor` holding the acknowledged position (`segment offset`). A record is
//!
//! ```text
//! u32 LE  body length          (key length field + key + value)
//! u32 LE  CRC-32 of the body
//! u16 LE  key length, key bytes, value bytes
//! ```
//!
//! A torn record at the end of a segment (a crash mid-write) fails its length
//! or CRC check and ends that segment: nothing after it was ever fsynced.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Records larger than this are refused (a click event is a few hundred bytes).
pub const MAX_RECORD_BYTES: usize = 1 << 20;
const HEADER_BYTES: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool io at {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("record of {0} bytes exceeds the spool's limit of {MAX_RECORD_BYTES}")]
    TooLarge(usize),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io { path: path.to_owned(), source }
}

/// A position in the log: a segment and a byte offset in it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    pub segment: u64,
    pub offset: u64,
}

pub fn segment_path(dir: &Path, segment: u64) -> PathBuf {
    dir.join(format!("{segment:020}.spool"))
}

/// Segment ids present in `dir`, oldest first.
pub fn list_segments(dir: &Path) -> Result<Vec<u64>, SpoolError> {
    let mut ids: Vec<u64> = fs::read_dir(dir)
        .map_err(io_err(dir))?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.strip_suffix(".spool")?.parse().ok())
        .collect();
    ids.sort_unstable();
    Ok(ids)
}

/// Total bytes of the segments in `dir`.
pub fn disk_bytes(dir: &Path) -> Result<u64, SpoolError> {
    let mut total = 0;
    for id in list_segments(dir)? {
        let path = segment_path(dir, id);
        total += fs::metadata(&path).map_err(io_err(&path))?.len();
    }
    Ok(total)
}

pub fn encode_record(key: &[u8], value: &[u8], out: &mut Vec<u8>) -> Result<(), SpoolError> {
    encode_record_with(key, out, |out| out.extend_from_slice(value))
}

/// Appends one record to `out` whose value `write_value` appends in place, so
/// an event is encoded straight into the spool's buffer without a copy. On
/// error `out` is left as it was.
pub fn encode_record_with(
    key: &[u8],
    out: &mut Vec<u8>,
    write_value: impl FnOnce(&mut Vec<u8>),
) -> Result<(), SpoolError> {
    if key.len() > u16::MAX as usize {
        return Err(SpoolError::TooLarge(key.len()));
    }
    let start = out.len();
    out.extend_from_slice(&[0; HEADER_BYTES]);
    out.extend_from_slice(&(key.len() as u16).to_le_bytes());
    out.extend_from_slice(key);
    write_value(out);
    let body_len = out.len() - start - HEADER_BYTES;
    if body_len > MAX_RECORD_BYTES {
        out.truncate(start);
        return Err(SpoolError::TooLarge(body_len));
    }
    let crc = crc32fast::hash(&out[start + HEADER_BYTES..]);
    out[start..start + 4].copy_from_slice(&(body_len as u32).to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// Appends to the newest segment. Owned by the one writer thread.
pub struct SegmentWriter {
    dir: PathBuf,
    segment: u64,
    offset: u64,
    file: BufWriter<File>,
}

impl SegmentWriter {
    /// Opens a fresh segment after every existing one: old segments are never appended to.
    pub fn open(dir: &Path) -> Result<Self, SpoolError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let next = list_segments(dir)?.last().map_or(1, |last| last + 1);
        Self::create(dir, next)
    }

    fn create(dir: &Path, segment: u64) -> Result<Self, SpoolError> {
        let path = segment_path(dir, segment);
        let file = OpenOptions::new().create_new(true).append(true).open(&path).map_err(io_err(&path))?;
        // The new file's directory entry must survive a crash too.
        File::open(dir).and_then(|d| d.sync_all()).map_err(io_err(dir))?;
        Ok(SegmentWriter { dir: dir.to_owned(), segment, offset: 0, file: BufWriter::with_capacity(256 * 1024, file) })
    }

    pub fn append(&mut self, encoded: &[u8]) -> Result<(), SpoolError> {
        let path = segment_path(&self.dir, self.segment);
        self.file.write_all(encoded).map_err(io_err(&path))?;
        self.offset += encoded.len() as u64;
        Ok(())
    }

    /// Makes everything appended so far durable and returns the durable end.
    pub fn sync(&mut self) -> Result<Position, SpoolError> {
        let path = segment_path(&self.dir, self.segment);
        self.file.flush().map_err(io_err(&path))?;
        self.file.get_ref().sync_data().map_err(io_err(&path))?;
        Ok(self.position())
    }

    pub fn position(&self) -> Position {
        Position { segment: self.segment, offset: self.offset }
    }

    /// Syncs this segment and starts the next.
    pub fn roll(&mut self) -> Result<Position, SpoolError> {
        self.sync()?;
        *self = Self::create(&self.dir, self.segment + 1)?;
        Ok(self.position())
    }
}

/// A record read back from a segment: one buffer holding the key and the value.
#[derive(Debug, PartialEq, Eq)]
pub struct Record {
    body: Vec<u8>,
    key_len: usize,
    /// Where the next record starts: acknowledging this record moves the cursor here.
    pub end: Position,
}

impl Record {
    pub fn key(&self) -> &[u8] {
        &self.body[2..2 + self.key_len]
    }

    pub fn value(&self) -> &[u8] {
        &self.body[2 + self.key_len..]
    }
}

/// Reads one segment from an offset.
pub struct SegmentReader {
    segment: u64,
    offset: u64,
    /// Buffered: one `read` per 64 KiB, not two per record. Bytes past the
    /// durable limit may sit in the buffer but are never returned: the file
    /// is append-only, so they are the same bytes once the limit passes them.
    file: BufReader<File>,
    path: PathBuf,
}

impl SegmentReader {
    pub fn open(dir: &Path, at: Position) -> Result<Self, SpoolError> {
        let path = segment_path(dir, at.segment);
        let mut file = File::open(&path).map_err(io_err(&path))?;
        file.seek(SeekFrom::Start(at.offset)).map_err(io_err(&path))?;
        Ok(SegmentReader {
            segment: at.segment,
            offset: at.offset,
            file: BufReader::with_capacity(64 * 1024, file),
            path,
        })
    }

    pub fn segment(&self) -> u64 {
        self.segment
    }

    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The next record if it lies entirely before `limit` (the durable end).
    /// `Ok(None)` at the limit, or at a torn or corrupt tail.
    pub fn next(&mut self, limit: u64) -> Result<Option<Record>, SpoolError> {
        if self.offset + HEADER_BYTES as u64 > limit {
            return Ok(None);
        }
        let mut header = [0u8; HEADER_BYTES];
        if !read_full(&mut self.file, &mut header).map_err(io_err(&self.path))? {
            return Ok(None);
        }
        let body_len = u32::from_le_bytes(header[..4].try_into().unwrap()) as usize;
        let crc = u32::from_le_bytes(header[4..].try_into().unwrap());
        let end = self.offset + (HEADER_BYTES + body_len) as u64;
        if !(2..=MAX_RECORD_BYTES).contains(&body_len) || end > limit {
            return self.torn("length");
        }
        let mut body = vec![0u8; body_len];
        if !read_full(&mut self.file, &mut body).map_err(io_err(&self.path))? {
            return self.torn("truncated body");
        }
        if crc32fast::hash(&body) != crc {
            return self.torn("checksum");
        }
        let key_len = u16::from_le_bytes([body[0], body[1]]) as usize;
        if 2 + key_len > body_len {
            return self.torn("key length");
        }
        self.offset = end;
        Ok(Some(Record { body, key_len, end: Position { segment: self.segment, offset: end } }))
    }

    fn torn(&mut self, what: &str) -> Result<Option<Record>, SpoolError> {
        tracing::warn!(
            segment = self.segment,
            offset = self.offset,
            what,
            "spool segment ends in a torn record; the rest is skipped"
        );
        metrics::counter!("ricochet_spool_torn_records_total").increment(1);
        // Park at the limit so the caller moves on.
        self.offset = u64::MAX;
        Ok(None)
    }
}

/// Fills `buf`, or returns `false` at a clean or partial end of file.
fn read_full(file: &mut impl Read, buf: &mut [u8]) -> io::Result<bool> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..])? {
            0 => return Ok(false),
            n => filled += n,
        }
    }
    Ok(true)
}

/// The acknowledged position, persisted so a restart resends only what the
/// broker may not have. Written atomically (temp file + rename).
pub fn write_cursor(dir: &Path, at: Position) -> Result<(), SpoolError> {
    let tmp = dir.join("cursor.tmp");
    fs::write(&tmp, format!("{} {}\n", at.segment, at.offset)).map_err(io_err(&tmp))?;
    fs::rename(&tmp, dir.join("cursor")).map_err(io_err(dir))
}

pub fn read_cursor(dir: &Path) -> Option<Position> {
    let text = fs::read_to_string(dir.join("cursor")).ok()?;
    let mut parts = text.split_whitespace();
    Some(Position { segment: parts.next()?.parse().ok()?, offset: parts.next()?.parse().ok()? })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(w: &mut SegmentWriter, key: &str, value: &str) {
        let mut buf = Vec::new();
        encode_record(key.as_bytes(), value.as_bytes(), &mut buf).unwrap();
        w.append(&buf).unwrap();
    }

    #[test]
    fn records_round_trip_and_stop_at_the_durable_limit() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = SegmentWriter::open(dir.path()).unwrap();
        write(&mut w, "acme", "one");
        let durable = w.sync().unwrap();
        write(&mut w, "acme", "two"); // appended, not yet synced
        w.file.flush().unwrap();
        let mut r = SegmentReader::open(dir.path(), Position { segment: durable.segment, offset: 0 }).unwrap();
        let first = r.next(durable.offset).unwrap().unwrap();
        assert_eq!((first.key(), first.value()), (&b"acme"[..], &b"one"[..]));
        assert_eq!(first.end, durable);
        assert_eq!(r.next(durable.offset).unwrap(), None, "nothing past the durable end is read");
        // The same reader, whose buffer may already hold "two", returns it once it is durable.
        let durable = w.sync().unwrap();
        let second = r.next(durable.offset).unwrap().unwrap();
        assert_eq!((second.key(), second.value(), second.end), (&b"acme"[..], &b"two"[..], durable));
    }

    #[test]
    fn a_record_too_large_is_refused_and_leaves_the_buffer_as_it_was() {
        let mut out = b"earlier".to_vec();
        let err = encode_record_with(b"k", &mut out, |o| o.resize(o.len() + MAX_RECORD_BYTES, b'x')).unwrap_err();
        assert!(matches!(err, SpoolError::TooLarge(n) if n == MAX_RECORD_BYTES + 3), "{err}");
        assert_eq!(out, b"earlier");
        encode_record_with(b"k", &mut out, |o| o.extend_from_slice(b"v")).unwrap();
        let mut direct = b"earlier".to_vec();
        encode_record(b"k", b"v", &mut direct).unwrap();
        assert_eq!(out, direct);
    }

    #[test]
    fn a_torn_tail_ends_the_segment_without_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = SegmentWriter::open(dir.path()).unwrap();
        write(&mut w, "k", "good");
        let end = w.sync().unwrap();
        drop(w);
        // A crash mid-write: half a record at the end.
        let path = segment_path(dir.path(), end.segment);
        let mut buf = Vec::new();
        encode_record(b"k", b"lost", &mut buf).unwrap();
        OpenOptions::new().append(true).open(&path).unwrap().write_all(&buf[..buf.len() - 2]).unwrap();
        let mut r = SegmentReader::open(dir.path(), Position { segment: end.segment, offset: 0 }).unwrap();
        assert_eq!(r.next(u64::MAX).unwrap().unwrap().value(), b"good");
        assert_eq!(r.next(u64::MAX).unwrap(), None);
    }

    #[test]
    fn a_reopened_spool_starts_a_new_segment_and_keeps_the_old() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = SegmentWriter::open(dir.path()).unwrap();
        write(&mut w, "k", "v");
        w.roll().unwrap();
        drop(w);
        let w = SegmentWriter::open(dir.path()).unwrap();
        assert_eq!(w.position().segment, 3);
        assert_eq!(list_segments(dir.path()).unwrap(), vec![1, 2, 3]);
        write_cursor(dir.path(), Position { segment: 1, offset: 9 }).unwrap();
        assert_eq!(read_cursor(dir.path()), Some(Position { segment: 1, offset: 9 }));
    }

    proptest::proptest! {
        #[test]
        fn reading_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let dir = tempfile::tempdir().unwrap();
            fs::write(segment_path(dir.path(), 1), &bytes).unwrap();
            let mut r = SegmentReader::open(dir.path(), Position { segment: 1, offset: 0 }).unwrap();
            for _ in 0..64 {
                if r.next(u64::MAX).unwrap().is_none() { break; }
            }
        }
    }
}
