//! Untrusted text made safe to show: control and format characters removed, lengths bounded,
//! identifiers masked. Pure, and below every module that shows text from outside (names and tags
//! from the cloud account, config values, credentials).

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

/// Control characters and the Unicode format (Cf) characters that can reorder or hide text.
pub fn is_invisible(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{00AD}'
                | '\u{061C}'
                | '\u{115F}'
                | '\u{1160}'
                | '\u{180E}'
                | '\u{200B}'..='\u{200F}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2060}'..='\u{206F}'
                | '\u{3164}'
                | '\u{FE00}'..='\u{FE0F}'
                | '\u{FEFF}'
                | '\u{FFA0}'
                | '\u{FFF9}'..='\u{FFFB}'
                | '\u{E0000}'..='\u{E007F}'
        )
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncate_marks_the_cut() {
        assert_eq!(truncate("abcdef", 4), "abc…");
        assert_eq!(truncate("abc", 4), "abc");
    }
}
