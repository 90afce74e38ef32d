//! The `pgfleet` command: parse the CLI, build the runtime, run.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use pgfleet::{config, demo, Fleet};

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
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
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
    let runtime = pgfleet::runtime(loaded.config.general.workers)?;
    runtime.block_on(async {
        let fleet = Fleet::start(loaded).await?;
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut hup = signal(SignalKind::hangup())?;
        pgfleet::systemd::notify("READY=1");
        let mut stopped = fleet.state.stop.subscribe();
        loop {
            tokio::select! {
                _ = stopped.changed() => tracing::info!("stopping"),
                _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: stopping"),
                _ = term.recv() => tracing::info!("SIGTERM: stopping"),
                _ = hup.recv() => {
                    tracing::info!("SIGHUP: reloading the configuration");
                    pgfleet::systemd::notify("RELOADING=1");
                    // Logged inside; an invalid configuration leaves the running one.
                    let _ = pgfleet::fleet::reload(&fleet.state).await;
                    pgfleet::systemd::notify("READY=1");
                    continue;
                }
            }
            break;
        }
        pgfleet::systemd::notify("STOPPING=1");
        fleet.stop();
        if !fleet
            .wait_clients_gone(std::time::Duration::from_secs(5))
            .await
        {
            tracing::warn!("some clients were still connected after 5s");
        }
        Ok(())
    })
}
