//! Text from outside (a config file, a dataset or remote name, a tool's
//! output) made safe to print on a terminal.

use std::borrow::Cow;
use std::fmt::Write as _;

/// `text` with every control character escaped, so that no byte of a
/// name or message can move the cursor, recolour the terminal or hide
/// text: C0 (ESC as `\u001b`, CR as `\r`), DEL, C1 (`\u009b`) and the
/// bidirectional overrides (`\u202e`). Newlines and tabs stay, as does
/// all other UTF-8. The escapes are JSON's: JSON text (which holds these
/// characters only inside strings) stays valid JSON of the same meaning.
#[must_use]
pub fn escape_controls(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            c if !needs_escape(c) => out.push(c),
            '\r' => out.push_str("\\r"),
            c => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
        }
    }
    Cow::Owned(out)
}

fn needs_escape(c: char) -> bool {
    (c.is_control() && c != '\n' && c != '\t')
        || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaped_json_is_the_same_json() {
        let value = serde_json::json!({"name": "a\u{7f}\u{9b}\u{202e}\u{1b}b"});
        let text = serde_json::to_string(&value).unwrap_or_default();
        let back: serde_json::Value =
            serde_json::from_str(&escape_controls(&text)).unwrap_or_default();
        assert_eq!(back, value);
    }

    #[test]
    fn control_characters_are_escaped_and_the_rest_kept() {
        assert_eq!(escape_controls("tank/data"), "tank/data");
        assert!(matches!(escape_controls("café ✓"), Cow::Borrowed(_)));
        assert_eq!(
            escape_controls("a\x1b[31mred\rb\x7f\u{9b}c\u{202e}d\ne\tf\0"),
            "a\\u001b[31mred\\rb\\u007f\\u009bc\\u202ed\ne\tf\\u0000"
        );
    }
}
