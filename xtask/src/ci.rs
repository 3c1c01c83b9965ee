//! `cargo xtask ci`: every check a change must pass, in order, stopping at the first failure.

use crate::util::{cargo, run_cmd, step, workspace_root};

/// Runs fmt, tidy, clippy, doc, tests, packaging and the crates' examples; one timed line
/// per step.
pub fn run(args: &[String]) -> Result<(), String> {
    if let Some(extra) = args.first() {
        return Err(format!("`ci` takes no arguments (got {extra})"));
    }
    step("fmt", || {
        run_cmd("cargo fmt", cargo().args(["fmt", "--all", "--", "--check"]))
    })?;
    step("tidy", || crate::tidy::run(&workspace_root()))?;
    step("clippy", || {
        run_cmd(
            "cargo clippy",
            cargo().args([
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ]),
        )
    })?;
    step("doc", || {
        run_cmd(
            "cargo doc",
            cargo()
                .args(["doc", "--workspace", "--no-deps"])
                .env("RUSTDOCFLAGS", "-D warnings"),
        )
    })?;
    step("test", || {
        run_cmd("cargo test", cargo().args(["test", "--workspace"]))
    })?;
    step("package", || {
        for (krate, lockfile) in PACKAGES {
            let mut cmd = cargo();
            cmd.args([
                "package",
                "--quiet",
                "-p",
                krate,
                "--no-verify",
                "--allow-dirty",
            ]);
            if !lockfile {
                cmd.arg("--exclude-lockfile");
            }
            run_cmd(&format!("cargo package -p {krate}"), &mut cmd)?;
        }
        Ok(())
    })?;
    step("examples", || {
        for (krate, example) in EXAMPLES {
            run_cmd(
                &format!("example {example} of {krate}"),
                cargo().args(["run", "--quiet", "-p", krate, "--example", example]),
            )?;
        }
        Ok(())
    })?;
    Ok(())
}

/// Every published-shape crate, and whether `cargo package` can write its `Cargo.lock`.
/// With `publish = false` cargo resolves a package's lockfile against crates.io only (it
/// leaves unpublishable workspace crates out of the local registry it packages dependents
/// against), so the engine and the CLI, which depend on the layers, package without one.
const PACKAGES: [(&str, bool); 6] = [
    ("varve-wal", true),
    ("varve-slotted", true),
    ("varve-sidecar", true),
    ("varve-arena", true),
    ("varve-engine", false),
    ("varve-cli", false),
];

/// The runnable `examples/` program of each library crate (its README points to it).
const EXAMPLES: [(&str, &str); 5] = [
    ("varve-wal", "log"),
    ("varve-slotted", "documents"),
    ("varve-sidecar", "blobs"),
    ("varve-arena", "tail"),
    ("varve-engine", "orders"),
];

/// The names under `[dependencies]` of a manifest (not dev- or build-dependencies).
#[cfg(test)]
fn dependencies(manifest: &str) -> Vec<String> {
    let mut deps = Vec::new();
    let mut inside = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            inside = line == "[dependencies]";
            continue;
        }
        if inside && let Some((name, _)) = line.split_once('=') {
            let name = name.trim();
            if !name.is_empty() && !name.starts_with('#') {
                deps.push(name.trim_end_matches(".workspace").to_string());
            }
        }
    }
    deps
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dependencies_reads_only_the_dependencies_section() {
        let m = "[package]\nname = \"x\"\n[dependencies]\nfoo.workspace = true\n# c = 1\nbar = \"1\"\n[dev-dependencies]\nvarve-wal.workspace = true\n";
        assert_eq!(dependencies(m), ["foo", "bar"]);
    }

    /// A user who depends on one lower layer gets none of the others.
    #[test]
    fn lower_layers_depend_on_no_other_varve_crate() {
        let root = workspace_root();
        for krate in ["varve-wal", "varve-slotted", "varve-sidecar", "varve-arena"] {
            let path = root.join("crates").join(krate).join("Cargo.toml");
            let m = std::fs::read_to_string(&path).expect("manifest");
            let deps = dependencies(&m);
            assert!(!deps.is_empty(), "{krate}: no dependencies parsed");
            assert!(
                deps.iter().all(|d| !d.starts_with("varve")),
                "{krate} depends on {deps:?}"
            );
        }
    }

    #[test]
    fn every_listed_example_exists() {
        for (krate, example) in EXAMPLES {
            let path = workspace_root()
                .join("crates")
                .join(krate)
                .join("examples")
                .join(format!("{example}.rs"));
            assert!(path.exists(), "{}", path.display());
        }
    }
}
