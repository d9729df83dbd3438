use super::*;

/// (system, field name) of every field of `categories` in an access document.
pub(crate) fn fields_of(
    doc: &serde_json::Value,
    categories: &[&str],
) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for s in doc["systems"].as_array().unwrap() {
        for r in s["records"].as_array().unwrap() {
            for f in r["fields"].as_array().unwrap() {
                if categories.contains(&f["category"].as_str().unwrap()) {
                    out.insert((
                        s["id"].as_str().unwrap().to_owned(),
                        f["name"].as_str().unwrap().to_owned(),
                    ));
                }
            }
        }
    }
    out
}

/// (system, field name) of every field in a portability package's data.json.
pub(crate) fn portable_fields(zip_path: &Path) -> BTreeSet<(String, String)> {
    let bytes = std::fs::read(zip_path).unwrap();
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
    let mut text = String::new();
    zip.by_name("data.json")
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    let port: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut out = BTreeSet::new();
    for s in port["systems"].as_array().unwrap() {
        for r in s["records"].as_array().unwrap() {
            for (name, _) in r["fields"].as_object().unwrap() {
                out.insert((s["id"].as_str().unwrap().to_owned(), name.clone()));
            }
        }
    }
    out
}

/// The texts of a report a person reads, as translators see them: every
/// text node, leaving out the elements marked `translate="no"` (names,
/// numbers, dates, the person's own data) and the style sheet.
pub(crate) fn translatable_texts(html: &str) -> BTreeSet<String> {
    let mut rest = html;
    let mut kept = String::new();
    while let Some(i) = rest.find("translate=\"no\"") {
        // Back to the element's start, then past its end tag.
        let open = rest[..i].rfind('<').unwrap();
        let name: String = rest[open + 1..]
            .chars()
            .take_while(char::is_ascii_alphanumeric)
            .collect();
        kept.push_str(&rest[..open]);
        let close = format!("</{name}>");
        let end = rest[i..].find(&close).unwrap() + i + close.len();
        rest = &rest[end..];
    }
    kept.push_str(rest);
    let body = kept.split("</style>").nth(1).unwrap_or(&kept);
    body.split('<')
        .filter_map(|piece| piece.split_once('>').map(|(_, text)| text.trim()))
        .filter(|t| t.chars().any(char::is_alphabetic))
        .map(str::to_owned)
        .collect()
}
