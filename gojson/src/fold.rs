//! Go's case-insensitive key match: `strings.EqualFold`, i.e. Unicode simple case folding, so
//! `K` (U+212A KELVIN SIGN) matches `k` and `ſ` (U+017F LATIN SMALL LETTER LONG S) matches `s`, but
//! `ß` does not match `ss` (that would be full folding) and the Turkic dotted/dotless i fold only
//! to themselves.

use regex_syntax::hir::{ClassUnicode, ClassUnicodeRange};

/// The representative of `c`'s simple case folding orbit: the smallest code point in it (what
/// Go's `encoding/json` `foldRune` returns). ASCII letters give their upper case.
pub fn fold_char(c: char) -> char {
    if c.is_ascii() {
        return c.to_ascii_uppercase();
    }
    let mut class = ClassUnicode::new([ClassUnicodeRange::new(c, c)]);
    class.case_fold_simple();
    class.ranges().first().map_or(c, |r| r.start())
}

/// `a` and `b` are equal under Go's `strings.EqualFold`.
pub fn equal_fold(a: &str, b: &str) -> bool {
    let (mut x, mut y) = (a.chars(), b.chars());
    loop {
        match (x.next(), y.next()) {
            (None, None) => return true,
            (Some(p), Some(q)) if p == q || fold_char(p) == fold_char(q) => {}
            _ => return false,
        }
    }
}

/// The struct field a JSON object key sets, as Go decides it: the field named exactly `key`, else
/// the first field (in declaration order) equal to it under [`equal_fold`], else none (an unknown
/// key).
pub fn field_for<'f>(key: &str, fields: &[&'f str]) -> Option<&'f str> {
    fields
        .iter()
        .find(|f| **f == key)
        .or_else(|| fields.iter().find(|f| equal_fold(f, key)))
        .copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ascii_and_go_special_folds() {
        assert!(equal_fold("HostPort", "hostPort"));
        assert!(equal_fold("hostip", "HOSTIP"));
        assert!(!equal_fold("hostPort", "host_port"));
        assert!(!equal_fold("port", "ports"));
        // U+212A KELVIN SIGN folds with k, U+017F LONG S with s (strings.EqualFold does too).
        assert!(equal_fold("\u{212A}ind", "kind"));
        assert!(equal_fold("ma\u{17F}k", "MASK"));
        assert!(
            equal_fold("\u{3a3}\u{3c3}", "\u{3c2}\u{3a3}"),
            "Greek sigma forms"
        );
        // Simple folding only: no ß/ss, and the Turkic dotted capital I stays apart from i.
        assert!(!equal_fold("stra\u{df}e", "strasse"));
        assert!(!equal_fold("\u{130}d", "id"));
        assert!(!equal_fold("\u{131}d", "id"));
        assert!(equal_fold("\u{df}", "\u{1e9e}"), "ß and capital sharp s");
    }

    #[test]
    fn exact_match_first_then_first_folded_field() {
        let fields = ["name", "Name", "NAME2", "hostIP"];
        assert_eq!(field_for("Name", &fields), Some("Name"));
        assert_eq!(field_for("name", &fields), Some("name"));
        assert_eq!(field_for("nAME", &fields), Some("name"), "first in order");
        assert_eq!(field_for("HostIP", &fields), Some("hostIP"));
        assert_eq!(field_for("colour", &fields), None);
    }
}
