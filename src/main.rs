//! The `imsbridge` command: parses the command line, loads the config, calls the library.

use std::io::{BufRead, IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio::net::TcpListener;

use imsbridge::config::{Config, ProcessEnv};

#[derive(Parser)]
#[command(
    name = "imsbridge",
    // The commit as `imsbridge_build_info{commit}` names it (build.rs).
    version = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("IMSBRIDGE_COMMIT"), ")"),
    about = "Authenticating SOAP reverse proxy in front of Adobe Campaign: legacy callers keep their session tokens, Campaign gets IMS technical-account Bearer tokens"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log lines as text (the default) or as JSON objects, one per line.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Serve, with the config in FILE.
    ///
    /// SIGHUP reloads FILE (a config with an error is refused and the running one stays);
    /// SIGTERM or Ctrl-C stops accepting, lets requests in flight finish (server.shutdown_grace)
    /// and exits.
    Run {
        /// The TOML config (see fixtures/imsbridge.toml for every key); `imsbridge check`
        /// validates it and fetches a token per profile.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Validate the config, fetch a token for every profile and show its claims; exit 1 if any
    /// profile fails.
    Check {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Also send one harmless authenticated call (xtk:session#GetUserInfo) to Campaign per
        /// profile.
        #[arg(long)]
        probe: bool,
    },
    /// Read a password from standard input and print its argon2 hash for the config.
    HashPassword,
    /// Print every legacy login the proxy has seen (from its admin listener's /inventory), with
    /// a [[callers]] entry for each login no caller owns.
    Inventory {
        /// The admin listener, e.g. http://127.0.0.1:9090; repeat it for each replica: their
        /// inventories are merged.
        #[arg(long = "admin", value_name = "URL", required = true)]
        admins: Vec<String>,
        #[command(flatten)]
        password: AdminPassword,
    },
    /// Print a replica's cut-over verdicts: for each caller, whether it is ready for the next
    /// step of its migration, and the numbers that says so. Exits 0 whatever the verdicts.
    Cutover {
        /// The admin listener, e.g. http://127.0.0.1:9090 (one replica of a fleet that shares
        /// a [state] store speaks for all).
        #[arg(long, value_name = "URL")]
        admin: String,
        /// The JSON of `GET /cutover` itself, for scripts.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        password: AdminPassword,
    },
    /// Turn the `-setimsjwtauth:Org/Client/TechAccount/Secret/Base64Key` string of
    /// `nlserver config` into a `jwt` profile; the secret and the key go to files (mode 0600).
    ImportNlserver {
        /// The string; `-` or absent: read it from standard input (keeps it out of the shell
        /// history and the process list).
        credential: Option<String>,
        /// Name of the profile, and prefix of the files written.
        #[arg(long, default_value = "campaign")]
        name: String,
        /// Folder of the files written.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// Metascope of the technical account (repeat for several).
        #[arg(long = "metascope", default_value = "ent_campaign_sdk")]
        metascopes: Vec<String>,
    },
    /// Run the proxy with a stand-in IMS and Campaign on loopback, and show Adobe's
    /// before/after PushEvent call going through it.
    Demo {
        /// Where the proxy listens (another port is taken if this one is busy); with
        /// --stand-ins, the address written into the config.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Stop after showing the call instead of serving until Ctrl-C.
        #[arg(long)]
        once: bool,
        /// Start only the stand-in IMS and Campaign, print a config for them and the commands
        /// to try (`check --probe`, then `run`), and keep them up until Ctrl-C.
        #[arg(long)]
        stand_ins: bool,
        /// With --stand-ins: also write the config to FILE.
        #[arg(long, value_name = "FILE", requires = "stand_ins")]
        write_config: Option<PathBuf>,
    },
}

/// The admin listener's `[admin] password`, for the commands that read it.
#[derive(clap::Args)]
struct AdminPassword {
    /// A file holding the admin listener's password ([admin] password), one line; without it
    /// the password is read from the environment variable IMSBRIDGE_ADMIN_PASSWORD, if set.
    #[arg(long, value_name = "FILE")]
    admin_password_file: Option<PathBuf>,
}

impl AdminPassword {
    /// The password: the file's first line, or the environment variable's value.
    fn read(&self) -> Result<Option<String>, String> {
        if let Some(path) = &self.admin_password_file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("--admin-password-file {}: {e}", path.display()))?;
            let password = text.lines().next().unwrap_or_default().to_owned();
            if password.is_empty() {
                return Err(format!(
                    "--admin-password-file {}: the file is empty",
                    path.display()
                ));
            }
            return Ok(Some(password));
        }
        Ok(std::env::var(imsbridge::cli::PASSWORD_ENV)
            .ok()
            .filter(|password| !password.is_empty()))
    }
}

/// Standard output for a command's report. Once its reader has gone (`imsbridge check | head`),
/// the rest is dropped: the command finishes as it would have, its exit status its own, with
/// neither a panic nor a "Broken pipe" message.
struct Report {
    out: std::io::Stdout,
    gone: bool,
}

