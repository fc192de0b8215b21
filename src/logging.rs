//! The process log: env_logger with one of two line formats. `text` (the default) is
//! for people; `json` writes one JSON object per line for log shippers (ts, level,
//! target, module, file, line, message).
//!
//! Credentials never reach the log: the code that logs keeps tokens, open-mode keys,
//! SSE tickets, API keys and webhook secrets out of its messages, and [`redact`] masks
//! anything shaped like one that slips through anyway, in both formats. This module
//! must never log on its own, nor read flags or the environment beyond `RUST_LOG`.

use std::borrow::Cow;
use std::io::Write;

/// How each log line is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// `[ts LEVEL target] message`, for a terminal or journald.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Installs the global logger. `level` is the default filter; `RUST_LOG` overrides it.
pub fn init(level: &str, format: LogFormat) {
    let mut builder = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level));
    match format {
        LogFormat::Text => builder.format(|f, record| {
            let style = f.default_level_style(record.level());
            let msg = record.args().to_string();
            writeln!(
                f,
                "[{} {style}{:<5}{style:#} {}] {}",
                f.timestamp(),
                record.level(),
                record.target(),
                redact(&msg)
            )
        }),
        LogFormat::Json => builder.write_style(env_logger::WriteStyle::Never).format(|f, record| {
            let msg = record.args().to_string();
            let line = serde_json::json!({
                "ts": f.timestamp_millis().to_string(),
                "level": record.level().as_str(),
                "target": record.target(),
                "module": record.module_path(),
                "file": record.file(),
                "line": record.line(),
                "message": redact(&msg),
            });
            writeln!(f, "{line}")
        }),
    };
    builder.init();
}

/// Query or form parameters whose values are credentials.
const SECRET_PARAMS: &[&str] = &["token=", "key=", "ticket=", "session=", "secret=", "access_token="];

/// Masks credential-shaped parts of a log message: the values of `token=`, `key=`,
/// `ticket=`, `session=`, `secret=` parameters, whatever follows `Bearer `, and
/// JWT-shaped words (`eyJ….….…`). Messages without any are returned as they are.
pub fn redact(msg: &str) -> Cow<'_, str> {
    let suspicious = msg.contains("eyJ") || msg.contains("Bearer ") || SECRET_PARAMS.iter().any(|p| msg.contains(p));
    if !suspicious {
        return Cow::Borrowed(msg);
    }
    let mut out = String::with_capacity(msg.len());
    let mut rest = msg;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix("Bearer ") {
            out.push_str("Bearer [redacted]");
            rest = skip_value(after);
            continue;
        }
        if let Some(p) = SECRET_PARAMS.iter().find(|p| rest.starts_with(**p) && at_word_start(msg, rest)) {
            out.push_str(p);
            out.push_str("[redacted]");
            rest = skip_value(&rest[p.len()..]);
            continue;
        }
        if rest.starts_with("eyJ") && at_word_start(msg, rest) && looks_like_jwt(rest) {
            out.push_str("[redacted]");
            rest = skip_value(rest);
            continue;
        }
        let c = rest.chars().next().unwrap_or(' ');
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    Cow::Owned(out)
}

/// True when `rest` (a suffix of `msg`) starts a word: `key=` inside `monkey=` is not
/// a parameter name.
fn at_word_start(msg: &str, rest: &str) -> bool {
    let start = msg.len() - rest.len();
    msg[..start].chars().next_back().is_none_or(|c| !c.is_alphanumeric() && c != '_')
}

/// The rest of `s` after a parameter value (ends at whitespace, `&`, quotes, `,`, `)`).
fn skip_value(s: &str) -> &str {
    let end = s.find(|c: char| c.is_whitespace() || "&\"',;)]}".contains(c)).unwrap_or(s.len());
    &s[end..]
}

fn looks_like_jwt(s: &str) -> bool {
    let word = &s[..s.len() - skip_value(s).len()];
    word.split('.').count() == 3 && word.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn credentials_are_masked_and_other_text_kept() {
        assert_eq!(redact("refused 127.0.0.1 (401): bad token"), "refused 127.0.0.1 (401): bad token");
        assert_eq!(redact("GET /ws?name=a&key=s3cret&x=1"), "GET /ws?name=a&key=[redacted]&x=1");
        assert_eq!(redact("url /sse?ticket=abc def"), "url /sse?ticket=[redacted] def");
        assert_eq!(redact("Authorization: Bearer k-123 ok"), "Authorization: Bearer [redacted] ok");
        assert_eq!(redact("got eyJhbGc.eyJzdWI.sig-_x here"), "got [redacted] here");
        assert_eq!(redact("monkey=1 eyJnot-a-jwt"), "monkey=1 eyJnot-a-jwt");
        assert_eq!(redact("ünïcode key=é"), "ünïcode key=[redacted]");
    }
}
