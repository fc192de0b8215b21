//! Files in chat state's terms: signed URLs for the files of a room the client is in
//! (`file_urls`), and telling the file store which stored message carries which files.
//! The file store is only ever told (`Files::tell_*`), never waited on; nothing here
//! reads a file or the files database.

use std::collections::BTreeMap;

use super::Dispatcher;
use crate::delivery::outbox::ConnId;
use crate::protocol::{wire, ErrorCode, FileDesc, ProtocolError, RoomName, ServerMsg};
use crate::store::files::sign;

impl Dispatcher {
    /// Signs a URL for each of `ids` for `room`, for a client in `room`. A file that
    /// was never posted there gets a URL too, which the file route answers with 404:
    /// rights are the room's, the store knows where each file was posted.
    pub(super) fn file_urls(&mut self, id: ConnId, room: &RoomName, ids: &[String]) -> Result<(), ProtocolError> {
        let client = &self.clients[&id];
        if !client.rooms.contains(room) {
            return Err(Self::not_joined(room, Some("file_urls".into())));
        }
        let Some(files) = &self.files else {
            return Err(ProtocolError::new(ErrorCode::Unavailable, "files are off").with_ref(Some("file_urls".into())));
        };
        let exp = super::state::now_ms() / 1000 + self.cfg.file_url_ttl.as_secs();
        let urls: BTreeMap<&str, String> =
            ids.iter().map(|f| (f.as_str(), sign::url(files.secret(), f, room.as_str(), exp))).collect();
        let conn = client.conn.clone();
        self.stage(&conn, wire::encode(&ServerMsg::FileUrls { room: room.as_str(), urls, exp }));
        Ok(())
    }

    /// Redis mode: a message this instance stored; its files are recorded as posted.
    pub(super) fn files_posted(&self, room: &RoomName, seq: u64, json: &[u8]) {
        #[derive(serde::Deserialize)]
        struct WithFiles {
            #[serde(default)]
            files: Vec<FileDesc>,
            #[serde(default)]
            ts: u64,
        }
        let Some(store) = &self.files else { return };
        let Ok(m) = serde_json::from_slice::<WithFiles>(json) else { return };
        if !m.files.is_empty() {
            store.tell_posted(room.as_str(), seq, m.files.into_iter().map(|f| f.id).collect(), m.ts);
        }
    }
}
