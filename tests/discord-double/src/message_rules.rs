//! What Discord refuses in a message body, wherever a message is created or edited (channel
//! posts, interaction responses, follow-ups, `@original` and follow-up edits): Discord's
//! "Embed Limits" (resources/message.mdx) and its 2,000-character content.
//!
//! Discord's words: "All of the following limits are measured inclusively. Leading and
//! trailing whitespace characters are not included (they are trimmed automatically)", and
//! "the combined sum of characters in all `title`, `description`, `field.name`,
//! `field.value`, `footer.text`, and `author.name` fields across all embeds attached to a
//! message must not exceed 6000 characters. Violating any of these constraints will result
//! in a `Bad Request` response." A character is a Unicode code point, as serenity 0.12.5
//! counts them (`CreateEmbed::check_length`: `chars().count()`), not a UTF-16 unit. A field
//! whose name or value is empty once trimmed is refused as missing, as Discord does.
//!
//! Each refusal is 400 50035 "Invalid Form Body" with the offending field's path; the string
//! codes are Discord's as seen in its answers (its documentation lists none).

use serde_json::Value;

use crate::state::ApiError;

/// Message `content`.
pub const MAX_CONTENT: usize = 2000;
/// Embeds in one message.
pub const MAX_EMBEDS: usize = 10;
/// `title`.
pub const MAX_TITLE: usize = 256;
/// `description`.
pub const MAX_DESCRIPTION: usize = 4096;
/// Fields in one embed.
pub const MAX_FIELDS: usize = 25;
/// `field.name`.
pub const MAX_FIELD_NAME: usize = 256;
/// `field.value`.
pub const MAX_FIELD_VALUE: usize = 1024;
/// `footer.text`.
pub const MAX_FOOTER: usize = 2048;
/// `author.name`.
pub const MAX_AUTHOR: usize = 256;
/// Every embed's title, description, field names and values, footer text and author name
/// together.
pub const MAX_EMBEDS_TOTAL: usize = 6000;

/// Characters as Discord counts them: code points, once leading and trailing whitespace is
/// trimmed.
pub fn discord_chars(s: &str) -> usize {
    s.trim().chars().count()
}

fn path(prefix: &str, rest: &str) -> String {
    if prefix.is_empty() {
        rest.to_owned()
    } else {
        format!("{prefix}.{rest}")
    }
}

fn too_long(field: &str, max: usize) -> ApiError {
    ApiError::invalid_form(field, "BASE_TYPE_MAX_LENGTH", &format!("Must be {max} or fewer in length."))
}

/// The embed texts Discord sums, with their paths.
fn counted_texts(embeds: &[Value]) -> Vec<(String, &str, usize)> {
    fn push<'a>(out: &mut Vec<(String, &'a str, usize)>, p: String, v: &'a Value, max: usize) {
        if let Some(s) = v.as_str() {
            out.push((p, s, max));
        }
    }
    let mut out = Vec::new();
    for (i, e) in embeds.iter().enumerate() {
        push(&mut out, format!("embeds.{i}.title"), &e["title"], MAX_TITLE);
        push(&mut out, format!("embeds.{i}.description"), &e["description"], MAX_DESCRIPTION);
        for (j, f) in e["fields"].as_array().into_iter().flatten().enumerate() {
            push(&mut out, format!("embeds.{i}.fields.{j}.name"), &f["name"], MAX_FIELD_NAME);
            push(&mut out, format!("embeds.{i}.fields.{j}.value"), &f["value"], MAX_FIELD_VALUE);
        }
        push(&mut out, format!("embeds.{i}.footer.text"), &e["footer"]["text"], MAX_FOOTER);
        push(&mut out, format!("embeds.{i}.author.name"), &e["author"]["name"], MAX_AUTHOR);
    }
    out
}

/// The sum Discord holds to [`MAX_EMBEDS_TOTAL`] for a message's `embeds`.
pub fn embeds_total(embeds: &[Value]) -> usize {
    counted_texts(embeds).iter().map(|(_, s, _)| discord_chars(s)).sum()
}

