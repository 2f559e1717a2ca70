//! The Debian package builds (cargo-deb, from the release binary) and installs exactly what the
//! README's package-contents list says, with the config files as conffiles and the maintainer
//! scripts that create the system user, and lintian finds nothing to warn about.

mod common;

use std::process::Command;

fn readme_contents() -> Vec<String> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let block = readme
        .split("<!-- package-contents")
        .nth(1)
        .expect("the README lists the package contents")
        .split("```text\n")
        .nth(1)
        .unwrap()
        .split("```")
        .next()
        .unwrap();
    let mut files: Vec<String> = block
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    files.sort();
    files
}

#[test]
fn the_package_holds_what_the_readme_says() {
    let root = env!("CARGO_MANIFEST_DIR");
    // scripts/test builds the release binary first, as CI does.
    assert!(
        std::path::Path::new(root)
            .join("target/release/beacond")
            .exists(),
        "target/release/beacond is missing: run `cargo build --release` (scripts/test does)"
    );
    let out_dir = tempfile::tempdir().unwrap();
    let out = Command::new("cargo")
        .args(["deb", "--no-build", "--output"])
        .arg(out_dir.path())
        .current_dir(root)
        .output()
        .expect("cargo-deb (scripts/test installs it)");
    common::assert_success(&out);
    let deb = std::fs::read_dir(out_dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .unwrap();
    let list = Command::new("dpkg-deb")
        .arg("-c")
        .arg(&deb)
        .output()
        .unwrap();
    let mut files: Vec<String> = String::from_utf8_lossy(&list.stdout)
        .lines()
        .filter(|l| !l.starts_with('d'))
        .filter_map(|l| l.split_whitespace().last())
        .map(|p| p.trim_start_matches('.').to_owned())
        .collect();
    files.sort();
    // A README line with `*` stands for every file it matches (the man pages, one per command);
    // it must match at least one.
    let mut expected = Vec::new();
    for entry in readme_contents() {
        match entry.split_once('*') {
            Some((prefix, suffix)) => {
                let before = files.len();
                files.retain(|f| !(f.starts_with(prefix) && f.ends_with(suffix)));
                assert!(
                    files.len() < before,
                    "nothing in the package matches {entry}"
                );
            }
            None => expected.push(entry),
        }
    }
    assert_eq!(files, expected);

    let info = |member: &str| {
        let out = Command::new("dpkg-deb")
            .args(["--info"])
            .arg(&deb)
            .arg(member)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let conffiles = info("conffiles");
    assert!(
        conffiles.contains("/etc/beacond/beacond.toml"),
        "{conffiles}"
    );
    // The D-Bus policy is the package's, in /usr/share (an admin's own would go in /etc).
    assert!(!conffiles.contains("dbus-1"), "{conffiles}");
    let postinst = info("postinst");
    assert!(postinst.contains("adduser --system --group"), "{postinst}");
    assert!(
        postinst.contains("systemctl"),
        "the unit is enabled by the package: {postinst}"
    );
    let man_pages = String::from_utf8_lossy(&list.stdout)
        .lines()
        .filter(|l| l.contains("/usr/share/man/man1/beacond"))
        .count();
    let generated = std::fs::read_dir(std::path::Path::new(root).join("docs/man"))
        .unwrap()
        .count();
    assert_eq!(man_pages, generated, "every page in docs/man is packaged");
    // Debian's own checks of the package: permissions, changelog, copyright, maintainer scripts.
    // Deliberate exceptions are in debian/beacond.lintian-overrides, each with its reason.
    let lint = Command::new("lintian")
        .args(["--fail-on", "error,warning", "--tag-display-limit", "0"])
        .arg(&deb)
        .output()
        .expect("lintian (scripts/test installs it)");
    assert!(
        lint.status.success(),
        "lintian: {}{}",
        String::from_utf8_lossy(&lint.stdout),
        String::from_utf8_lossy(&lint.stderr)
    );
    let control = info("control");
    assert!(
        control.contains("Depends:") && control.contains("dbus"),
        "{control}"
    );
}