impl Report {
    fn new() -> Report {
        Report {
            out: std::io::stdout(),
            gone: false,
        }
    }

    fn tolerate(&mut self, result: std::io::Result<()>) -> std::io::Result<()> {
        match result {
            Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => {
                self.gone = true;
                Ok(())
            }
            other => other,
        }
    }
}

impl Write for Report {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        if !self.gone {
            let written = self.out.write_all(bytes);
            self.tolerate(written)?;
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.gone {
            return Ok(());
        }
        let flushed = self.out.flush();
        self.tolerate(flushed)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Run { config } = cli.command {
        // Logging starts once the config says where traces go.
        return run(config, cli.log_format);
    }
    let _log = init_logging(cli.log_format, None);
    match cli.command {
        Command::Run { .. } => unreachable!("served above"),
        Command::Check { config, probe } => check(config, probe),
        Command::HashPassword => hash_password(),
        Command::Inventory { admins, password } => inventory(&admins, &password),
        Command::Cutover {
            admin,
            json,
            password,
        } => cutover(&admin, json, &password),
        Command::ImportNlserver {
            credential,
            name,
            dir,
            metascopes,
        } => import_nlserver(credential, &name, &dir, &metascopes),
        Command::Demo {
            listen,
            once,
            stand_ins,
            write_config,
        } => demo(listen, once, stand_ins, write_config),
    }
}

/// Logs on standard error, as text or JSON; `RUST_LOG` filters (`info` by default, e.g.
/// `RUST_LOG=info,imsbridge=debug`). With `traces`, the spans of requests go to OTLP too (the
/// log never shows them).
///
/// Lines go to a buffer that a thread of its own writes out every 50 ms (`logbuf.rs`): no
/// write on the request path, no line dropped; the returned guard, dropped last, writes what
/// is left.
fn init_logging(
    format: LogFormat,
    traces: Option<&imsbridge::cli::Traces>,
) -> imsbridge::cli::LogGuard {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::prelude::*;
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|text| text.parse::<Targets>().ok())
        .unwrap_or_else(|| Targets::new().with_default(tracing::Level::INFO))
        .with_target(imsbridge::cli::TRACES_TARGET, LevelFilter::OFF);
    let (writer, guard) = imsbridge::cli::start_log();
    imsbridge::cli::write_log_to(
        writer.clone(),
        match format {
            LogFormat::Text => imsbridge::cli::LogFormat::Text,
            LogFormat::Json => imsbridge::cli::LogFormat::Json,
        },
    );
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_ansi(false);
    let otlp = traces.map(imsbridge::cli::Traces::layer);
    match format {
        LogFormat::Text => tracing_subscriber::registry()
            .with(otlp)
            .with(layer.with_filter(filter))
            .init(),
        LogFormat::Json => tracing_subscriber::registry()
            .with(otlp)
            .with(layer.json().flatten_event(true).with_filter(filter))
            .init(),
    }
    guard
}

/// The runtime: `workers` threads, one per core by default. With one worker, everything runs on
/// the main thread (no work stealing, no cross-thread wake-ups); argon2 still runs on the
/// blocking pool either way.
fn runtime(workers: Option<usize>) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = match workers {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(workers) => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(workers);
            builder
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    builder.enable_all().build()
}

fn inventory(admins: &[String], password: &AdminPassword) -> ExitCode {
    let password = match password.read() {
        Ok(password) => password,
        Err(error) => {
            eprintln!("imsbridge: {error}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match runtime(Some(1)) {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("imsbridge: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let mut out = Report::new();
    match runtime.block_on(imsbridge::cli::inventory(
        admins,
        password.as_deref(),
        &mut out,
    )) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("imsbridge: {error}");
            ExitCode::FAILURE
        }
    }
}

fn cutover(admin: &str, json: bool, password: &AdminPassword) -> ExitCode {
    let password = match password.read() {
        Ok(password) => password,
        Err(error) => {
            eprintln!("imsbridge: {error}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match runtime(Some(1)) {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("imsbridge: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let mut out = Report::new();
    match runtime.block_on(imsbridge::cli::cutover(
        admin,
        password.as_deref(),
        json,
        &mut out,
    )) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("imsbridge: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run(path: PathBuf, log_format: LogFormat) -> ExitCode {
    let config = match Config::load(&path, &ProcessEnv) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("imsbridge: {error}");
            return ExitCode::from(2);
        }
    };
    let traces = match config.telemetry.as_ref().map(imsbridge::cli::Traces::start) {
        None => None,
        Some(Ok(traces)) => Some(traces),
        Some(Err(error)) => {
            eprintln!("imsbridge: {error}");
            return ExitCode::from(2);
        }
    };
    let log = init_logging(log_format, traces.as_ref());
    // A proxy holds two sockets per request; the default soft limit (often 1024) is too low.
    if let Err(error) = raise_open_file_limit() {
        tracing::warn!(%error, "could not raise the open file limit");
    }
    // The control runtime: the admin listener, reloads, tokens, the state store, signals.
    // Callers are served by the workers it starts (`server.workers`).
    let runtime = match runtime(Some(1)) {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("imsbridge: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result: Result<(), String> = runtime.block_on(async move {
        let bind = |addr: SocketAddr, key: &'static str| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|e| format!("cannot listen on {addr} (server.{key}): {e}"))
        };
        let workers = config.server.worker_count();
        let listen = config.server.listen;
        let proxy = imsbridge::bind_workers(listen, workers)
            .map_err(|e| format!("cannot listen on {listen} (server.listen): {e}"))?;
        let admin = bind(config.server.admin_listen, "admin_listen").await?;
        let proxy = imsbridge::ProxyListeners::Workers(proxy);
        tracing::info!(
            proxy = %proxy.local_addr().map_err(|e| e.to_string())?,
            admin = %admin.local_addr().map_err(|e| e.to_string())?,
            workers,
            profiles = config.profiles.len(),
            callers = config.callers.len(),
            "listening"
        );
        let listeners = imsbridge::Listeners {
            proxy,
            admin: Some(admin),
        };
        let reloads = imsbridge::cli::reloads(path);
        imsbridge::run_reloadable(listeners, config, shutdown_signal(), reloads)
            .await
            .map_err(|e| e.to_string())
    });
    drop(runtime);
    // The spans of the last requests go before the process does, then the last log lines.
    if let Some(traces) = traces {
        traces.shutdown();
    }
    drop(log);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("imsbridge: {error}");
            ExitCode::FAILURE
        }
    }
}

