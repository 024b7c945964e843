//! The documents stay true to the tree: every relative link in `README.md`
//! and `docs/*.md` reaches a file (and its `#anchor` a heading), the
//! README stays a short guide, no file points at material outside the
//! repository, and the file map in `docs/architecture.md` lists exactly
//! the source files that exist.
//!
//! No process is started; these tests only read files.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// The README is a short guide; the rest belongs in `docs/`.
const README_MAX_LINES: usize = 260;

/// Directories the walks never enter: build output and git's own.
const SKIP_DIRS: &[&str] = &["target", ".git", "build"];

/// What a node writes in its data directory (`make run` uses the
/// repository root): data, not documents.
const SKIP_SUFFIXES: &[&str] = &[".log", ".lock", ".state", ".tmp"];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// `README.md` and every `docs/*.md`, as paths relative to the root.
fn documents() -> Vec<PathBuf> {
    let mut docs = vec![PathBuf::from("README.md")];
    let mut pages: Vec<PathBuf> = fs::read_dir(root().join("docs"))
        .expect("read docs/")
        .map(|e| e.expect("docs/ entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .map(|p| {
            p.strip_prefix(root())
                .expect("under the root")
                .to_path_buf()
        })
        .collect();
    pages.sort();
    docs.extend(pages);
    docs
}

/// Every file under `dir`, skipping [`SKIP_DIRS`] and the `.git` file of
/// a worktree.
fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry"))
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let kind = entry.file_type().expect("file type");
        if kind.is_dir() {
            if !SKIP_DIRS.contains(&name.as_str()) {
                walk(&path, out);
            }
        } else if kind.is_file() && name != ".git" {
            out.push(path);
        }
    }
}

/// The lines of `text` outside fenced code blocks, with their numbers
/// (from 1).
fn prose_lines(text: &str) -> Vec<(usize, &str)> {
    let mut fenced = false;
    let mut lines = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if !fenced {
            lines.push((i + 1, line));
        }
    }
    lines
}

/// `line` without its inline code spans, so that `[a](b)` written as code
/// is not taken for a link.
fn without_code_spans(line: &str) -> String {
    let mut out = String::new();
    let mut in_code = false;
    for c in line.chars() {
        if c == '`' {
            in_code = !in_code;
        } else if !in_code {
            out.push(c);
        }
    }
    out
}

/// The targets of the inline links `[text](target)` on one line.
fn link_targets(line: &str) -> Vec<String> {
    let line = without_code_spans(line);
    let mut targets = Vec::new();
    let mut rest = line.as_str();
    while let Some(at) = rest.find("](") {
        let after = &rest[at + 2..];
        match after.find(')') {
            Some(end) => {
                let target = after[..end].trim();
                // `[text](target "title")`: the target is the first word.
                let target = target.split_whitespace().next().unwrap_or("");
                targets.push(target.trim_matches(|c| c == '<' || c == '>').to_string());
                rest = &after[end + 1..];
            }
            None => break,
        }
    }
    targets
}

/// GitHub's anchor for a heading: lower case, punctuation dropped (but
/// `-` and `_`), spaces as `-`.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == '-' || *c == '_' || *c == ' ')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The anchors of every heading in a markdown text; a repeated heading
/// gets `-1`, `-2`... as on GitHub.
fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut out = BTreeSet::new();
    for (_, line) in prose_lines(text) {
        let hashes = line.chars().take_while(|&c| c == '#').count();
        if !(1..=6).contains(&hashes) || !line[hashes..].starts_with(' ') {
            continue;
        }
        let base = slug(&line[hashes..]);
        let n = seen.entry(base.clone()).or_insert(0);
        out.insert(if *n == 0 {
            base.clone()
        } else {
            format!("{base}-{n}")
        });
        *n += 1;
    }
    out
}

/// What is wrong with one link `target` in the document `doc`, if anything.
fn check_link(doc: &Path, target: &str) -> Option<String> {
    let external = ["http://", "https://", "mailto:", "file://", "man:"];
    if target.is_empty() {
        return Some("an empty link".into());
    }
    if external.iter().any(|p| target.starts_with(p)) {
        return None;
    }
    let (file, anchor) = match target.split_once('#') {
        Some((file, anchor)) => (file, Some(anchor)),
        None => (target, None),
    };
    let path = if file.is_empty() {
        root().join(doc)
    } else {
        root()
            .join(doc.parent().unwrap_or(Path::new("")))
            .join(file)
    };
    if !path.exists() {
        return Some(format!("{target}: no file {}", path.display()));
    }
    let anchor = anchor?;
    if path.extension().is_none_or(|x| x != "md") {
        return None;
    }
    if anchors(&read(&path)).contains(anchor) {
        None
    } else {
        Some(format!("{target}: no heading with the anchor #{anchor}"))
    }
}

#[test]
fn every_relative_link_reaches_a_file_and_a_heading() {
    let mut broken = Vec::new();
    for doc in documents() {
        let text = read(&root().join(&doc));
        for (number, line) in prose_lines(&text) {
            for target in link_targets(line) {
                if let Some(why) = check_link(&doc, &target) {
                    broken.push(format!("{}:{number}: {why}", doc.display()));
                }
            }
        }
    }
    assert!(
        broken.is_empty(),
        "broken links:\n  {}",
        broken.join("\n  ")
    );
}

