//! The `flowgate` command: serve, check-config, hash-key, emulator, demo
//! (the last two with the default `emulator` feature).

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};

/// mimalloc instead of glibc malloc: the gateway allocates and frees many
/// small buffers per call across worker threads, where glibc's per-thread
/// arenas kept growing and trimming their heaps (an `mprotect` and a lock
/// round trip per call in the Invoke benchmark).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use flowgate::{
    admin,
    auth::{KeyHash, key::generate_key},
    config::Config,
    logging, server,
};
#[cfg(feature = "emulator")]
use flowgate::{config::LogFormat, demo};
use flowgate_telemetry_setup::Telemetry;

/// gRPC gateway in front of hosted AI-workflow APIs.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        /// Configuration file (TOML).
        #[arg(long, short, env = "FLOWGATE_CONFIG")]
        config: PathBuf,
    },
    /// Validate a configuration file (and that provider keys can be read)
    /// without serving.
    CheckConfig {
        /// Configuration file (TOML).
        config: PathBuf,
    },
    /// Print the `sha256:<hex>` of a caller API key read from stdin, for
    /// `callers.<name>.key_hashes`; with `--generate`, make a new key and
    /// print it and its hash.
    HashKey {
        /// Generate a new high-entropy key instead of reading one.
        #[arg(long)]
        generate: bool,
    },
    #[cfg(feature = "emulator")]
    /// Run the provider emulator (Fetch Hive, AI Tutor and Knouds on one port).
    Emulator {
        /// Listen address.
        #[arg(long, default_value = "127.0.0.1:8700")]
        listen: std::net::SocketAddr,
        /// Lift every rate limit and concurrency cap (for load tests).
        #[arg(long)]
        no_rate_limits: bool,
    },
    #[cfg(feature = "emulator")]
    /// Start the emulator and the gateway on loopback and make real gRPC
    /// calls to every dialect; with `--keep`, keep them up on fixed ports
    /// for calls by hand until Ctrl-C.
    Demo {
        /// Keep the emulator and the gateway running (on the addresses
        /// below), print the configuration and commands to try, and stop
        /// on Ctrl-C or SIGTERM.
        #[arg(long)]
        keep: bool,
        /// With --keep: the gateway's gRPC address.
        #[arg(long, default_value = "127.0.0.1:50051", requires = "keep")]
        listen: std::net::SocketAddr,
        /// With --keep: the provider emulator's address.
        #[arg(long, default_value = "127.0.0.1:8700", requires = "keep")]
        emulator_listen: std::net::SocketAddr,
        /// With --keep: the admin address (/metrics, /healthz, /readyz).
        #[arg(long, default_value = "127.0.0.1:9464", requires = "keep")]
        admin_listen: std::net::SocketAddr,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            report(&format!("cannot start the async runtime: {err}"));
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(cli.command));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            report(&message);
            ExitCode::FAILURE
        }
    }
}

#[expect(
    clippy::print_stderr,
    reason = "the CLI reports fatal errors on stderr"
)]
fn report(message: &str) {
    eprintln!("flowgate: {message}");
}

#[expect(
    clippy::print_stdout,
    reason = "check-config reports its verdict on stdout"
)]
fn say(message: &str) {
    println!("{message}");
}