/// SIGTERM (service managers, Kubernetes) or SIGINT (Ctrl-C).
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut terminate) => {
            tokio::select! {
                _ = terminate.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

fn check(path: PathBuf, probe: bool) -> ExitCode {
    let config = match Config::load(&path, &ProcessEnv) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("imsbridge: {error}");
            return ExitCode::from(2);
        }
    };
    let result = runtime(None)
        .map_err(|e| e.to_string())
        .and_then(|runtime| {
            runtime
                .block_on(imsbridge::cli::check(&config, probe, &mut Report::new()))
                .map_err(|e| e.to_string())
        });
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("imsbridge check: {error}");
            ExitCode::FAILURE
        }
    }
}

fn import_nlserver(
    credential: Option<String>,
    name: &str,
    dir: &std::path::Path,
    metascopes: &[String],
) -> ExitCode {
    let text = match credential.filter(|c| c != "-") {
        Some(text) => text,
        None => {
            let mut line = String::new();
            if let Err(error) = std::io::stdin().lock().read_line(&mut line) {
                eprintln!("imsbridge: cannot read standard input: {error}");
                return ExitCode::FAILURE;
            }
            line
        }
    };
    let profile = imsbridge::cli::parse_nlserver(&text)
        .and_then(|credential| imsbridge::cli::write_profile(&credential, name, dir, metascopes));
    match profile {
        Ok(profile) => {
            if let Err(error) = writeln!(Report::new(), "{profile}") {
                eprintln!("imsbridge import-nlserver: writing the profile: {error}");
                return ExitCode::FAILURE;
            }
            eprintln!(
                "Wrote the client secret and the private key beside it (mode 0600). Note: {}",
                imsbridge::cli::JWT_RETIRED
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("imsbridge import-nlserver: {error}");
            ExitCode::from(2)
        }
    }
}

fn hash_password() -> ExitCode {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprintln!("Password (the line is echoed; pipe it in to avoid that):");
    }
    let mut line = String::new();
    if let Err(error) = stdin.lock().read_line(&mut line) {
        eprintln!("imsbridge: cannot read standard input: {error}");
        return ExitCode::FAILURE;
    }
    let password = line.trim_end_matches(['\r', '\n']);
    if password.is_empty() {
        eprintln!("imsbridge: no password on standard input");
        return ExitCode::from(2);
    }
    if let Err(error) = writeln!(Report::new(), "{}", imsbridge::cli::hash_password(password)) {
        eprintln!("imsbridge: writing the hash: {error}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

fn demo(
    listen: SocketAddr,
    once: bool,
    stand_ins: bool,
    write_config: Option<PathBuf>,
) -> ExitCode {
    let result = runtime(None)
        .map_err(|e| e.to_string())
        .and_then(|runtime| {
            let out = &mut Report::new();
            runtime
                .block_on(async {
                    match stand_ins {
                        true => {
                            imsbridge::demo::stand_ins(listen, write_config.as_deref(), once, out)
                                .await
                        }
                        false => imsbridge::demo::run(listen, once, out).await,
                    }
                })
                .map_err(|e| e.to_string())
        });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("imsbridge demo: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Raises the soft limit of open files to the hard one (systemd's default soft limit is 1024;
/// a proxy holds two sockets a request).
fn raise_open_file_limit() -> std::io::Result<()> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    // An unlimited hard limit is not one the kernel takes for files: the soft one stays.
    if limit.maximum.is_none() || limit.current == limit.maximum {
        return Ok(());
    }
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        },
    )?;
    Ok(())
}
