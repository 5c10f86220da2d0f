//! Showing user-typed text in Discord messages and embeds as typed: no
//! mentions, markdown, masked links or hidden characters.

/// Shows user-supplied text (key names, ban reasons) as typed in Discord
/// messages and embeds: it must not form mentions (`@everyone`, `<@id>`,
/// `<#id>`, `<t:…>`), markdown (bold, strikethrough, spoilers, headings,
/// quotes, lists) or masked links (`[text](https://…)`, which would show
/// `text` and lead elsewhere), and characters that are invisible or reorder
/// text (zero-width, bidirectional controls, BOM, other controls) are shown
/// as `<U+202E>` rather than left to hide or disguise it. Markdown
/// characters get a backslash, which Discord shows as the character itself;
/// a backtick becomes `'` (it closes the inline code names sit beside).
/// The bot's own replies (`bot::render::safe`) use this too.
pub fn escape(s: &str) -> String {
    escape_within(s, usize::MAX)
}

/// [`escape`], at most `max` characters long (Discord's limit for where it
/// goes: escaping can make a text several times longer); a cut text ends in
/// `…`, never inside an escape.
pub fn escape_within(s: &str, max: usize) -> String {
    let mut pieces = Vec::with_capacity(s.len());
    let mut line_start = true;
    for c in s.chars() {
        let piece: std::borrow::Cow<'static, str> = match c {
            '`' => "'".into(),
            '@' => "@\u{200b}".into(),
            '\\' | '*' | '_' | '~' | '|' | '[' | ']' | '(' | ')' | '<' => format!("\\{c}").into(),
            // Headings, quotes, lists and subtext, at the start of a line.
            '#' | '>' | '-' | '+' if line_start => format!("\\{c}").into(),
            '\n' => "\n".into(),
            c if is_hidden(c) => format!("\\<U+{:04X}>", u32::from(c)).into(),
            c => c.to_string().into(),
        };
        pieces.push(piece);
        line_start = c == '\n' || (line_start && c == ' ');
    }
    let total: usize = pieces.iter().map(|p| p.chars().count()).sum();
    if total <= max {
        return pieces.concat();
    }
    let mut out = String::new();
    let mut len = 0;
    for piece in pieces {
        let n = piece.chars().count();
        if len + n + 1 > max {
            break;
        }
        out.push_str(&piece);
        len += n;
    }
    out.push('…');
    out
}

/// Shows untrusted text (a leak report's `source` and `url`) in an inline
/// code span: Discord renders nothing inside one (no link, no mention, no
/// markdown), so the text needs no backslashes, only what could end the
/// span or hide in it: a backtick becomes `'`, a line break a space, and an
/// invisible or bidi character `<U+XXXX>`. At most `max` characters inside
/// the span (a cut text ends in `…`); empty text shows as `(empty)`.
pub fn code_span(s: &str, max: usize) -> String {
    let mut inside = String::new();
    let mut len = 0;
    for c in s.chars() {
        let piece = match c {
            '`' => "'".to_owned(),
            '\n' | '\r' => " ".to_owned(),
            c if is_hidden(c) => format!("<U+{:04X}>", u32::from(c)),
            c => c.to_string(),
        };
        let n = piece.chars().count();
        if len + n + 1 > max {
            inside.push('…');
            break;
        }
        inside.push_str(&piece);
        len += n;
    }
    if inside.trim().is_empty() {
        return "(empty)".to_owned();
    }
    format!("`{inside}`")
}