#[test]
fn the_readme_stays_a_short_guide() {
    let lines = read(&root().join("README.md")).lines().count();
    assert!(
        lines <= README_MAX_LINES,
        "README.md has {lines} lines, more than {README_MAX_LINES}: move the detail into a \
         document of docs/ and link it from the README's index"
    );
}

#[test]
fn the_readme_indexes_every_document() {
    let readme = read(&root().join("README.md"));
    let linked: BTreeSet<String> = prose_lines(&readme)
        .into_iter()
        .flat_map(|(_, line)| link_targets(line))
        .map(|t| t.split('#').next().unwrap_or_default().to_string())
        .collect();
    let unlisted: Vec<String> = documents()
        .into_iter()
        .skip(1)
        .map(|p| p.to_string_lossy().replace('\\', "/"))
        .filter(|p| !linked.contains(p))
        .collect();
    assert!(
        unlisted.is_empty(),
        "README.md links no line of its documentation index to {unlisted:?}"
    );
}

#[test]
fn no_file_points_outside_the_repository() {
    // Spelled in pieces, so that this file does not match itself.
    let patterns = [
        concat!("..", "/shared"),
        concat!("SPEC", ".md"),
        concat!("SPEC", " §"),
        concat!("SPEC", ":"),
        concat!("SPEC", "'s"),
        concat!("the ", "SPEC"),
    ];
    let mut files = Vec::new();
    walk(root(), &mut files);
    let mut found = Vec::new();
    for path in files {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        if name.is_some_and(|n| SKIP_SUFFIXES.iter().any(|s| n.ends_with(s))) {
            continue;
        }
        // Only text: binaries and data files are not documents.
        let Ok(text) = fs::read_to_string(&path) else {
            continue;
        };
        for (i, line) in text.lines().enumerate() {
            for pattern in patterns {
                if line.contains(pattern) {
                    let shown = path.strip_prefix(root()).unwrap_or(&path);
                    found.push(format!("{}:{}: {}", shown.display(), i + 1, line.trim()));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "these lines point at material a clone of the repository does not hold; point at \
         the right docs/*.md instead:\n  {}",
        found.join("\n  ")
    );
}

/// The paths the file map in `docs/architecture.md` lists, in order.
fn file_map() -> Vec<String> {
    let text = read(&root().join("docs/architecture.md"));
    let mut in_map = false;
    let mut paths = Vec::new();
    for (_, line) in prose_lines(&text) {
        if line.starts_with("## ") {
            in_map = line.trim() == "## File map";
            continue;
        }
        if let Some(row) = line.strip_prefix("| `").filter(|_| in_map) {
            let path = row.split('`').next().unwrap_or_default();
            paths.push(path.to_string());
        }
    }
    paths
}

/// Every `.rs` file under `src/`, `tools/` (when there is one) and
/// `tests/`, as the file map names it.
fn source_files() -> BTreeSet<String> {
    let mut files = Vec::new();
    for dir in ["src", "tools", "tests"] {
        let dir = root().join(dir);
        if dir.is_dir() {
            walk(&dir, &mut files);
        }
    }
    files
        .into_iter()
        .filter(|p| p.extension().is_some_and(|x| x == "rs"))
        .map(|p| {
            p.strip_prefix(root())
                .expect("under the root")
                .to_string_lossy()
                .replace('\\', "/")
        })
        .collect()
}

#[test]
fn the_file_map_lists_exactly_the_source_files() {
    let listed = file_map();
    assert!(
        !listed.is_empty(),
        "docs/architecture.md has no \"## File map\" section with rows starting | `path`"
    );
    let mut seen = BTreeSet::new();
    let twice: Vec<&String> = listed.iter().filter(|p| !seen.insert(*p)).collect();
    let listed: BTreeSet<String> = listed.iter().cloned().collect();
    let present = source_files();
    let missing: Vec<&String> = present.difference(&listed).collect();
    let extra: Vec<&String> = listed.difference(&present).collect();
    assert!(
        missing.is_empty() && extra.is_empty() && twice.is_empty(),
        "the file map in docs/architecture.md is out of date.\n\
         files that exist but have no row (add one): {missing:?}\n\
         rows for files that do not exist (remove or rename them): {extra:?}\n\
         rows listed twice: {twice:?}"
    );
}

mod unit {
    use super::*;

    #[test]
    fn slugs_follow_github() {
        assert_eq!(
            slug(" Runbook: the leader's disk melted"),
            "runbook-the-leaders-disk-melted"
        );
        assert_eq!(slug(" `keyval-ctl follow`"), "keyval-ctl-follow");
        assert_eq!(
            slug(" Histories, epochs and the lineage"),
            "histories-epochs-and-the-lineage"
        );
        assert_eq!(
            slug(" DIGEST and KEYS at 1M keys"),
            "digest-and-keys-at-1m-keys"
        );
        let text = "# A\n## B\n```\n## C\n```\n## B\n";
        let expected: BTreeSet<String> = ["a", "b", "b-1"].iter().map(|s| s.to_string()).collect();
        assert_eq!(anchors(text), expected);
    }

    #[test]
    fn links_are_found_outside_code() {
        assert_eq!(
            link_targets("see [a](docs/a.md#x) and `[b](c)` and [d](e \"t\")"),
            vec!["docs/a.md#x".to_string(), "e".to_string()]
        );
    }
}
