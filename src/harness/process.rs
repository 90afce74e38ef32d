//! Finding a node's server processes through `postmaster.pid` and `/proc`,
//! and signalling them.
//!
//! Only processes whose `/proc/PID/comm` is `postgres` are ever signalled:
//! the postmaster named in the node's `postmaster.pid` and its descendants.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

/// What `postmaster.pid` says about a (possibly dead) postmaster.
#[derive(Debug, Clone, Copy)]
pub(super) struct PidFile {
    /// The postmaster's pid.
    pub pid: i32,
    /// SysV shared memory key and id of its interlock segment, if recorded.
    pub shm: Option<(libc::key_t, libc::c_int)>,
}

/// Reads `data_dir/postmaster.pid`, if present and well-formed.
pub(super) fn read_pid_file(data_dir: &Path) -> Option<PidFile> {
    let text = std::fs::read_to_string(data_dir.join("postmaster.pid")).ok()?;
    let mut lines = text.lines();
    let pid = lines.next()?.trim().parse().ok()?;
    // Line 7 holds "<key> <shmid>".
    let shm = text.lines().nth(6).and_then(|l| {
        let mut it = l.split_whitespace();
        Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
    });
    Some(PidFile { pid, shm })
}

/// The live postmaster of `data_dir`, if its pid file names a live
/// `postgres` process.
pub(super) fn postmaster(data_dir: &Path) -> Option<i32> {
    read_pid_file(data_dir)
        .map(|p| p.pid)
        .filter(|&pid| is_live_postgres(pid))
}

/// Name and state letter of `pid` from `/proc/PID/stat`, plus its parent.
fn stat(pid: i32) -> Option<(String, char, i32)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_string();
    let mut rest = text.get(close + 1..)?.split_whitespace();
    let state = rest.next()?.chars().next()?;
    let ppid = rest.next()?.parse().ok()?;
    Some((comm, state, ppid))
}

/// True if `pid` exists, is not a zombie, and its comm is `postgres`.
pub(super) fn is_live_postgres(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    let comm_ok = std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|c| c.trim_end() == "postgres")
        .unwrap_or(false);
    comm_ok && matches!(stat(pid), Some((_, state, _)) if state != 'Z' && state != 'X')
}

/// All live `postgres` descendants of `root`, found by scanning the parent
/// pid of every process in `/proc`.
pub(super) fn descendants(root: i32) -> Vec<i32> {
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
                continue;
            };
            if let Some((_, _, ppid)) = stat(pid) {
                children.entry(ppid).or_default().push(pid);
            }
        }
    }
    let mut out = Vec::new();
    let mut todo = vec![root];
    while let Some(p) = todo.pop() {
        for &c in children.get(&p).map(Vec::as_slice).unwrap_or_default() {
            if is_live_postgres(c) && !out.contains(&c) {
                out.push(c);
                todo.push(c);
            }
        }
    }
    out
}

/// Sends `sig` to `pid` after checking it is a live `postgres` process.
pub(super) fn signal(pid: i32, sig: libc::c_int) -> Result<()> {
    if !is_live_postgres(pid) {
        bail!("pid {pid} is not a live postgres process");
    }
    // SAFETY: kill has no memory-safety preconditions.
    if unsafe { libc::kill(pid, sig) } != 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::ESRCH) {
            bail!("kill({pid}, {sig}): {err}");
        }
    }
    Ok(())
}

/// Sends `sig` to every pid in `pids` that is still a live postgres
/// process, ignoring ones that vanished meanwhile.
pub(super) fn signal_all(pids: &[i32], sig: libc::c_int) {
    for &pid in pids {
        if is_live_postgres(pid) {
            let _ = signal(pid, sig);
        }
    }
}

