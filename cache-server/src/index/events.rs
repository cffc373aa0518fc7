//! The deploy history: timing events sent by `cachectl`, kept up to a
//! retention limit (the oldest go first).

use cache_proto::body::{DeployEvent, StoredEvent};
use rusqlite::params;

use super::{Index, IndexError, now_ms};

impl Index {
    /// Stores `event`, then drops the oldest beyond `retention` events.
    pub async fn add_event(&self, event: DeployEvent, retention: u64) -> Result<i64, IndexError> {
        self.write(move |connection| {
            let body = serde_json::to_string(&event)
                .map_err(|e| IndexError::Corrupt(format!("event: {e}")))?;
            let transaction = connection.transaction()?;
            transaction.execute(
                "INSERT INTO events (at, kind, image, hit, seconds, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![now_ms(), event.kind, event.image, event.hit, event.seconds, body],
            )?;
            let id = transaction.last_insert_rowid();
            transaction.execute(
                "DELETE FROM events WHERE id <= ?1",
                params![id - retention.min(i64::MAX as u64) as i64],
            )?;
            transaction.commit()?;
            Ok(id)
        })
        .await
    }

    /// Events received since `since_ms`, newest first, at most `limit`.
    pub async fn events(
        &self,
        since_ms: i64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, IndexError> {
        self.read(move |connection| {
            let mut statement = connection.prepare_cached(
                "SELECT id, at, body FROM events WHERE at >= ?1 ORDER BY id DESC LIMIT ?2",
            )?;
            let rows = statement.query_map(params![since_ms, limit as i64], |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, i64>(1)?,
                    row.get::<_, String>(2)?,
                ))
            })?;
            let mut events = Vec::new();
            for row in rows {
                let (id, at_ms, body) = row?;
                // A row this binary cannot read is skipped, not fatal.
                if let Ok(event) = serde_json::from_str(&body) {
                    events.push(StoredEvent { id, at_ms, event });
                }
            }
            Ok(events)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(seconds: f64) -> DeployEvent {
        DeployEvent {
            kind: "ensure-base".into(),
            image: "r/web-base".into(),
            key: None,
            hit: false,
            phases: [("build".to_owned(), seconds)].into(),
            seconds,
            bytes: 10,
            digest: None,
        }
    }

    #[tokio::test]
    async fn events_are_kept_newest_first_up_to_the_retention() {
        let folder = tempfile::tempdir().unwrap();
        let index = Index::open(&folder.path().join("i.sqlite")).unwrap();
        for seconds in [1.0, 2.0, 3.0] {
            index.add_event(event(seconds), 2).await.unwrap();
        }
        let events = index.events(0, 10).await.unwrap();
        let seconds: Vec<f64> = events.iter().map(|e| e.event.seconds).collect();
        assert_eq!(seconds, vec![3.0, 2.0]);
        assert_eq!(events[0].event, event(3.0));
    }
}