/// Checks a message body (`prefix`: where it sits in the request, `"data"` in an interaction
/// callback, else `""`); `Err` is Discord's 400 for the first rule broken.
pub fn check(body: &Value, prefix: &str) -> Result<(), ApiError> {
    if let Some(c) = body["content"].as_str() {
        if c.chars().count() > MAX_CONTENT {
            return Err(too_long(&path(prefix, "content"), MAX_CONTENT));
        }
    }
    let Some(embeds) = body["embeds"].as_array() else { return Ok(()) };
    if embeds.len() > MAX_EMBEDS {
        return Err(too_long(&path(prefix, "embeds"), MAX_EMBEDS));
    }
    for (i, e) in embeds.iter().enumerate() {
        let Some(fields) = e["fields"].as_array() else { continue };
        if fields.len() > MAX_FIELDS {
            return Err(too_long(&path(prefix, &format!("embeds.{i}.fields")), MAX_FIELDS));
        }
        for (j, f) in fields.iter().enumerate() {
            for part in ["name", "value"] {
                if f[part].as_str().is_none_or(|s| s.trim().is_empty()) {
                    let at = path(prefix, &format!("embeds.{i}.fields.{j}.{part}"));
                    return Err(ApiError::invalid_form(&at, "BASE_TYPE_REQUIRED", "This field is required"));
                }
            }
        }
    }
    for (at, s, max) in counted_texts(embeds) {
        if discord_chars(s) > max {
            return Err(too_long(&path(prefix, &at), max));
        }
    }
    let total = embeds_total(embeds);
    if total > MAX_EMBEDS_TOTAL {
        return Err(ApiError::invalid_form(
            &path(prefix, "embeds"),
            "MAX_EMBED_SIZE_EXCEEDED",
            &format!("Embed size exceeds maximum size of {MAX_EMBEDS_TOTAL}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn field_errors(e: &ApiError) -> String {
        e.body()["errors"].to_string()
    }

    #[test]
    fn characters_are_code_points_after_trimming() {
        assert_eq!(discord_chars("  abc \n"), 3);
        assert_eq!(discord_chars("é😀"), 2, "code points, not UTF-16 units (😀 is two)");
    }

    #[test]
    fn six_thousand_characters_pass_and_one_more_is_refused_across_embeds() {
        let embed = |n: usize| json!({"title": "t".repeat(100), "description": "d".repeat(n)});
        let ok = json!({"embeds": [embed(2900), embed(2900)]});
        assert_eq!(embeds_total(ok["embeds"].as_array().unwrap()), 6000);
        assert!(check(&ok, "").is_ok());
        let over = json!({"embeds": [embed(2900), embed(2901)]});
        let e = check(&over, "").unwrap_err();
        assert_eq!((e.status, e.code), (400, 50035));
        assert!(field_errors(&e).contains("MAX_EMBED_SIZE_EXCEEDED"), "{}", field_errors(&e));
        // Whitespace around a text does not count.
        let padded = json!({"embeds": [embed(2900), {"title": "t".repeat(100), "description": format!("  {}  ", "d".repeat(2900))}]});
        assert!(check(&padded, "").is_ok());
    }

    #[test]
    fn a_blank_field_name_or_value_is_refused_with_its_path() {
        for (name, value, at) in
            [("", "x", "name"), ("x", "", "value"), ("x", " \n\t", "value"), ("\u{3000}", "x", "name")]
        {
            let body = json!({"embeds": [{"title": "t", "fields": [{"name": "ok", "value": "ok"}, {"name": name, "value": value}]}]});
            let e = check(&body, "data").unwrap_err();
            let errors = e.body()["errors"].clone();
            assert_eq!(
                errors["data"]["embeds"]["0"]["fields"]["1"][at]["_errors"][0]["code"], "BASE_TYPE_REQUIRED",
                "{name:?}/{value:?}: {errors}"
            );
        }
    }

    #[test]
    fn each_text_has_its_own_limit() {
        let e = check(&json!({"embeds": [{"title": "t".repeat(257)}]}), "").unwrap_err();
        assert!(field_errors(&e).contains("BASE_TYPE_MAX_LENGTH"));
        let fields: Vec<Value> = (0..26).map(|_| json!({"name": "n", "value": "v"})).collect();
        assert!(check(&json!({"embeds": [{"fields": fields}]}), "").is_err());
        assert!(check(&json!({"content": "x".repeat(2001)}), "").is_err());
        assert!(check(&json!({"content": "x".repeat(2000)}), "").is_ok());
    }
}
