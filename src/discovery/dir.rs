//! `discovery = "dir"`: a directory of member files, for tools that write files
//! (Ansible, consul-template, a cron job): each file holds one `host:port` per line
//! (blank lines and `#` comments allowed); the members are the lines of every file.
//! One file per member works, and so does one file for all of them.
//!
//! The directory is read every `discovery_interval`. Files whose name starts with `.`
//! or ends with `~`, `.tmp` or `.swp` are skipped, so a tool that writes a temporary
//! file and renames it is never read half-way. A line that is not `host:port` makes the
//! whole read an error (naming the file and line), and the members stay as they were.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use super::{Member, Poll, Source};
use crate::config;

/// Member files in a directory.
#[derive(Debug)]
pub struct MemberDir {
    dir: PathBuf,
}

impl MemberDir {
    pub fn new(config: &config::Cluster) -> anyhow::Result<MemberDir> {
        let dir = config
            .member_dir
            .clone()
            .context("member_dir is needed with discovery = \"dir\"")?;
        Ok(MemberDir { dir })
    }
}

impl Source for MemberDir {
    fn name(&self) -> &'static str {
        "dir"
    }

    fn members(&self) -> Poll<'_> {
        Box::pin(async move {
            let dir = self.dir.clone();
            tokio::task::spawn_blocking(move || read_dir(&dir))
                .await
                .context("reading the member directory")?
        })
    }
}

fn skipped(name: &str) -> bool {
    name.starts_with('.') || name.ends_with('~') || name.ends_with(".tmp") || name.ends_with(".swp")
}

/// Every member line of every file in `dir`, in file name order, without duplicates.
fn read_dir(dir: &Path) -> anyhow::Result<Vec<Member>> {
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot read {}", dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if skipped(&name) {
            continue;
        }
        let path = entry.path();
        if path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    let mut members: Vec<Member> = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            config::check_host(line)
                .map_err(|e| anyhow::anyhow!("{}:{}: {e}", path.display(), n + 1))?;
            if !members.iter().any(|m| m.addr == line) {
                members.push(Member::at(line));
            }
        }
    }
    Ok(members)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(dir: &Path) -> Vec<String> {
        read_dir(dir)
            .expect("readable")
            .into_iter()
            .map(|m| m.addr)
            .collect()
    }

    #[test]
    fn lines_of_every_file_in_name_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path();
        std::fs::write(p.join("b"), "127.0.0.1:5433\n# gone\n\n").expect("write");
        std::fs::write(p.join("a"), "127.0.0.1:5432  # primary\n[::1]:5434\n").expect("write");
        std::fs::write(p.join(".a.tmp"), "127.0.0.1:9").expect("write");
        std::fs::write(p.join("c.tmp"), "half-writ").expect("write");
        std::fs::write(p.join("d"), "127.0.0.1:5433\n").expect("write");
        assert_eq!(addrs(p), ["127.0.0.1:5432", "[::1]:5434", "127.0.0.1:5433"]);
        std::fs::remove_file(p.join("a")).expect("remove");
        assert_eq!(addrs(p), ["127.0.0.1:5433"]);
    }

    #[test]
    fn a_bad_line_names_its_file_and_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("m"), "127.0.0.1:5432\nnot an address\n").expect("write");
        let e = read_dir(dir.path()).expect_err("bad line").to_string();
        assert!(e.contains("/m:2") && e.contains("not an address"), "{e}");
        let e = read_dir(&dir.path().join("missing"))
            .expect_err("no dir")
            .to_string();
        assert!(e.contains("missing"), "{e}");
    }
}
