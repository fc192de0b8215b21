//! What a message frame says about each file it carries ([`FileDesc`]), and the
//! bounds of a message's `files`. The server fills a description in from the file
//! store; a client only ever names file ids. Never touches sockets or files.

use serde::{Deserialize, Serialize};

/// Most files one message may carry.
pub const MAX_FILES_PER_MSG: usize = 10;
/// Longest file id a client may name.
pub const MAX_FILE_ID_CHARS: usize = 64;
/// Most file ids one `file_urls` may ask for.
pub const MAX_FILE_URLS: usize = 100;

/// One file of a message: its id, sanitized name, size in bytes, the type sniffed
/// from its bytes, and for images their width and height in pixels.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileDesc {
    pub id: String,
    pub name: String,
    pub size: u64,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub width: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub height: Option<u32>,
}

impl FileDesc {
    /// A description the server has not filled in yet: only the id a client named.
    pub fn named(id: String) -> FileDesc {
        FileDesc { id, ..FileDesc::default() }
    }

    /// True once the file store filled it in (a sniffed type is never empty).
    pub fn is_resolved(&self) -> bool {
        !self.kind.is_empty()
    }
}
