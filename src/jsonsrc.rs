//! JSON files as a plan source (`json:PATH` with a `jq` program, docs/plan.md): the app's own
//! state files, turned into a stream by jq when migrate, preflight or count-check reads them.
//!
//! PATH names one file, or many with `*` and `?` inside path components
//! (`/srv/app/data/users/*/activity_log.json`). The producer is jq, run over every matching
//! file in name order, with the step's program wrapped so that jq itself writes the end
//! record after the last row: a program that fails half-way leaves a stream without one,
//! which pg-load refuses (nothing is committed). The program sees each file's document as
//! `.`, its path as `$file` and the name of its directory as `$dir` (a user id, for V1's
//! `data/users/{id}/…`).

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// The `json:` PATH's files, in name order. No match is exit 66 naming the pattern.
pub fn files(pattern: &str) -> Result<Vec<PathBuf>> {
    let mut found = vec![if pattern.starts_with('/') { PathBuf::from("/") } else { PathBuf::new() }];
    for part in pattern.split('/').filter(|p| !p.is_empty() && *p != ".") {
        let mut next = Vec::new();
        for dir in &found {
            if !has_wildcard(part) {
                next.push(dir.join(part));
                continue;
            }
            let listing = if dir.as_os_str().is_empty() { Path::new(".") } else { dir.as_path() };
            let Ok(entries) = std::fs::read_dir(listing) else { continue };
            let mut names: Vec<String> =
                entries.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect();
            names.sort();
            next.extend(names.into_iter().filter(|n| matches(part, n)).map(|n| dir.join(n)));
        }
        found = next;
    }
    found.retain(|p| p.is_file());
    if found.is_empty() {
        return Err(Error::NoInput(format!("json source '{pattern}': no file matches")));
    }
    Ok(found)
}

/// What freeze watches and backup keeps for a `json:` PATH: the file itself, or the directory
/// above the first wildcard (files may appear or go there while the app runs).
pub fn root(pattern: &str) -> String {
    if !has_wildcard(pattern) {
        return pattern.to_string();
    }
    let mut root: Vec<&str> = Vec::new();
    for part in pattern.split('/') {
        if has_wildcard(part) {
            break;
        }
        root.push(part);
    }
    match root.join("/") {
        r if r.is_empty() && pattern.starts_with('/') => "/".into(),
        r if r.is_empty() => ".".into(),
        r => r,
    }
}

/// The producer's argv: jq over the files, the program wrapped so that jq counts the rows
/// and writes the end record only when every file was read and the program never failed.
pub fn producer(pattern: &str, program: &str) -> Result<Vec<String>> {
    let mut argv = vec!["jq".to_string(), "-n".into(), "-c".into(), wrap(program)];
    argv.extend(files(pattern)?.into_iter().map(|p| p.to_string_lossy().into_owned()));
    Ok(argv)
}

/// The step's program inside the counting wrapper (newlines around it, so that a trailing
/// `#` comment cannot swallow the closing parenthesis).
pub fn wrap(program: &str) -> String {
    format!(
        "def _pgferry_rows: inputs | input_filename as $file \
         | ($file | split(\"/\") | if length > 1 then .[-2] else \"\" end) as $dir | (\n{program}\n);\n\
         foreach ((_pgferry_rows | {{r: .}}), {{}}) as $x (0; if $x | has(\"r\") then . + 1 else . end;\n\
         if $x | has(\"r\") then $x.r else {{\"$end\": {{rows: ., source: \"json\"}}}} end)"
    )
}

fn has_wildcard(s: &str) -> bool {
    s.contains(['*', '?'])
}

/// Shell-style matching of one path component: `*` any run, `?` one character; a leading
/// `.` only matches a pattern that starts with one.
fn matches(pattern: &str, name: &str) -> bool {
    if name.starts_with('.') && !pattern.starts_with('.') {
        return false;
    }
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut pi, mut ni, mut star, mut mark) = (0, 0, None, 0);
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory under the system's temp dir, removed at the end of the test.
    struct TempDir(PathBuf);
    impl TempDir {
        fn new(name: &str) -> TempDir {
            let p = std::env::temp_dir().join(format!("pgferry-jsonsrc-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }
        fn path(&self) -> &Path {
            &self.0
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn components_match_like_the_shell() {
        for (p, n, want) in [
            ("*.json", "users.json", true),
            ("*.json", ".hidden.json", false),
            ("a?c", "abc", true),
            ("a*c*e", "abXcYe", true),
            ("a*c", "abcd", false),
            ("*", "x", true),
        ] {
            assert_eq!(matches(p, n), want, "{p} {n}");
        }
    }

    #[test]
    fn patterns_expand_in_name_order_and_roots_stop_at_the_first_wildcard() {
        let d = TempDir::new("expand");
        for u in ["b2", "a1", "c3"] {
            std::fs::create_dir_all(d.path().join("users").join(u)).unwrap();
            if u != "c3" {
                std::fs::write(d.path().join("users").join(u).join("log.json"), "[]").unwrap();
            }
        }
        let pat = format!("{}/users/*/log.json", d.path().display());
        let got: Vec<String> = files(&pat).unwrap().iter().map(|p| p.display().to_string()).collect();
        let base = d.path().display();
        assert_eq!(got, vec![format!("{base}/users/a1/log.json"), format!("{base}/users/b2/log.json")]);
        assert_eq!(root(&pat), format!("{base}/users"));
        assert_eq!(root("/srv/app/state.json"), "/srv/app/state.json");
        let e = files(&format!("{base}/users/*/none.json")).unwrap_err();
        assert_eq!(e.exit_code(), 66);
        assert!(e.message().contains("no file matches"), "{}", e.message());
    }

    #[test]
    fn the_wrapper_ends_with_the_count_only_when_the_program_succeeds() {
        if std::process::Command::new("jq").arg("--version").output().is_err() {
            panic!("jq is needed for this test (tests/run installs it)");
        }
        let d = TempDir::new("wrap");
        for (u, body) in [("u1", r#"[{"a": 1}, {"a": 2}]"#), ("u2", r#"[{"a": 3}]"#), ("x3", r#"{"a": "x"}"#)] {
            std::fs::create_dir_all(d.path().join(u)).unwrap();
            std::fs::write(d.path().join(u).join("f.json"), body).unwrap();
        }
        let run = |pattern: &str, program: &str| {
            let argv = producer(&format!("{}/{pattern}", d.path().display()), program).unwrap();
            let out = std::process::Command::new(&argv[0]).args(&argv[1..]).output().unwrap();
            (out.status.success(), String::from_utf8(out.stdout).unwrap())
        };
        let (ok, out) = run("u?/f.json", ".[] | {a: .a, user: $dir} # a comment");
        assert!(ok);
        assert_eq!(
            out,
            "{\"a\":1,\"user\":\"u1\"}\n{\"a\":2,\"user\":\"u1\"}\n{\"a\":3,\"user\":\"u2\"}\n\
             {\"$end\":{\"rows\":3,\"source\":\"json\"}}\n"
        );
        // x3's document is an object: `.[]` yields a string, which has no `.a`.
        let (ok, out) = run("*/f.json", ".[] | {a: .a, user: $dir}");
        assert!(!ok);
        assert!(!out.contains("$end"), "{out}");
    }
}
