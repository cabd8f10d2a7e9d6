//! The commit this binary is built from, for `imsbridge --version` and
//! `imsbridge_build_info{commit}`: the `IMSBRIDGE_COMMIT` environment variable when the build
//! sets it (the container build, whose context holds no `.git`: `--build-arg`), else
//! `git rev-parse` when the source is a git checkout with git at hand, else `unknown` (a crate
//! tarball).

use std::process::Command;

fn main() {
    let commit = std::env::var("IMSBRIDGE_COMMIT")
        .ok()
        .map(|commit| commit.trim().to_owned())
        .filter(|commit| !commit.is_empty() && commit != "unknown")
        .or_else(git_commit)
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=IMSBRIDGE_COMMIT={commit}");
    // A new commit (or a checkout) changes HEAD or the ref it names.
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/refs/heads");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=IMSBRIDGE_COMMIT");
}

fn git_commit() -> Option<String> {
    Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|output| output.status.success())
        .and_then(|output| String::from_utf8(output.stdout).ok())
        .map(|commit| commit.trim().to_owned())
        .filter(|commit| !commit.is_empty())
}