/// Characters that show nothing or change how the text around them reads.
fn is_hidden(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{00AD}' // soft hyphen
                | '\u{034F}' // combining grapheme joiner
                | '\u{061C}' // Arabic letter mark
                | '\u{115F}' | '\u{1160}' | '\u{3164}' | '\u{FFA0}' // Hangul fillers
                | '\u{17B4}' | '\u{17B5}'
                | '\u{180B}'..='\u{180F}' // Mongolian selectors and vowel separator
                | '\u{200B}'..='\u{200F}' // zero-width space, joiners, LRM, RLM
                | '\u{2028}'..='\u{202E}' // line/paragraph separators, bidi embeddings and overrides
                | '\u{2060}'..='\u{206F}' // word joiner, invisible operators, bidi isolates
                | '\u{FEFF}' // byte order mark
                | '\u{FFF9}'..='\u{FFFB}' // interlinear annotation
                | '\u{E0000}'..='\u{E007F}' // tags
        )
}

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn a_code_span_shows_untrusted_text_as_typed_and_never_ends_early() {
        use super::code_span;
        let cases = [
            ("https://evil.example/a_b", "`https://evil.example/a_b`"),
            ("[click](https://evil.example) @everyone <@1>", "`[click](https://evil.example) @everyone <@1>`"),
            ("a`b``c", "`a'b''c`"),
            ("two\nlines", "`two lines`"),
            ("pay\u{202E}lmth", "`pay<U+202E>lmth`"),
            ("", "(empty)"),
            ("`", "`'`"),
        ];
        for (input, want) in cases {
            assert_eq!(code_span(input, 100), want, "showing {input:?}");
        }
        assert_eq!(code_span("abcdef", 4), "`abc…`");
        assert_eq!(code_span(&"x".repeat(300), 200).chars().count(), 202);
    }

    #[test]
    fn a_masked_link_stays_text() {
        assert_eq!(escape("[click](https://evil.example)"), "\\[click\\]\\(https://evil.example\\)");
    }

    #[test]
    fn mentions_and_markdown_are_shown_as_typed() {
        let cases = [
            ("@everyone", "@\u{200b}everyone"),
            ("<@123> <#456> <t:0:R>", "\\<@\u{200b}123> \\<#456> \\<t:0:R>"),
            ("**bold** __u__ ~~s~~ ||spoiler||", "\\*\\*bold\\*\\* \\_\\_u\\_\\_ \\~\\~s\\~\\~ \\|\\|spoiler\\|\\|"),
            ("`code`", "'code'"),
            ("back\\slash", "back\\\\slash"),
            ("# heading", "\\# heading"),
            ("> quote\n- item\n-# small", "\\> quote\n\\- item\n\\-# small"),
            ("game-server #1 > 0", "game-server #1 > 0"),
            ("plain name 42", "plain name 42"),
        ];
        for (input, want) in cases {
            assert_eq!(escape(input), want, "escaping {input:?}");
        }
    }

    #[test]
    fn invisible_and_bidi_characters_are_made_visible() {
        let cases = [
            ("a\u{200B}b", "a\\<U+200B>b"),
            ("pay\u{202E}lmth.exe", "pay\\<U+202E>lmth.exe"),
            ("\u{FEFF}bom", "\\<U+FEFF>bom"),
            ("x\u{2066}y\u{2069}", "x\\<U+2066>y\\<U+2069>"),
            ("joiner\u{200D}", "joiner\\<U+200D>"),
            ("bell\u{7}", "bell\\<U+0007>"),
            ("tag\u{E0041}", "tag\\<U+E0041>"),
        ];
        for (input, want) in cases {
            assert_eq!(escape(input), want, "escaping {input:?}");
        }
        for c in ('\u{200B}'..='\u{200F}').chain('\u{202A}'..='\u{202E}').chain('\u{2066}'..='\u{2069}') {
            assert!(!escape(&format!("a{c}b")).contains(c), "U+{:04X} left in", u32::from(c));
        }
    }

    #[test]
    fn a_cut_text_ends_in_an_ellipsis_never_inside_an_escape() {
        use super::escape_within;
        assert_eq!(escape_within("abc", 3), "abc");
        assert_eq!(escape_within("abcd", 3), "ab…");
        assert_eq!(escape_within("a[b", 3), "a…", "not a dangling backslash");
        let hidden = "\u{200B}".repeat(64);
        let cut = escape_within(&hidden, 256);
        assert!(cut.chars().count() <= 256 && cut.ends_with("<U+200B>…"), "{cut}");
    }

    #[test]
    fn accented_letters_and_emoji_pass_through() {
        assert_eq!(escape("Crème brûlée 🍮 ключ"), "Crème brûlée 🍮 ключ");
    }
}
