//! What a file is, from its first bytes (magic numbers), never from what the client
//! says; and for the four image types served inline (PNG, JPEG, GIF, WebP) their width
//! and height, read from the header so a page can reserve the space.
//!
//! Pure functions of bytes: no files, no sockets.

/// Bytes of a file's start kept for sniffing: a JPEG's size may follow up to 64 KiB
/// of EXIF and a few more segments.
pub const HEAD_BYTES: usize = 256 * 1024;

/// Largest width or height believed; a header claiming more is not a usable image.
const MAX_SIDE: u32 = 100_000;

/// The types served inline (everything else is an attachment).
pub const INLINE: [&str; 4] = ["image/png", "image/jpeg", "image/gif", "image/webp"];

/// What the bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sniffed {
    /// A MIME type (`application/octet-stream` when nothing is recognised).
    pub kind: &'static str,
    /// Width and height, for the inline image types.
    pub size: Option<(u32, u32)>,
}

/// Why bytes that start like an image are refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a valid {0} image: its header cannot be read")]
pub struct BadImage(pub &'static str);

/// Sniffs `head` (a file's first bytes, at most [`HEAD_BYTES`]).
pub fn sniff(head: &[u8]) -> Result<Sniffed, BadImage> {
    let image = |kind: &'static str, size: Option<(u32, u32)>| match size {
        Some((w, h)) if (1..=MAX_SIDE).contains(&w) && (1..=MAX_SIDE).contains(&h) => {
            Ok(Sniffed { kind, size: Some((w, h)) })
        }
        _ => Err(BadImage(short(kind))),
    };
    if head.starts_with(b"\x89PNG\r\n\x1a\n") {
        return image("image/png", png(head));
    }
    if head.starts_with(b"\xff\xd8\xff") {
        return image("image/jpeg", jpeg(head));
    }
    if head.starts_with(b"GIF87a") || head.starts_with(b"GIF89a") {
        return image("image/gif", gif(head));
    }
    if head.len() >= 12 && &head[..4] == b"RIFF" && &head[8..12] == b"WEBP" {
        return image("image/webp", webp(head));
    }
    Ok(Sniffed { kind: other(head), size: None })
}

/// The short name of an image type, for messages ("PNG").
pub fn short(kind: &str) -> &'static str {
    match kind {
        "image/png" => "PNG",
        "image/jpeg" => "JPEG",
        "image/gif" => "GIF",
        "image/webp" => "WebP",
        "image/svg+xml" => "SVG",
        _ => "image",
    }
}

/// The image type a file name's extension claims, if any.
pub fn claimed_by_name(name: &str) -> Option<&'static str> {
    let ext = name.rsplit_once('.')?.1.to_ascii_lowercase();
    Some(match ext.as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        _ => return None,
    })
}

/// The image type a `Content-Type` claims, if any (`image/jpg` read as JPEG).
pub fn claimed_by_type(content_type: &str) -> Option<String> {
    let t = content_type.split(';').next()?.trim().to_ascii_lowercase();
    let t = if t == "image/jpg" || t == "image/pjpeg" { "image/jpeg".to_owned() } else { t };
    t.starts_with("image/").then_some(t)
}

fn be16(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from(u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?)))
}

fn le16(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?)))
}

fn le24(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at + 3)?;
    Some(u32::from(s[0]) | u32::from(s[1]) << 8 | u32::from(s[2]) << 16)
}

fn png(b: &[u8]) -> Option<(u32, u32)> {
    if b.get(12..16)? != b"IHDR" {
        return None;
    }
    let w = u32::from_be_bytes(b.get(16..20)?.try_into().ok()?);
    let h = u32::from_be_bytes(b.get(20..24)?.try_into().ok()?);
    Some((w, h))
}

fn gif(b: &[u8]) -> Option<(u32, u32)> {
    Some((le16(b, 6)?, le16(b, 8)?))
}

/// Walks the JPEG's segments to its frame header (SOFn).
fn jpeg(b: &[u8]) -> Option<(u32, u32)> {
    let mut at = 2;
    loop {
        while *b.get(at)? != 0xff {
            at += 1;
        }
        while *b.get(at)? == 0xff {
            at += 1;
        }
        let marker = *b.get(at)?;
        at += 1;
        match marker {
            0xd8 | 0x01 | 0xd0..=0xd7 => continue, // no length
            0xc0..=0xcf if !matches!(marker, 0xc4 | 0xc8 | 0xcc) => {
                return Some((be16(b, at + 5)?, be16(b, at + 3)?));
            }
            0xd9 | 0xda => return None, // end, or image data before any frame header
            _ => at += be16(b, at)? as usize,
        }
    }
}

