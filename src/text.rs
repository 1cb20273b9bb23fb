//! Untrusted text (what members type, what Tencent and the cloud account return, what the
//! environment claims, config values, credentials) made safe to show: one definition of the
//! characters that make a line read differently from what it says, shared by Discord messages
//! ([`crate::discord::messages`]), quoted input ([`crate::ids::Quoted`]), the catalog's names and
//! tags, and the auditors' reports; lengths bounded; identifiers masked.

use std::borrow::Cow;

/// Bidirectional controls and other invisible format characters: they can make a line read
/// differently from what it says (U+202E reverses the text after it).
pub fn is_format_char(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}' | '\u{1160}' | '\u{180E}'
        | '\u{200B}'..='\u{200F}' | '\u{2028}' | '\u{2029}' | '\u{202A}'..='\u{202E}'
        | '\u{2800}' | '\u{3164}' | '\u{FE00}'..='\u{FE0F}'
        | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{206F}' | '\u{FEFF}' | '\u{FFF9}'..='\u{FFFB}'
        | '\u{FFA0}' | '\u{E0000}'..='\u{E007F}')
}

/// A character a terminal, a spreadsheet or a browser must not receive as is: C0 and C1 controls
/// (ESC starts ANSI sequences; U+009B is a one-character CSI) and the format characters above.
pub fn is_hidden(c: char) -> bool {
    c.is_control() || is_format_char(c)
}

/// `s` with every hidden character written as a visible Rust-style escape (`\n`, `\u{1b}`,
/// `\u{202e}`), so the reader sees that it was there and what it was. Borrowed when clean.
pub fn visible(s: &str) -> Cow<'_, str> {
    if !s.chars().any(is_hidden) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        if is_hidden(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Valid JSON with every hidden character inside its strings written as a `\uXXXX` escape
/// (surrogate pairs above U+FFFF). The value a JSON reader decodes is unchanged; the bytes carry no
/// control or direction character to a terminal. JSON allows U+0000 to U+001F only escaped inside
/// strings, so those left raw are whitespace between tokens and stay; serde_json leaves DEL, the
/// C1 controls and the format characters raw, and those can only be inside strings.
pub fn json_escape_hidden(json: &str) -> Cow<'_, str> {
    let hidden = |c: char| c >= ' ' && is_hidden(c);
    if !json.chars().any(hidden) {
        return Cow::Borrowed(json);
    }
    let mut out = String::with_capacity(json.len() + 16);
    for c in json.chars() {
        if hidden(c) {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Removes control and format characters (bidi overrides and marks, zero-width characters,
/// soft hyphens), trims, and keeps at most `max` characters.
pub fn clean(s: &str, max: usize) -> String {
    s.chars()
        .filter(|c| !is_invisible(*c))
        .take(max)
        .collect::<String>()
        .trim()
        .to_owned()
}

/// Control characters and the format characters that can reorder or hide text: [`is_hidden`].
pub fn is_invisible(c: char) -> bool {
    is_hidden(c)
}

/// At most `max` characters, the last being `…` when something was cut.
pub fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Shows enough of an identifier to tell keys apart, never enough to use one.
pub fn mask(s: &str) -> String {
    let visible: String = s.chars().take(4).collect();
    format!("{visible}…({} chars)", s.chars().count())
}

/// The characters of a reason an approver can read: hidden ones (zero-width spaces, bidi marks,
/// controls) are not counted, and a run of whitespace counts once, so twenty invisible
/// characters or two letters padded with spaces are not twenty characters of reason.
pub fn readable_chars(reason: &str) -> usize {
    let mut count = 0;
    let mut gap = false;
    for c in reason
        .chars()
        .filter(|c| !is_hidden(*c) || c.is_whitespace())
    {
        if c.is_whitespace() {
            gap = count > 0;
        } else {
            count += 1 + usize::from(gap);
            gap = false;
        }
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidden_characters_become_visible_escapes() {
        assert_eq!(visible("plain"), Cow::Borrowed("plain"));
        assert_eq!(
            visible("a\u{1b}[31mb\u{202E}c\u{9b}d\ne"),
            "a\\u{1b}[31mb\\u{202e}c\\u{9b}d\\ne"
        );
        assert_eq!(visible("tag\u{E0041}"), "tag\\u{e0041}");
    }

    #[test]
    fn json_keeps_its_value_and_loses_its_hidden_bytes() {
        let original = "x\u{202E}y\u{1b}z\u{85}w\u{E0041}";
        let json =
            serde_json::to_string_pretty(&serde_json::json!({ "reason": original })).unwrap();
        let safe = json_escape_hidden(&json);
        assert!(!safe.chars().any(|c| is_hidden(c) && c != '\n'), "{safe}");
        assert!(
            safe.contains(r"\u202e") && safe.contains(r"\udb40\udc41"),
            "{safe}"
        );
        let back: serde_json::Value = serde_json::from_str(&safe).unwrap();
        assert_eq!(back["reason"], original);
    }

    #[test]
    fn truncate_marks_the_cut() {
        assert_eq!(truncate("abcdef", 4), "abc…");
        assert_eq!(truncate("abc", 4), "abc");
    }
}