async fn run(command: Command) -> Result<(), String> {
    match command {
        Command::Serve { config } => {
            let config =
                Config::load(&config).map_err(|err| format!("invalid configuration:\n{err}"))?;
            let telemetry = Telemetry::builder(config.telemetry_settings())
                .init()
                .map_err(|err| format!("cannot start telemetry: {err}"))?;
            logging::route_panics();
            let app = server::build(&config, |var| std::env::var(var).ok())
                .map_err(|err| format!("invalid configuration:\n{err}"))?;
            let listeners = server::Listeners::bind(&config)
                .await
                .map_err(|err| format!("cannot listen: {err}"))?;
            let admin = match telemetry.prometheus() {
                Some(metrics) => Some(
                    admin::spawn(config.server.admin_listen, metrics, app.readiness.clone())
                        .await
                        .map_err(|err| {
                            format!(
                                "cannot listen on server.admin_listen {}: {err}",
                                config.server.admin_listen
                            )
                        })?,
                ),
                None => None,
            };
            let (listen, ingress) = listeners
                .local_addrs()
                .map_err(|err| format!("cannot listen: {err}"))?;
            let names = |names: Vec<&String>| {
                names
                    .into_iter()
                    .map(String::as_str)
                    .collect::<Vec<_>>()
                    .join(",")
            };
            // Plain values (a JSON log gets strings, not Rust debug text);
            // an address that is not configured is left out.
            tracing::info!(
                listen = %listen,
                ingress = ingress.map(tracing::field::display),
                admin = admin.as_ref().map(|admin| tracing::field::display(admin.addr)),
                traces = telemetry.traces_enabled(),
                providers = %names(config.providers.keys().collect()),
                callers = %names(config.callers.keys().collect()),
                "flowgate serving"
            );
            if config.callers.is_empty() {
                tracing::warn!(
                    "no callers configured: every call is the caller `unauthenticated`, with \
                     every capability (allowed on loopback, or by auth.allow_unauthenticated)"
                );
            } else if config.auth.allow_unauthenticated {
                tracing::warn!(
                    "auth.allow_unauthenticated = true: calls without credentials are the caller \
                     `unauthenticated`, with every capability"
                );
            }
            let served = server::serve(app, listeners, shutdown_signal()).await;
            // Drained: stop scraping, then flush what telemetry buffered.
            if let Some(admin) = admin {
                admin.shutdown().await;
            }
            telemetry.shutdown().await;
            served.map_err(|err| err.to_string())
        }
        Command::CheckConfig { config: path } => {
            let config = Config::load(&path)
                .map_err(|err| format!("{} is invalid:\n{err}", path.display()))?;
            config
                .check_secrets(|var| std::env::var(var).ok())
                .map_err(|err| format!("{} is invalid:\n{err}", path.display()))?;
            server::build(&config, |var| std::env::var(var).ok())
                .map_err(|err| format!("{} is invalid:\n{err}", path.display()))?;
            if let Some(tls) = &config.server.tls {
                flowgate::tls::TlsMaterial::load(tls)
                    .map_err(|err| format!("{} is invalid:\n{err}", path.display()))?;
            }
            say(&format!(
                "{}: OK ({} provider{}: {})",
                path.display(),
                config.providers.len(),
                if config.providers.len() == 1 { "" } else { "s" },
                config
                    .providers
                    .iter()
                    .map(|(name, provider)| format!("{name} ({:?})", provider.kind).to_lowercase())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            Ok(())
        }
        Command::HashKey { generate } => {
            if generate {
                let key = generate_key();
                say(&format!(
                    "key (give it to the caller, who sends `authorization: Bearer <key>`; it is \
                     shown only now):\n{key}\n\
                     hash (put it in the config, callers.<name>.key_hashes):\n{}",
                    KeyHash::of(key.as_bytes()).to_config()
                ));
                return Ok(());
            }
            let mut key = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin().lock(), &mut key)
                .map_err(|err| format!("cannot read the key from stdin: {err}"))?;
            let key = key.trim_end_matches(['\r', '\n']);
            if key.is_empty() || key.chars().any(char::is_whitespace) {
                return Err(
                    "expected one key on stdin (no spaces), e.g. `flowgate hash-key < key.txt`; \
                     `flowgate hash-key --generate` makes one"
                        .into(),
                );
            }
            say(&KeyHash::of(key.as_bytes()).to_config());
            Ok(())
        }
        #[cfg(feature = "emulator")]
        Command::Emulator {
            listen,
            no_rate_limits,
        } => {
            logging::init(LogFormat::Text, "info");
            let mut config = flowgate_emulator::EmulatorConfig::default();
            if no_rate_limits {
                config.fetchhive_daily_limit = u32::MAX;
                config.fetchhive_concurrency_limit = u32::MAX;
                config.aitutor_per_second_limit = u32::MAX;
                config.knouds_window = std::time::Duration::from_millis(1);
            }
            let emulator = flowgate_emulator::Emulator::start(config, listen)
                .await
                .map_err(|err| format!("cannot start the emulator on {listen}: {err}"))?;
            tracing::info!(
                fetchhive = %emulator.fetchhive_base_url(),
                aitutor = %emulator.aitutor_base_url(),
                knouds = %emulator.knouds_base_url(),
                "emulator listening (Ctrl-C to stop)"
            );
            shutdown_signal().await;
            emulator.shutdown().await;
            Ok(())
        }
        #[cfg(feature = "emulator")]
        Command::Demo { keep: false, .. } => demo::run()
            .await
            .map_err(|err| format!("demo failed: {err}")),
        #[cfg(feature = "emulator")]
        Command::Demo {
            keep: true,
            listen,
            emulator_listen,
            admin_listen,
        } => {
            let addrs = demo::keep::KeepAddrs {
                gateway: listen,
                emulator: emulator_listen,
                admin: admin_listen,
            };
            demo::keep::keep(addrs, shutdown_signal())
                .await
                .map_err(|err| format!("demo failed: {err}"))
        }
    }
}

/// Resolves on SIGTERM (Kubernetes) or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
