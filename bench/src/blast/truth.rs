//! The ground truth file: one JSON line per request the replay sent, with
//! its label and what it was sent with. The scorer reads it back.

use std::io::{BufRead, Write};
use std::path::Path;

use super::model::{Campaign, Request};

/// One request as sent.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Sent {
    pub client_id: String,
    pub campaign_id: String,
    pub link_id: String,
    pub code: String,
    #[serde(flatten)]
    pub request: Request,
    /// The send time the recipient token carries (ms since the epoch).
    pub token_sent_at_ms: i64,
    /// Wall clock just before the request left (ms since the epoch).
    pub sent_ms: i64,
    /// HTTP status the edge answered (0: no answer).
    pub status: u16,
}

/// The header line: what the blast was.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Header {
    pub client_id: String,
    pub seed: u64,
    pub recipients: u32,
    pub links: u32,
    pub scanner_share: f64,
    pub time_scale: f64,
    pub min_gap_ms: i64,
    pub started_ms: i64,
    pub finished_ms: i64,
    /// Campaign and link ids: (campaign, index, link id, honeypot).
    pub links_created: Vec<(Campaign, u32, String, bool)>,
}

pub fn write(path: &Path, header: &Header, sent: &[Sent]) -> anyhow::Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    serde_json::to_writer(&mut out, header)?;
    out.write_all(b"\n")?;
    for s in sent {
        serde_json::to_writer(&mut out, s)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}

pub fn read(path: &Path) -> anyhow::Result<(Header, Vec<Sent>)> {
    let file = std::io::BufReader::new(std::fs::File::open(path)?);
    let mut lines = file.lines();
    let first = lines.next().ok_or_else(|| anyhow::anyhow!("{} is empty", path.display()))??;
    let header: Header = serde_json::from_str(&first)?;
    let mut sent = Vec::new();
    for (n, line) in lines.enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        sent.push(serde_json::from_str(&line).map_err(|e| anyhow::anyhow!("{}: line {}: {e}", path.display(), n + 2))?);
    }
    Ok((header, sent))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blast::model::{plan, Params};

    #[test]
    fn a_truth_file_reads_back_as_written() {
        let p = plan(&Params { recipients: 50, scanner_share: 0.5, click_rate: 0.5, ..Params::default() });
        let sent: Vec<Sent> = p
            .requests
            .iter()
            .enumerate()
            .map(|(i, q)| Sent {
                client_id: "c".into(),
                campaign_id: q.campaign.as_str().into(),
                link_id: format!("{i:032x}"),
                code: "Ab3dE5gH".into(),
                request: q.clone(),
                token_sent_at_ms: 1_700_000_000_000 + i as i64,
                sent_ms: 1_700_000_000_500,
                status: 302,
            })
            .collect();
        assert!(sent.len() > 10);
        let header = Header {
            client_id: "c".into(),
            seed: 1,
            recipients: 50,
            links: 4,
            scanner_share: 0.5,
            time_scale: 30.0,
            min_gap_ms: 15_000,
            started_ms: 1,
            finished_ms: 2,
            links_created: vec![(Campaign::Main, 0, "ab".repeat(16), false)],
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("truth.jsonl");
        write(&path, &header, &sent).unwrap();
        let (h, s) = read(&path).unwrap();
        assert_eq!(h, header);
        assert_eq!(s, sent);
    }
}