fn webp(b: &[u8]) -> Option<(u32, u32)> {
    match b.get(12..16)? {
        b"VP8 " if b.get(23..26)? == b"\x9d\x01\x2a" => Some((le16(b, 26)? & 0x3fff, le16(b, 28)? & 0x3fff)),
        b"VP8L" if *b.get(20)? == 0x2f => {
            let bits = u32::from_le_bytes(b.get(21..25)?.try_into().ok()?);
            Some(((bits & 0x3fff) + 1, ((bits >> 14) & 0x3fff) + 1))
        }
        b"VP8X" => Some((le24(b, 24)? + 1, le24(b, 27)? + 1)),
        _ => None,
    }
}

/// Types worth naming that are never served inline.
fn other(b: &[u8]) -> &'static str {
    if b.starts_with(b"%PDF-") {
        return "application/pdf";
    }
    if b.starts_with(b"PK\x03\x04") {
        return "application/zip";
    }
    let text_start: Vec<u8> = b.iter().skip_while(|c| c.is_ascii_whitespace()).take(512).copied().collect();
    let lower = String::from_utf8_lossy(&text_start).to_ascii_lowercase();
    if lower.starts_with("<svg") || (lower.starts_with("<?xml") && lower.contains("<svg")) {
        return "image/svg+xml";
    }
    if ["<!doctype html", "<html", "<script", "<head", "<body", "<iframe"].iter().any(|p| lower.starts_with(p)) {
        return "text/html";
    }
    if !b.contains(&0) && std::str::from_utf8(&b[..b.len().min(4096)]).is_ok_or_cut(b.len().min(4096)) {
        return "text/plain";
    }
    "application/octet-stream"
}

/// UTF-8 up to a cut that may split the last character.
trait OkOrCut {
    fn is_ok_or_cut(&self, len: usize) -> bool;
}

impl OkOrCut for Result<&str, std::str::Utf8Error> {
    fn is_ok_or_cut(&self, len: usize) -> bool {
        match self {
            Ok(_) => true,
            Err(e) => e.error_len().is_none() && e.valid_up_to() + 4 > len,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A minimal PNG header of the given size (enough for the sniffer).
    pub fn png_head(w: u32, h: u32) -> Vec<u8> {
        let mut b = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR".to_vec();
        b.extend_from_slice(&w.to_be_bytes());
        b.extend_from_slice(&h.to_be_bytes());
        b.extend_from_slice(&[8, 6, 0, 0, 0, 0, 0, 0, 0]);
        b
    }

    #[test]
    fn images_and_their_sizes() {
        assert_eq!(sniff(&png_head(640, 480)).unwrap(), Sniffed { kind: "image/png", size: Some((640, 480)) });
        let gif = b"GIF89a\x20\x03\x58\x02rest";
        assert_eq!(sniff(gif).unwrap().size, Some((800, 600)));
        // SOI, an APP0 segment, then SOF0 with height 0x0100, width 0x0200.
        let jpeg = b"\xff\xd8\xff\xe0\x00\x04ab\xff\xc0\x00\x11\x08\x01\x00\x02\x00\x03";
        assert_eq!(sniff(jpeg).unwrap(), Sniffed { kind: "image/jpeg", size: Some((512, 256)) });
        let mut vp8x = b"RIFF\0\0\0\0WEBPVP8X\x0a\0\0\0\0\0\0\0".to_vec();
        vp8x.extend_from_slice(&[0x7f, 0x02, 0x00, 0xdf, 0x01, 0x00]);
        assert_eq!(sniff(&vp8x).unwrap().size, Some((640, 480)));
    }

    #[test]
    fn a_broken_image_header_is_refused() {
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\nnot really"), Err(BadImage("PNG")));
        assert_eq!(sniff(&png_head(0, 10)), Err(BadImage("PNG")));
        assert_eq!(sniff(b"\xff\xd8\xff\xda"), Err(BadImage("JPEG")));
    }

    #[test]
    fn other_types_by_their_bytes() {
        assert_eq!(sniff(b"  <!DOCTYPE html><p>x").unwrap().kind, "text/html");
        assert_eq!(sniff(b"<?xml version='1.0'?><svg xmlns=''/>").unwrap().kind, "image/svg+xml");
        assert_eq!(sniff(b"%PDF-1.7").unwrap().kind, "application/pdf");
        assert_eq!(sniff("héllo\n".as_bytes()).unwrap().kind, "text/plain");
        assert_eq!(sniff(b"\0\x01\x02").unwrap().kind, "application/octet-stream");
    }

    #[test]
    fn claims() {
        assert_eq!(claimed_by_name("Cat.JPG"), Some("image/jpeg"));
        assert_eq!(claimed_by_name("notes.txt"), None);
        assert_eq!(claimed_by_type("image/jpg; q=1").as_deref(), Some("image/jpeg"));
        assert_eq!(claimed_by_type("text/plain"), None);
    }
}
