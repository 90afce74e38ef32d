//! Loading and validation: defaults, errors that name file and key, merging.

use super::*;

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

const CLUSTER: &str = r#"
[clusters.main]
hosts = ["127.0.0.1:5432", "127.0.0.1:5433"]
[clusters.main.endpoints.reader]
listen = "127.0.0.1:6432"
role = "replica"
"#;

#[test]
fn defaults_and_durations() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!("[general]\nstats_period = \"500ms\"\n{CLUSTER}");
    let p = write(dir.path(), "a.toml", &text);
    let l = load(&p).unwrap();
    let c = &l.config.clusters["main"];
    assert_eq!(c.pool.default_pool_size, 20);
    assert_eq!(c.endpoints["reader"].balance, Balance::Leastconn);
    assert_eq!(l.config.general.stats_period.as_millis(), 500);
    assert_eq!(l.config.general.auth_file, dir.path().join("userlist.txt"));
}

#[test]
fn unknown_key_names_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "a.toml",
        &format!("{CLUSTER}\nbalanse = \"x\"\n"),
    );
    let e = load(&p).unwrap_err().to_string();
    assert!(e.contains("a.toml") && e.contains("balanse"), "{e}");
}

#[test]
fn bad_values_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "a.toml",
        &CLUSTER.replace("127.0.0.1:5433", "nope"),
    );
    let e = load(&p).unwrap_err().to_string();
    assert!(
        e.contains("clusters.main.hosts") && e.contains("nope"),
        "{e}"
    );
    let text = CLUSTER.replace("role = \"replica\"", "role = \"replica\"\nbalance = \"x\"");
    let p = write(dir.path(), "b.toml", &text);
    assert!(load(&p).unwrap_err().to_string().contains("b.toml"));
    let p = write(
        dir.path(),
        "c.toml",
        &format!("{CLUSTER}\n[clusters.main.pool]\nserver_lifetime = \"soon\"\n"),
    );
    let e = load(&p).unwrap_err().to_string();
    assert!(e.contains("soon"), "{e}");
    let text = format!("{CLUSTER}\n[clusters.main.pool]\nquery_wait_timeout = \"5000000000s\"\n");
    let p = write(dir.path(), "d.toml", &text);
    let e = load(&p).unwrap_err().to_string();
    assert!(
        e.contains("query_wait_timeout") && e.contains("365 days"),
        "{e}"
    );
    let p = write(
        dir.path(),
        "e.toml",
        &CLUSTER.replace("127.0.0.1:5433", "::1:5433"),
    );
    assert!(load(&p).unwrap_err().to_string().contains("brackets"));
    let p = write(
        dir.path(),
        "f.toml",
        &CLUSTER.replace("127.0.0.1:5433", "[::1]:5433"),
    );
    load(&p).unwrap();
    let p = write(
        dir.path(),
        "g.toml",
        &CLUSTER.replace("127.0.0.1:5433", "127.0.0.1:5432"),
    );
    assert!(load(&p).unwrap_err().to_string().contains("twice"));
    let p = write(
        dir.path(),
        "h.toml",
        &format!("[general]\nmax_pending_logins = 0\n{CLUSTER}"),
    );
    let e = load(&p).unwrap_err().to_string();
    assert!(e.contains("general.max_pending_logins"), "{e}");
}

#[test]
fn directory_merges_and_rejects_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "00-general.toml",
        "[general]\nmax_client_conn = 5\n",
    );
    write(dir.path(), "main.toml", CLUSTER);
    let other = CLUSTER.replace("main", "other").replace("6432", "6442");
    write(dir.path(), "other.toml", &other);
    write(dir.path(), "notes.txt", "ignored");
    let l = load(dir.path()).unwrap();
    assert_eq!(l.config.general.max_client_conn, 5);
    assert_eq!(l.config.clusters.len(), 2);
    write(dir.path(), "dup.toml", &CLUSTER.replace("6432", "6452"));
    let e = load(dir.path()).unwrap_err().to_string();
    assert!(e.contains("dup.toml") && e.contains("clusters.main"), "{e}");
}

#[test]
fn listen_addresses_are_unique() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!("{CLUSTER}\n[clusters.main.endpoints.writer]\nlisten = \"127.0.0.1:6432\"\nrole = \"primary\"\n");
    let p = write(dir.path(), "a.toml", &text);
    let e = load(&p).unwrap_err().to_string();
    assert!(e.contains("endpoints.writer.listen"), "{e}");
}

#[test]
fn shutdown_timeout_and_takeover_socket() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "a.toml", CLUSTER);
    let g = load(&p).unwrap().config.general;
    assert_eq!(
        (g.shutdown_timeout.as_secs(), g.takeover_socket),
        (30, None)
    );
    let text = format!("[general]\nshutdown_timeout = \"2s\"\ntakeover_socket = \"/run/pgfleet/t.sock\"\n{CLUSTER}");
    let g = load(&write(dir.path(), "b.toml", &text))
        .unwrap()
        .config
        .general;
    assert_eq!(g.shutdown_timeout.as_secs(), 2);
    assert_eq!(g.takeover_socket.unwrap(), Path::new("/run/pgfleet/t.sock"));
    for (name, line, key) in [
        ("c.toml", "shutdown_timeout = \"soon\"", "soon"),
        (
            "d.toml",
            "shutdown_timeout = \"400days\"",
            "general.shutdown_timeout",
        ),
        (
            "e.toml",
            "takeover_socket = \"t.sock\"",
            "general.takeover_socket",
        ),
    ] {
        let text = format!("[general]\n{line}\n{CLUSTER}");
        let e = load(&write(dir.path(), name, &text))
            .unwrap_err()
            .to_string();
        assert!(e.contains(name) && e.contains(key), "{e}");
    }
}
