//! `/status` rendered in headless Chromium: every member listed, live rates drawn, and
//! a screenshot left in `target/status-page.png`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::http::get;
use common::*;

const HTTP: &str = "http_listen = \"127.0.0.1:0\"";

/// Headless Chromium, run as a child in its own process group that is killed if it
/// outlives the test.
struct Browser {
    child: Child,
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // The group holds the browser's own helpers (zygote, renderer, GPU).
            unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
            let _ = self.child.wait();
        }
    }
}

/// The Chromium binary, or `None` when `PGFLEET_SKIP_BROWSER=1` says to skip.
fn chromium() -> Option<PathBuf> {
    if std::env::var("PGFLEET_SKIP_BROWSER").as_deref() == Ok("1") {
        eprintln!("PGFLEET_SKIP_BROWSER=1: the status page is not rendered in a browser");
        return None;
    }
    let found = ["chromium", "chromium-browser"].iter().find_map(|name| {
        std::env::var_os("PATH")?
            .to_str()?
            .split(':')
            .map(|dir| Path::new(dir).join(name))
            .find(|p| p.is_file())
    });
    match found {
        Some(p) => Some(p),
        None => panic!(
            "chromium is not on PATH: install Debian's chromium (apt-get install chromium) \
             or set PGFLEET_SKIP_BROWSER=1"
        ),
    }
}

/// Runs headless Chromium on `url` with `args`, at most 90 s; returns its stdout.
fn run_browser(bin: &Path, dir: &Path, args: &[String], url: &str) -> String {
    let profile = tempfile::Builder::new()
        .prefix("chromium-")
        .tempdir_in(dir)
        .unwrap();
    let stdout_path = profile.path().join("stdout");
    let stderr_path = profile.path().join("stderr");
    let mut cmd = Command::new(bin);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
    ])
    .arg(format!(
        "--user-data-dir={}",
        profile.path().join("profile").display()
    ))
    .args(args)
    .arg(url)
    .stdin(Stdio::null())
    .stdout(std::fs::File::create(&stdout_path).unwrap())
    .stderr(std::fs::File::create(&stderr_path).unwrap());
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut browser = Browser {
        child: cmd.spawn().expect("chromium starts"),
    };
    let start = Instant::now();
    let status = loop {
        if let Some(status) = browser.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "chromium still running after 90 s: {}",
            std::fs::read_to_string(&stderr_path).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    assert!(status.success(), "chromium failed ({status}): {stderr}");
    std::fs::read_to_string(&stdout_path).unwrap()
}

/// Runs `select 1` on `client` until `stop` is set (at most 2 minutes).
async fn traffic(client: tokio_postgres::Client, stop: Arc<AtomicBool>) {
    let start = Instant::now();
    while !stop.load(Ordering::Relaxed) && start.elapsed() < Duration::from_secs(120) {
        if client.simple_query("select 1").await.is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_shows_each_member_with_live_rates_in_a_browser() {
    // Transaction mode: each transaction reaches the counters as it ends, so the rates
    // move with every poll.
    let s = setup(2, HTTP, "", "pool_mode = \"transaction\"").await;
    let http = s.fleet.http.expect("http_listen is served");
    let addrs: Vec<String> = (0..3).map(|n| s.cluster.addr(n).to_string()).collect();

    let page = get(http, "/status").await;
    assert_eq!(page.status, 200);
    assert!(page.headers["content-type"].starts_with("text/html"));
    // Self-contained: no stylesheet, script or image fetched from elsewhere.
    for outside in ["<link", " src=", "@import", "url("] {
        assert!(!page.body.contains(outside), "the page loads {outside}");
    }

    // Traffic on the writer and a reader, so the sparklines have something to draw.
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();
    for endpoint in ["writer", "reader", "reader"] {
        let client = app(s.addr(endpoint)).await;
        load.push(tokio::spawn(traffic(client, stop.clone())));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    let json = get(http, "/status.json").await;
    assert_eq!(json.status, 200);
    let status: serde_json::Value = serde_json::from_str(&json.body).unwrap();
    assert_eq!(status["clients"], 3);
    let cluster = &status["clusters"][0];
    assert_eq!(cluster["name"], "main");
    let members = cluster["members"].as_array().unwrap();
    let seen: Vec<&str> = members
        .iter()
        .map(|m| m["addr"].as_str().unwrap())
        .collect();
    assert_eq!(seen, addrs);
    for (n, m) in members.iter().enumerate() {
        assert_eq!(m["role"], if n == 0 { "primary" } else { "replica" });
        assert_eq!(m["state"], "serving");
    }
    assert!(members[0]["xacts"].as_u64().unwrap() > 0);
    let ready: Vec<bool> = cluster["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["ready"].as_bool().unwrap())
        .collect();
    assert_eq!(ready, [true, true, true]);

    let Some(bin) = chromium() else {
        stop.store(true, Ordering::Relaxed);
        return;
    };
    let url = format!("http://{http}/status");
    let dir = s.dir.path().to_owned();
    let dom = blocking(|| {
        run_browser(
            &bin,
            &dir,
            &["--virtual-time-budget=5000".into(), "--dump-dom".into()],
            &url,
        )
    });
    for addr in &addrs {
        assert!(
            dom.contains(&format!("data-member=\"{addr}\"")),
            "{addr} is not in the rendered page:\n{dom}"
        );
    }
    assert!(dom.contains("class=\"live ok\""), "{dom}");
    assert!(dom.contains("state serving"), "{dom}");
    // A sparkline per member, with a line once two polls have been seen.
    assert_eq!(dom.matches("<svg class=\"spark\"").count(), 3, "{dom}");
    assert!(dom.contains("<polyline"), "{dom}");

    let shot = dir.join("status-page.png");
    blocking(|| {
        run_browser(
            &bin,
            &dir,
            &[
                format!("--screenshot={}", shot.display()),
                "--window-size=1200,800".into(),
                // Twenty polls, for sparklines a person can read.
                "--virtual-time-budget=20000".into(),
            ],
            &url,
        )
    });
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    let png = std::fs::read(&shot).expect("chromium wrote the screenshot");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    assert!(
        png.len() > 10_000,
        "a near-empty screenshot: {} bytes",
        png.len()
    );
    // For a person to look at: target/status-page.png.
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).parent().unwrap();
    std::fs::copy(&shot, target.join("status-page.png")).unwrap();
}
