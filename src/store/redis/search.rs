//! What a search matches in Redis mode, where no full-text index exists: the rule of
//! single-instance mode's SQLite FTS5 (`unicode61` tokenizer, prefix terms), applied to
//! one message text at a time.
//!
//! A text is cut into words at every character that is not a letter or digit; each word
//! of the query must begin some word of the text. Both sides are compared lowercased,
//! with the diacritics of Latin letters removed (`Köln` matches `koln`), as FTS5's
//! `remove_diacritics` does. Pure functions: no I/O, no Redis.

use icu_normalizer::DecomposingNormalizerBorrowed;

use crate::store::read::search_words;

/// A search's words, folded once; [`Matcher::matches`] runs on every message scanned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matcher {
    words: Vec<String>,
}

impl Matcher {
    /// `None` when `q` holds no letter or digit (nothing can match).
    pub fn new(q: &str) -> Option<Matcher> {
        let words: Vec<String> = search_words(q).map(fold).collect();
        (!words.is_empty()).then_some(Matcher { words })
    }

    /// Whether every word of the query begins some word of `text`.
    pub fn matches(&self, text: &str) -> bool {
        let folded = fold(text);
        let mut text_words = folded.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty());
        let mut missing: Vec<&str> = self.words.iter().map(String::as_str).collect();
        text_words.any(|w| {
            missing.retain(|q| !w.starts_with(q));
            missing.is_empty()
        })
    }
}

/// Lowercased, Latin letters without their diacritics.
fn fold(text: &str) -> String {
    const NFD: DecomposingNormalizerBorrowed<'static> = DecomposingNormalizerBorrowed::new_nfd();
    let mut out = String::with_capacity(text.len());
    let mut buf = [0u8; 4];
    for c in text.chars().flat_map(char::to_lowercase) {
        if c.is_ascii() || !is_latin(c) {
            out.push(c);
            continue;
        }
        // The decomposition starts with the base letter; the marks after it are dropped.
        let decomposed = NFD.normalize(c.encode_utf8(&mut buf));
        out.push(decomposed.chars().next().unwrap_or(c));
    }
    out
}

/// Latin-1 Supplement, Latin Extended-A and -B, Latin Extended Additional: the letters
/// FTS5 folds to their base letter.
fn is_latin(c: char) -> bool {
    matches!(c, '\u{00C0}'..='\u{024F}' | '\u{1E00}'..='\u{1EFF}')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(q: &str) -> Matcher {
        Matcher::new(q).expect("q has a word")
    }

    #[test]
    fn every_word_must_begin_a_word_of_the_text() {
        assert!(m("hello").matches("Hello world"));
        assert!(m("wor hel").matches("Hello world"), "any order, prefixes");
        assert!(!m("hello there").matches("Hello world"), "every word");
        assert!(!m("ello").matches("Hello world"), "the middle of a word is not a match");
        assert!(m("don").matches("Don't"), "punctuation separates words");
    }

    #[test]
    fn case_and_latin_diacritics_are_folded() {
        assert!(m("koln").matches("Grüße aus Köln"));
        assert!(m("KÖLN grusse").matches("grüsse aus koln"));
        assert!(m("élan").matches("ELAN"));
        assert!(m("привет").matches("Привет, мир"), "other scripts are lowercased");
    }

    #[test]
    fn cjk_runs_are_words_as_fts5_cuts_them() {
        assert!(m("你好").matches("你好，世界"));
        assert!(m("世").matches("你好，世界"), "a word's beginning");
        assert!(!m("好").matches("你好，世界"), "not the beginning of a word");
        assert!(!m("聊天").matches("中文聊天记录"));
    }

    #[test]
    fn a_query_without_words_matches_nothing() {
        assert_eq!(Matcher::new("\" * - ("), None);
        assert_eq!(Matcher::new(""), None);
    }
}