/// Waits until none of `pids` is a live postgres process (zombies count as
/// gone). Returns false on timeout.
pub(super) fn wait_gone(pids: &[i32], timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if !pids.iter().any(|&p| is_live_postgres(p)) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Removes the lock files a killed postmaster leaves behind, so the server
/// can start again even while the dead pid lingers as an unreaped zombie
/// (PostgreSQL would take the zombie for a live postmaster): the data
/// directory's `postmaster.pid` (plus its orphaned SysV shared memory
/// segment) and the unix socket's `socket_lock` file. Fails if a lock still
/// belongs to a live postgres process.
pub(super) fn clear_stale_locks(data_dir: &Path, socket_lock: &Path) -> Result<()> {
    if let Some(pf) = read_pid_file(data_dir) {
        remove_stale_lock(&data_dir.join("postmaster.pid"), pf.pid)?;
        if let Some((key, shmid)) = pf.shm {
            remove_orphan_shm(key, shmid);
        }
    }
    let socket_pid = std::fs::read_to_string(socket_lock)
        .ok()
        .and_then(|t| t.lines().next()?.trim().parse().ok());
    if let Some(pid) = socket_pid {
        remove_stale_lock(socket_lock, pid)?;
    }
    Ok(())
}

/// Removes lock file `path` written by `pid`, unless `pid` is still alive.
fn remove_stale_lock(path: &Path, pid: i32) -> Result<()> {
    if is_live_postgres(pid) {
        bail!("{} belongs to live postgres process {pid}", path.display());
    }
    match std::fs::remove_file(path) {
        Ok(()) => {
            tracing::debug!(path = %path.display(), pid, "removed stale lock file");
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Removes SysV segment `shmid` if it still has key `key` and no process
/// is attached to it.
fn remove_orphan_shm(key: libc::key_t, shmid: libc::c_int) {
    if shmid <= 0 {
        return;
    }
    // SAFETY: shmid_ds is plain old data; all-zero is a valid value.
    let mut ds: libc::shmid_ds = unsafe { std::mem::zeroed() };
    // SAFETY: `ds` is a valid, writable shmid_ds for IPC_STAT to fill.
    if unsafe { libc::shmctl(shmid, libc::IPC_STAT, &mut ds) } != 0 {
        return;
    }
    if ds.shm_perm.__key == key && ds.shm_nattch == 0 {
        // SAFETY: IPC_RMID ignores the buffer argument.
        unsafe { libc::shmctl(shmid, libc::IPC_RMID, std::ptr::null_mut()) };
        tracing::debug!(shmid, "removed orphaned shared memory segment");
    }
}

/// The POSIX shared memory segments (PostgreSQL's dynamic shared memory,
/// `/dev/shm/PostgreSQL.*`) of the server whose processes are `pids`: those
/// they have mapped, and those the control segment among them lists (a pinned
/// segment, such as the statistics' 1 MiB area, may be mapped by no process at
/// the time). A postmaster that exits removes them; one killed with SIGKILL
/// leaves them in `/dev/shm`, in memory, until someone unlinks them.
pub(super) fn shm_segments(pids: &[i32]) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    for pid in pids {
        let Ok(maps) = std::fs::read_to_string(format!("/proc/{pid}/maps")) else {
            continue;
        };
        // The path is the sixth field; an unlinked file ends in " (deleted)".
        let paths = maps.lines().filter_map(|l| l.split_whitespace().nth(5));
        out.extend(
            paths
                .filter(|p| p.starts_with("/dev/shm/PostgreSQL."))
                .map(PathBuf::from),
        );
    }
    out.sort();
    out.dedup();
    let listed: Vec<PathBuf> = out.iter().flat_map(|p| control_items(p)).collect();
    out.extend(listed);
    out.sort();
    out.dedup();
    out
}

/// `DSM_CONTROL_MAGIC` of PostgreSQL's `dsm.c`.
const DSM_CONTROL_MAGIC: u32 = 0x9a50_3d32;
/// `dsm_control_header` before its items: magic, nitems, maxitems, padding.
const DSM_HEADER: usize = 16;
/// One `dsm_control_item` on a 64-bit server (PostgreSQL 14 and later): handle,
/// refcnt, first_page, npages, impl_private_pm_handle, pinned, padding.
const DSM_ITEM: usize = 40;

/// The segments listed in use by `path` if it is a dynamic shared memory control
/// segment of the layout above; none if it is another segment or another layout.
fn control_items(path: &Path) -> Vec<PathBuf> {
    let Ok(bytes) = std::fs::read(path) else {
        return Vec::new();
    };
    let word = |at: usize| -> Option<u32> {
        let b = bytes.get(at..at + 4)?;
        Some(u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
    };
    let (Some(DSM_CONTROL_MAGIC), Some(nitems), Some(maxitems)) = (word(0), word(4), word(8))
    else {
        return Vec::new();
    };
    let (nitems, maxitems) = (nitems as usize, maxitems as usize);
    if bytes.len() != DSM_HEADER + DSM_ITEM * maxitems || nitems > maxitems {
        return Vec::new();
    }
    (0..nitems)
        .filter_map(|i| {
            let at = DSM_HEADER + DSM_ITEM * i;
            let (handle, refcnt) = (word(at)?, word(at + 4)?);
            (refcnt > 0).then(|| PathBuf::from(format!("/dev/shm/PostgreSQL.{handle}")))
        })
        .collect()
}

/// Unlinks the shared memory segments `paths` of a killed server.
pub(super) fn remove_shm_segments(paths: &[PathBuf]) {
    for path in paths {
        match std::fs::remove_file(path) {
            Ok(()) => {
                tracing::debug!(path = %path.display(), "removed a killed server's shared memory segment")
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove a killed server's shared memory segment")
            }
        }
    }
}
