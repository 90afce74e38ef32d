//! The `pgfleet` command: parse the CLI, build the runtime, run.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use pgfleet::{config, demo, takeover};

/// mimalloc rather than the system's allocator: a client's login allocates (its
/// settings, its registry entry, its task), and glibc's malloc spent a quarter of a
/// login's instructions on that (docs/performance.md, "Logins").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    version,
    about = "PostgreSQL pooler and read balancer that knows each node's role"
)]
struct Cli {
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Compact, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Compact,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run with a configuration file, or a directory of *.toml files.
    Run {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate a configuration and print it with every default filled in.
    Check {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Start a local primary and replicas with pgfleet in front; Ctrl-C stops all.
    Demo(demo::DemoArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = match cli.command {
        Command::Demo(_) => "warn",
        _ => "info",
    };
    init_logs(cli.log_format, default_level);
    let result = match cli.command {
        Command::Run { config } => run(config),
        Command::Check { config } => check(config),
        Command::Demo(args) => demo::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pgfleet: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logs(format: LogFormat, default_level: &str) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    // Colours only on a terminal: a log file or journal gets plain text (and each
    // client's span fields are formatted without escape codes, at every login).
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Compact => builder.compact().init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn check(path: PathBuf) -> anyhow::Result<()> {
    let loaded = config::load(&path)?;
    pgfleet::auth::Userlist::load(&loaded.config.general.auth_file)?;
    print!("{}", toml::to_string_pretty(&loaded.config)?);
    Ok(())
}

fn run(path: PathBuf) -> anyhow::Result<()> {
    let loaded = config::load(&path)?;
    pgfleet::limits::raise_open_files();
    let runtime = pgfleet::runtime()?;
    runtime.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        // Before starting, so that a signal during the start is not lost.
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut hup = signal(SignalKind::hangup())?;
        let (fleet, control) = takeover::start(loaded).await?;
        pgfleet::systemd::notify("READY=1");
        let state = fleet.state.clone();
        let (mut stop, mut closing) = (state.stop.subscribe(), state.closing.subscribe());
        let drain = loop {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => break false,
                _ = int.recv() => { tracing::info!("SIGINT: stopping"); break false }
                _ = term.recv() => { tracing::info!("SIGTERM: draining"); break true }
                // A successor has taken the listening sockets over.
                _ = closing.wait_for(|c| *c) => break true,
                _ = hup.recv() => {
                    tracing::info!("SIGHUP: reloading the configuration");
                    pgfleet::systemd::reloading();
                    // Logged inside; an invalid configuration leaves the running one.
                    let _ = pgfleet::fleet::reload(&fleet.state).await;
                    pgfleet::systemd::notify("READY=1");
                }
            }
        };
        pgfleet::systemd::notify("STOPPING=1");
        if drain {
            state.closing.send_replace(true);
            let grace = state.current.load().config.general.shutdown_timeout;
            tracing::info!(?grace, "no longer accepting; waiting for connected clients to finish");
            tokio::select! {
                gone = fleet.wait_clients_gone(grace) => if !gone {
                    tracing::warn!(?grace, "clients still connected after shutdown_timeout: disconnecting them");
                },
                _ = int.recv() => tracing::info!("SIGINT: stopping now"),
                _ = term.recv() => tracing::info!("SIGTERM again: stopping now"),
                _ = stop.wait_for(|s| *s) => {}
            }
        }
        fleet.stop();
        // Sessions tell their clients (57P01) and end; do not wait on a stuck socket.
        if !fleet.wait_clients_gone(Duration::from_secs(5)).await {
            tracing::warn!("some clients were still connected 5s after stopping");
        }
        if let Some(task) = control {
            // It removes the control socket's file, unless a successor owns it now.
            let _ = tokio::time::timeout(Duration::from_secs(1), task).await;
        }
        Ok(())
    })
}
