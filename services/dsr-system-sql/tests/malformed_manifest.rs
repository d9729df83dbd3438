//! A manifest is read at start from a file a company edits: whatever it
//! holds, the parser answers with an error naming the file, never a panic.
//! Property tests over arbitrary text and over the reference manifest cut
//! and spliced at random (256 cases each in CI; `PROPTEST_CASES=100000
//! cargo test -p dsr-system-sql --test malformed_manifest` by hand).

use dsr_system_sql::manifest::Manifest;
use dsr_system_sql::reference::Reference;
use proptest::prelude::*;

proptest! {
    #[test]
    fn any_text_is_a_manifest_or_an_error(text in "\\PC{0,400}") {
        if let Err(e) = Manifest::parse(&text, "fuzz.yaml") {
            prop_assert!(e.to_string().starts_with("manifest fuzz.yaml: "));
        }
    }

    #[test]
    fn the_reference_manifest_cut_anywhere_is_an_error_not_a_panic(
        from in 0usize..20_000, len in 0usize..400, insert in "\\PC{0,20}"
    ) {
        let text = Reference::Crm.manifest();
        let from = (from % text.len()).min(text.len());
        let to = (from + len).min(text.len());
        let (mut a, mut b) = (from, to);
        while !text.is_char_boundary(a) { a -= 1; }
        while !text.is_char_boundary(b) { b -= 1; }
        let cut = format!("{}{}{}", &text[..a], insert, &text[b..]);
        let _ = Manifest::parse(&cut, "crm.yaml");
    }
}
