use super::*;

/// Whether an outbox file is a one-time code (not a letter about a request).
pub(crate) fn is_code(text: &str) -> bool {
    text.contains("\nSubject: Your verification code\n")
        || text.contains("\nSubject: Din verifieringskod\n")
}

/// The newest one-time code sent to `to` in the development outbox.
pub(crate) fn code_in_outbox(data: &Path, to: &str, after: usize) -> Option<String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(data.join("outbox"))
        .ok()?
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    files
        .iter()
        .skip(after)
        .rev()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .filter(|t| t.starts_with(&format!("To: {to}\n")) && is_code(t))
        .find_map(|t| {
            t.split(|c: char| !c.is_ascii_digit())
                .find(|w| w.len() == 6)
                .map(str::to_owned)
        })
}

pub(crate) fn outbox_len(data: &Path) -> usize {
    std::fs::read_dir(data.join("outbox")).map_or(0, |d| d.count())
}

/// The one-time codes the development outbox holds.
pub(crate) fn codes_sent(data: &Path) -> usize {
    std::fs::read_dir(data.join("outbox")).map_or(0, |d| {
        d.flatten()
            .filter_map(|e| std::fs::read_to_string(e.path()).ok())
            .filter(|t| is_code(t))
            .count()
    })
}

/// The letter to `to` whose subject names request `id` and starts with
/// `subject`, once the outbox has it: its subject and body.
pub(crate) async fn wait_letter(
    data: &Path,
    to: &str,
    id: &str,
    subject: &str,
) -> (String, String) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        for e in std::fs::read_dir(data.join("outbox"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let Ok(text) = std::fs::read_to_string(e.path()) else {
                continue;
            };
            let Some(rest) = text.strip_prefix(&format!("To: {to}\nSubject: ")) else {
                continue;
            };
            let (subj, body) = rest.split_once("\n\n").unwrap_or((rest, ""));
            if subj.starts_with(subject) && subj.contains(id) {
                return (subj.to_owned(), body.to_owned());
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no letter {subject:?} for {id} in the outbox"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
