//! `cargo xtask tidy`: the invariants of docs/architecture.md, checked.
//!
//! - Dependency rules, read from `cargo metadata`: `diffusion-core` depends on no sibling;
//!   only `diffusion-cuda` reaches `cudarc`; nothing depends on `diffusion-cli`; solvers and
//!   schedules never depend on the network crate.
//! - Every crate under `crates/` has a README and one typed error (`src/error.rs`), except
//!   the facade and the binary.
//! - No doc page reads as a log (sessions, before/after, "was N ... now").

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// Crates with no error type of their own: the re-exporting facade and the binary.
const NO_ERROR_TYPE: &[&str] = &["diffusion", "diffusion-cli"];

pub fn tidy(root: &Path) -> Result<(), String> {
    let mut problems = Vec::new();
    let packages = workspace_packages(root)?;
    problems.extend(dependency_rules(&packages));
    problems.extend(crate_files(&packages));
    problems.extend(history_lines(root));
    if problems.is_empty() {
        eprintln!("tidy: {} packages, every rule holds", packages.len());
        Ok(())
    } else {
        Err(format!(
            "tidy found {} problem(s):\n  {}",
            problems.len(),
            problems.join("\n  ")
        ))
    }
}

/// A workspace member: its name, folder and the names of what it depends on (any kind).
struct Package {
    name: String,
    dir: PathBuf,
    deps: Vec<(String, bool)>,
}

fn workspace_packages(root: &Path) -> Result<Vec<Package>, String> {
    let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(root)
        .output()
        .map_err(|e| format!("cannot run cargo metadata: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let meta: Value = serde_json::from_slice(&out.stdout).map_err(|e| format!("cargo metadata: {e}"))?;
    let packages = meta["packages"]
        .as_array()
        .ok_or("cargo metadata has no packages")?;
    Ok(packages
        .iter()
        .map(|p| Package {
            name: p["name"].as_str().unwrap_or_default().to_string(),
            dir: Path::new(p["manifest_path"].as_str().unwrap_or_default())
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default(),
            deps: p["dependencies"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|d| {
                    let name = d["name"].as_str().unwrap_or_default().to_string();
                    (name, d["kind"].as_str() == Some("dev"))
                })
                .collect(),
        })
        .collect())
}

fn dependency_rules(packages: &[Package]) -> Vec<String> {
    let mut problems = Vec::new();
    for p in packages {
        for (dep, dev) in &p.deps {
            let sibling = dep.starts_with("diffusion");
            if p.name == "diffusion-core" && sibling && !dev {
                problems.push(format!(
                    "diffusion-core depends on {dep}: core depends on no sibling"
                ));
            }
            if dep == "cudarc" && p.name != "diffusion-cuda" {
                problems.push(format!("{} depends on cudarc: only diffusion-cuda may", p.name));
            }
            if dep == "diffusion-cli" {
                problems.push(format!("{} depends on diffusion-cli: nothing may", p.name));
            }
            if matches!(p.name.as_str(), "diffusion-solvers" | "diffusion-schedules") && dep == "diffusion-nn"
            {
                problems.push(format!(
                    "{} depends on diffusion-nn: solvers see models through core",
                    p.name
                ));
            }
        }
    }
    problems
}

fn crate_files(packages: &[Package]) -> Vec<String> {
    let mut problems = Vec::new();
    for p in packages
        .iter()
        .filter(|p| p.dir.parent().is_some_and(|d| d.ends_with("crates")))
    {
        if !p.dir.join("README.md").is_file() {
            problems.push(format!("{} has no README.md", p.name));
        }
        if !NO_ERROR_TYPE.contains(&p.name.as_str()) && !p.dir.join("src/error.rs").is_file() {
            problems.push(format!(
                "{} has no src/error.rs (one typed error per crate)",
                p.name
            ));
        }
    }
    problems
}

/// The pages that describe the design: the root README, docs/ (not the benchmark pages or
/// docs/notes/, which hold measurements) and every crate README.
fn doc_pages(root: &Path) -> Vec<PathBuf> {
    let mut pages = vec![root.join("README.md")];
    let md = |dir: PathBuf| -> Vec<PathBuf> {
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "md"))
            .collect()
    };
    pages.extend(md(root.join("docs")).into_iter().filter(|p| {
        !p.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("benchmarks"))
    }));
    for entry in std::fs::read_dir(root.join("crates"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let readme = entry.path().join("README.md");
        if readme.is_file() {
            pages.push(readme);
        }
    }
    pages.sort();
    pages
}

fn history_lines(root: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    for page in doc_pages(root) {
        let Ok(text) = std::fs::read_to_string(&page) else {
            continue;
        };
        for (i, line) in text.lines().enumerate() {
            if reads_as_history(line) {
                let rel = page.strip_prefix(root).unwrap_or(&page);
                problems.push(format!(
                    "{}:{}: reads as history: {}",
                    rel.display(),
                    i + 1,
                    line.trim()
                ));
            }
        }
    }
    problems
}

/// A line that tells history rather than the present: a work session, a before/after
/// comparison of a change, or "was N ... now".
pub fn reads_as_history(line: &str) -> bool {
    let lower = line.to_lowercase();
    let words: Vec<&str> = lower
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect();
    let was_number_now = words.windows(2).enumerate().any(|(i, w)| {
        w[0] == "was" && w[1].starts_with(|c: char| c.is_ascii_digit()) && words[i + 2..].contains(&"now")
    });
    words.iter().any(|w| *w == "session" || *w == "sessions")
        || lower.contains("before this change")
        || lower.contains("after this change")
        || was_number_now
}

#[cfg(test)]
mod tests {
    use super::reads_as_history;

    #[test]
    fn history_lines_are_recognised() {
        assert!(reads_as_history("Session 8 sped up the mlp."));
        assert!(reads_as_history("After this change the step is fused."));
        assert!(reads_as_history("the step was 12 ms, now 9 ms"));
        assert!(!reads_as_history("The step costs 9 ms (docs/benchmarks.md)."));
        assert!(!reads_as_history(
            "A sessionless API; what was given is now kept."
        ));
    }
}
