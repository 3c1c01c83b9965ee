//! `cargo xtask tidy`: house rules that rustc and clippy do not check.
//!
//! - Every Rust file of the workspace starts with a `//!` doc comment, so every crate
//!   root and every module (public or not) says what it is for.
//! - Every `unsafe` block or `unsafe impl` is preceded by a `// SAFETY:` comment (in the
//!   comment lines directly above it, attributes allowed in between, or on the same line).

use std::fmt;
use std::path::{Path, PathBuf};

/// One broken rule, with where it is broken.
#[derive(Debug, PartialEq, Eq)]
pub struct Problem {
    /// File, relative to the workspace root.
    pub path: String,
    /// 1-based line number (1 for whole-file problems).
    pub line: usize,
    /// What is wrong.
    pub what: &'static str,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.path, self.line, self.what)
    }
}

const MISSING_DOCS: &str = "file does not start with a `//!` doc comment";
const MISSING_SAFETY: &str = "`unsafe` without a `// SAFETY:` comment directly above";

/// Checks the whole workspace below `root`; an error lists every problem found.
pub fn run(root: &Path) -> Result<(), String> {
    let mut files = Vec::new();
    for dir in ["crates", "xtask", "benches"] {
        collect_rust_files(&root.join(dir), &mut files)
            .map_err(|e| format!("tidy: reading {dir}: {e}"))?;
    }
    if files.is_empty() {
        return Err("tidy: found no Rust files (wrong root?)".into());
    }
    let mut problems = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file)
            .map_err(|e| format!("tidy: reading {}: {e}", file.display()))?;
        let rel = file
            .strip_prefix(root)
            .unwrap_or(file)
            .display()
            .to_string();
        problems.extend(check_file(&rel, &text));
    }
    println!(
        "tidy: {} files checked, {} problems",
        files.len(),
        problems.len()
    );
    if problems.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = problems.iter().map(ToString::to_string).collect();
    Err(format!("tidy found problems:\n  {}", list.join("\n  ")))
}

/// Appends every `.rs` file below `dir` (skipping `target` directories) to `out`.
fn collect_rust_files(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.path());
    for entry in entries {
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            if path.file_name().is_some_and(|n| n == "target") {
                continue;
            }
            collect_rust_files(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    Ok(())
}

/// Checks one file's text; `path` is only used in the reported problems.
pub fn check_file(path: &str, text: &str) -> Vec<Problem> {
    let mut problems = Vec::new();
    let first = text.lines().map(str::trim).find(|l| !l.is_empty());
    if !first.is_some_and(|l| l.starts_with("//!")) {
        problems.push(Problem {
            path: path.into(),
            line: 1,
            what: MISSING_DOCS,
        });
    }
    let lines: Vec<&str> = text.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        if has_unsafe_block_or_impl(line) && !has_safety_comment(&lines, i) {
            problems.push(Problem {
                path: path.into(),
                line: i + 1,
                what: MISSING_SAFETY,
            });
        }
    }
    problems
}

/// True if `line`'s code (not its comment, not inside a string literal) opens an `unsafe`
/// block or an `unsafe impl`. `unsafe fn` and `unsafe extern` are declarations, documented
/// by `# Safety` sections, and are not matched.
fn has_unsafe_block_or_impl(line: &str) -> bool {
    let code = line.split("//").next().unwrap_or("");
    let mut search = 0;
    while let Some(pos) = code[search..].find("unsafe") {
        let at = search + pos;
        search = at + "unsafe".len();
        let before = &code[..at];
        let inside_string = before.matches('"').count() % 2 == 1;
        let word_start = before
            .chars()
            .last()
            .is_none_or(|c| !c.is_alphanumeric() && c != '_');
        let rest = code[search..].trim_start();
        let opens = rest.starts_with('{') || rest.starts_with("impl") || rest.is_empty();
        if !inside_string && word_start && opens {
            return true;
        }
    }
    false
}

/// True if line `i` carries `SAFETY:` in a trailing comment, or the comment lines directly
/// above it (skipping attributes) contain `// SAFETY:`.
fn has_safety_comment(lines: &[&str], i: usize) -> bool {
    if lines[i]
        .split_once("//")
        .is_some_and(|(_, c)| c.contains("SAFETY:"))
    {
        return true;
    }
    for line in lines[..i].iter().rev() {
        let t = line.trim();
        if t.starts_with("#[") || t.starts_with("#![") {
            continue;
        }
        if !t.starts_with("//") {
            return false;
        }
        if t.contains("SAFETY:") {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whats(text: &str) -> Vec<(usize, &'static str)> {
        check_file("f.rs", text)
            .into_iter()
            .map(|p| (p.line, p.what))
            .collect()
    }

    #[test]
    fn a_file_without_module_docs_is_reported() {
        assert_eq!(whats("fn main() {}\n"), vec![(1, MISSING_DOCS)]);
        assert_eq!(
            whats("// plain comment\n//! late docs\n"),
            vec![(1, MISSING_DOCS)]
        );
        assert_eq!(whats(""), vec![(1, MISSING_DOCS)]);
        assert_eq!(
            whats("\n\n//! Docs after blank lines.\nfn f() {}\n"),
            vec![]
        );
    }

    #[test]
    fn unsafe_block_without_safety_comment_is_reported() {
        let text = "//! m\nfn f(p: *const u8) -> u8 {\n    unsafe { *p }\n}\n";
        assert_eq!(whats(text), vec![(3, MISSING_SAFETY)]);
        let ok =
            "//! m\nfn f(p: *const u8) -> u8 {\n    // SAFETY: p is valid.\n    unsafe { *p }\n}\n";
        assert_eq!(whats(ok), vec![]);
    }

    #[test]
    fn the_safety_comment_may_span_lines_and_skip_attributes() {
        let ok = "//! m\n// SAFETY: the map outlives the slice;\n// nobody truncates the file.\n#[allow(unused)]\nlet s = unsafe { m.as_slice() };\n";
        assert_eq!(whats(ok), vec![]);
        let trailing = "//! m\nlet v = unsafe { *p }; // SAFETY: p checked above\n";
        assert_eq!(whats(trailing), vec![]);
        let split = "//! m\n// SAFETY: ok\n\nlet v = unsafe { *p };\n";
        assert_eq!(
            whats(split),
            vec![(4, MISSING_SAFETY)],
            "a blank line breaks the comment"
        );
    }

    #[test]
    fn unsafe_impl_needs_a_comment_but_unsafe_fn_does_not() {
        assert_eq!(
            whats("//! m\nunsafe impl Send for X {}\n"),
            vec![(2, MISSING_SAFETY)]
        );
        assert_eq!(
            whats("//! m\n// SAFETY: X owns its pointer.\nunsafe impl Send for X {}\n"),
            vec![]
        );
        assert_eq!(whats("//! m\npub unsafe fn map(f: &File) {}\n"), vec![]);
    }

    #[test]
    fn unsafe_in_strings_comments_and_identifiers_is_ignored() {
        let text = "//! m\nlet s = \"unsafe { x }\";\n// unsafe { in a comment }\nfn not_unsafe {}\nlet my_unsafe = 1;\n";
        assert_eq!(whats(text), vec![]);
    }

    #[test]
    fn an_unsafe_block_opening_on_the_next_line_is_caught() {
        let text = "//! m\nlet v = unsafe\n{ *p };\n";
        assert_eq!(whats(text), vec![(2, MISSING_SAFETY)]);
    }

    #[test]
    fn the_workspace_itself_is_tidy() {
        run(&crate::util::workspace_root()).unwrap();
    }
}
