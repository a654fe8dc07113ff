//! Release notes from the pull requests a release carries, grouped under
//! their labels the way release-drafter groups them. Pure.

use baton_store::ReleaseNote;

/// Markdown: a heading, then one section per label (in the order labels
/// first appear), each pull request under its first label other than the
/// announcement one; unlabelled ones under "Other changes".
pub fn render(app: &str, release: &str, notes: &[ReleaseNote], announcement_label: &str) -> String {
    let mut sections: Vec<(String, Vec<&ReleaseNote>)> = Vec::new();
    for note in notes {
        let label = note
            .labels
            .iter()
            .find(|l| l.as_str() != announcement_label)
            .cloned()
            .unwrap_or_else(|| "Other changes".to_string());
        match sections.iter_mut().find(|(l, _)| *l == label) {
            Some((_, list)) => list.push(note),
            None => sections.push((label, vec![note])),
        }
    }
    let mut out = format!("# {app} {}\n", &release[..release.len().min(12)]);
    for (label, list) in sections {
        out.push_str(&format!("\n## {label}\n\n"));
        for note in list {
            out.push_str(&format!("- {} (#{})\n", note.title.trim(), note.number));
            for line in note.body.trim().lines().filter(|l| !l.trim().is_empty()) {
                out.push_str(&format!("  {}\n", line.trim_end()));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(number: i64, title: &str, labels: &[&str]) -> ReleaseNote {
        ReleaseNote {
            id: number,
            repository: "acme/shop".into(),
            number,
            title: title.into(),
            body: format!("Body of {number}.\n\nSecond line."),
            labels: labels.iter().map(|l| l.to_string()).collect(),
            release_id: None,
            created_at: 0,
        }
    }

    #[test]
    fn notes_are_grouped_by_label_in_order_of_appearance() {
        let text = render(
            "shop",
            "0123456789abcdef",
            &[
                note(3, "Search", &["needs-announcement", "feature"]),
                note(4, "Fix cart", &["bug", "needs-announcement"]),
                note(5, "Filters", &["feature"]),
                note(6, "Prices", &["needs-announcement"]),
            ],
            "needs-announcement",
        );
        assert_eq!(
            text,
            "# shop 0123456789ab\n\n## feature\n\n- Search (#3)\n  Body of 3.\n  Second line.\n- Filters (#5)\n  Body of 5.\n  Second line.\n\n## bug\n\n- Fix cart (#4)\n  Body of 4.\n  Second line.\n\n## Other changes\n\n- Prices (#6)\n  Body of 6.\n  Second line.\n"
        );
    }
}
