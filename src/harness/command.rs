//! Running external programs: as the `postgres` user when we are root, with
//! captured output and a timeout.

use std::ffi::CString;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

/// Environment variables that could silently change what a client connects
/// to or how; every command gets them removed.
const SCRUBBED_ENV: &[&str] = &[
    "PGOPTIONS",
    "PGSERVICE",
    "PGSERVICEFILE",
    "PGTARGETSESSIONATTRS",
    "PGREQUIRESSL",
    "PGSSLMODE",
    "PGDATA",
];

/// Decides under which user server-side programs run.
#[derive(Debug, Clone)]
pub(super) struct Runner {
    /// `Some((uid, gid))` of the `postgres` user when we are root.
    as_postgres: Option<(u32, u32)>,
    /// Path of `runuser`, used only when `as_postgres` is set.
    runuser: PathBuf,
    /// Working directory for every command (a directory `postgres` can read,
    /// so programs do not warn about an inaccessible cwd).
    cwd: PathBuf,
}

impl Runner {
    /// Inspects the effective uid: as root, server programs will run as the
    /// `postgres` system user (which must exist).
    pub fn detect() -> Result<Runner> {
        // SAFETY: geteuid has no preconditions and cannot fail.
        let root = unsafe { libc::geteuid() } == 0;
        let as_postgres = if root {
            Some(lookup_user("postgres")?)
        } else {
            None
        };
        let runuser = ["/usr/sbin/runuser", "/sbin/runuser", "/usr/bin/runuser"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
            .unwrap_or_else(|| PathBuf::from("runuser"));
        Ok(Runner {
            as_postgres,
            runuser,
            cwd: std::env::temp_dir(),
        })
    }

    /// Sets the working directory used for every later command.
    pub fn set_cwd(&mut self, cwd: &Path) {
        self.cwd = cwd.to_path_buf();
    }

    /// A command for a server-side program, wrapped in
    /// `runuser -u postgres --` when running as root.
    pub fn server(&self, program: &Path) -> Command {
        let mut cmd = if self.as_postgres.is_some() {
            let mut c = Command::new(&self.runuser);
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        };
        self.prepare(&mut cmd);
        cmd
    }

    /// A command for a client program, run as the current user.
    pub fn client(&self, program: &Path) -> Command {
        let mut cmd = Command::new(program);
        self.prepare(&mut cmd);
        cmd
    }

    /// Common settings for every command.
    fn prepare(&self, cmd: &mut Command) {
        cmd.current_dir(&self.cwd);
        for var in SCRUBBED_ENV {
            cmd.env_remove(var);
        }
    }

    /// Makes `path` owned by the user the servers run as (no-op unless root).
    pub fn give(&self, path: &Path) -> Result<()> {
        if let Some((uid, gid)) = self.as_postgres {
            std::os::unix::fs::chown(path, Some(uid), Some(gid))
                .with_context(|| format!("chown postgres {}", path.display()))?;
        }
        Ok(())
    }

    /// Creates directory `path` owned by the server user.
    pub fn mkdir(&self, path: &Path) -> Result<()> {
        std::fs::create_dir_all(path).with_context(|| format!("creating {}", path.display()))?;
        self.give(path)
    }

    /// Writes `contents` to `path` and gives the file to the server user.
    pub fn write_file(&self, path: &Path, contents: &str) -> Result<()> {
        std::fs::write(path, contents).with_context(|| format!("writing {}", path.display()))?;
        self.give(path)
    }
}

/// Returns `(uid, gid)` of system user `name`.
fn lookup_user(name: &str) -> Result<(u32, u32)> {
    let cname = CString::new(name)?;
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: passwd is plain old data; all-zero is a valid value.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer refers to a live local of the right type and the
    // buffer length passed is the buffer's real length.
    let rc = unsafe {
        libc::getpwnam_r(
            cname.as_ptr(),
            &mut pwd,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        )
    };
    if rc != 0 || result.is_null() {
        bail!("running as root but there is no `{name}` system user to run the servers as");
    }
    Ok((pwd.pw_uid, pwd.pw_gid))
}

/// Runs `cmd` to completion with `stdin` fed to it, returning its standard
/// output (lossily decoded). Fails
/// with the command line, exit status, stderr and stdout if it exits
/// non-zero, and kills its process group if it outlives `timeout`.
pub(super) fn run(mut cmd: Command, stdin: Option<&str>, timeout: Duration) -> Result<String> {
    let desc = describe(&cmd);
    tracing::debug!(command = %desc, "running");
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .process_group(0);
    let mut child = cmd.spawn().with_context(|| format!("starting {desc}"))?;
    let pid = child.id() as libc::pid_t;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        let input = input.to_owned();
        // A separate thread so a large input cannot deadlock against output.
        // (Builder::spawn returns an error instead of panicking: this also
        // runs from Drop, possibly during a panic.)
        std::thread::Builder::new()
            .name("harness-stdin".into())
            .spawn(move || {
                let _ = pipe.write_all(input.as_bytes());
            })
            .context("spawning stdin writer thread")?;
    }
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("harness-wait".into())
        .spawn(move || {
            let _ = tx.send(child.wait_with_output());
        })
        .context("spawning wait thread")?;
    let out = match rx.recv_timeout(timeout) {
        Ok(out) => out.with_context(|| format!("waiting for {desc}"))?,
        Err(_) => {
            // SAFETY: kill has no memory-safety preconditions; the target is
            // the process group this function created for its own child.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
            let _ = rx.recv_timeout(Duration::from_secs(5));
            bail!("{desc} timed out after {timeout:?}");
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        return Err(anyhow!(
            "{desc} failed ({}): {}{}",
            out.status,
            stderr.trim(),
            if stdout.trim().is_empty() {
                String::new()
            } else {
                format!("\nstdout: {}", stdout.trim())
            }
        ));
    }
    Ok(stdout)
}

/// A readable one-line rendering of `cmd` for logs and errors.
fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        s.push(' ');
        s.push_str(&arg.to_string_lossy());
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn failure_reports_stderr_and_status() {
        let runner = Runner::detect().unwrap();
        let mut cmd = runner.client(Path::new("sh"));
        cmd.args(["-c", "echo out; echo oops >&2; exit 3"]);
        let err = run(cmd, None, Duration::from_secs(10))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("oops") && err.contains("out") && err.contains('3'),
            "{err}"
        );
    }

    #[test]
    fn stdin_is_fed_and_stdout_returned() {
        let runner = Runner::detect().unwrap();
        let out = run(
            runner.client(Path::new("cat")),
            Some("hello"),
            Duration::from_secs(10),
        );
        assert_eq!(out.unwrap(), "hello");
    }

    #[test]
    fn timeout_kills_the_process_group() {
        let runner = Runner::detect().unwrap();
        let mut cmd = runner.client(Path::new("sh"));
        cmd.args(["-c", "sleep 30; echo done"]);
        let t = Instant::now();
        let err = run(cmd, None, Duration::from_millis(300))
            .unwrap_err()
            .to_string();
        assert!(err.contains("timed out"), "{err}");
        assert!(t.elapsed() < Duration::from_secs(10));
    }
}
