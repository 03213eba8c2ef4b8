//! The documentation holds together: every relative link and anchor in README.md and docs/
//! (and every runbook the alert rules name) resolves to a file and a heading that exist, and the
//! README stays within 300 lines.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The Markdown files checked: README.md and every page under docs/.
fn pages() -> Vec<PathBuf> {
    let mut pages = vec![root().join("README.md")];
    let docs = std::fs::read_dir(root().join("docs")).unwrap_or_else(|e| panic!("docs/: {e}"));
    for entry in docs.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "md") {
            pages.push(path);
        }
    }
    pages.sort();
    pages
}

/// The lines outside fenced code blocks.
fn prose(text: &str) -> Vec<&str> {
    let mut fenced = false;
    let mut out = Vec::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if !fenced {
            out.push(line);
        }
    }
    out
}

/// GitHub's anchor for a heading: lower case, letters, digits, `-` and `_` kept, spaces to
/// `-`, everything else dropped.
pub fn slug(heading: &str) -> String {
    heading
        .trim()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            '-' | '_' => Some(c),
            c if c.is_alphanumeric() => Some(c),
            _ => None,
        })
        .flat_map(char::to_lowercase)
        .collect()
}

/// Every anchor of a Markdown file (repeated headings get `-1`, `-2` ..., as on GitHub).
fn anchors(path: &Path) -> BTreeSet<String> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut seen = BTreeSet::new();
    for line in prose(&text) {
        let Some(heading) = line.strip_prefix('#') else {
            continue;
        };
        let heading = heading.trim_start_matches('#');
        if !heading.starts_with(' ') {
            continue;
        }
        let base = slug(heading);
        let mut anchor = base.clone();
        let mut n = 0;
        while seen.contains(&anchor) {
            n += 1;
            anchor = format!("{base}-{n}");
        }
        seen.insert(anchor);
    }
    seen
}

/// The targets of `[text](target)` links on a line, skipping inline code.
fn link_targets(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_code = false;
    let bytes: Vec<char> = line.chars().collect();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            '`' => in_code = !in_code,
            ']' if !in_code && bytes.get(i + 1) == Some(&'(') => {
                let rest: String = bytes[i + 2..].iter().collect();
                if let Some(end) = rest.find(')') {
                    out.push(rest[..end].trim().to_owned());
                }
            }
            _ => {}
        }
        i += 1;
    }
    out
}

/// Why `target`, written in `from`, does not resolve (`None` when it does).
fn broken(from: &Path, target: &str) -> Option<String> {
    if target.contains("://") || target.starts_with("mailto:") {
        return None;
    }
    let (path, anchor) = match target.split_once('#') {
        Some((p, a)) => (p, Some(a)),
        None => (target, None),
    };
    let file = if path.is_empty() {
        from.to_path_buf()
    } else {
        from.parent().unwrap_or(Path::new(".")).join(path)
    };
    if !file.exists() {
        return Some(format!("{target}: no file {}", file.display()));
    }
    let anchor = anchor?;
    if file.extension().is_none_or(|e| e != "md") {
        return Some(format!(
            "{target}: an anchor into a file that is not Markdown"
        ));
    }
    if anchors(&file).contains(anchor) {
        None
    } else {
        Some(format!("{target}: no heading with the anchor #{anchor}"))
    }
}

#[test]
fn every_relative_link_and_anchor_in_the_readme_and_docs_resolves() {
    let mut problems = Vec::new();
    let mut links = 0;
    for page in pages() {
        let text = std::fs::read_to_string(&page).unwrap_or_else(|e| panic!("{e}"));
        for (n, line) in prose(&text).into_iter().enumerate() {
            for target in link_targets(line) {
                links += 1;
                if let Some(why) = broken(&page, &target) {
                    problems.push(format!(
                        "{} (line {} of prose): {why}",
                        page.display(),
                        n + 1
                    ));
                }
            }
        }
    }
    assert!(
        links > 50,
        "only {links} links found: the scanner is broken"
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn every_runbook_of_the_alert_rules_points_at_a_heading_that_exists() {
    let rules =
        std::fs::read_to_string(root().join("config/alerts.yml")).unwrap_or_else(|e| panic!("{e}"));
    let mut checked = 0;
    let mut problems = Vec::new();
    for line in rules.lines() {
        let Some(rest) = line.trim().strip_prefix("runbook: \"") else {
            continue;
        };
        let target = rest.split([':', ' ', '"']).next().unwrap_or_default();
        checked += 1;
        if let Some(why) = broken(&root().join("README.md"), target) {
            problems.push(why);
        }
    }
    assert!(checked >= 5, "only {checked} runbooks found");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_scanner_finds_broken_links_and_anchors() {
    let readme = root().join("README.md");
    assert!(broken(&readme, "docs/no-such-page.md").is_some());
    assert!(broken(&readme, "docs/fault-model.md#no-such-heading").is_some());
    assert!(broken(&readme, "#set-up").is_none());
    assert!(broken(&readme, "https://example.com/x").is_none());
    assert_eq!(slug("EventBridge → SQS source"), "eventbridge--sqs-source");
    assert_eq!(
        slug("`check`: validate a config"),
        "check-validate-a-config"
    );
    assert_eq!(
        link_targets("see [a](x.md#y) and `[b](not-a-link)` and [c](z.md)"),
        vec!["x.md#y".to_owned(), "z.md".to_owned()]
    );
}

#[test]
fn the_readme_stays_within_300_lines_and_leads_with_the_two_set_up_commands() {
    let text = std::fs::read_to_string(root().join("README.md")).unwrap_or_else(|e| panic!("{e}"));
    let lines = text.lines().count();
    assert!(lines <= 300, "README.md has {lines} lines");
    let demo = text.find("cargo run -- demo");
    let tests = text.find("bash scripts/test.sh");
    let connect = text.find("## Connect your tenant");
    assert!(demo.is_some() && tests.is_some(), "the two set-up commands");
    assert!(demo < connect && tests < connect, "set-up comes first");
    // .ci/run calls the README's test command.
    let ci = std::fs::read_to_string(root().join(".ci/run")).unwrap_or_else(|e| panic!("{e}"));
    assert!(ci.contains("scripts/test.sh"), "{ci}");
}
