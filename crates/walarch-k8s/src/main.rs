//! `walarch-k8s`: the instance manager and the cluster's status (DESIGN §6).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use walarch_core::codec::{Codec, Compression};
use walarch_core::crypto::Keyring;
use walarch_core::store::RepoLocation;
use walarch_core::store::{CloudSettings, S3Options, StoreOptions};
use walarch_k8s::instance::{self, InstanceConfig, RecoveryBootstrap, postgres::PgSettings};
use walarch_k8s::leadership::Coordination;
use walarch_k8s::leadership::etcd::{EtcdCoordination, EtcdLocation};
use walarch_k8s::leadership::kubernetes::KubeCoordination;
use walarch_k8s::member::Timings;
use walarch_k8s::operator::resources::RecoveryTargetSpec;

#[derive(Debug, Parser)]
#[command(
    name = "walarch-k8s",
    version,
    about = "walarch's cluster layer: instance manager and cluster status"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Keep one PostgreSQL server a member of the cluster (leader lease, fencing, failover).
    Instance(Box<InstanceArgs>),
    /// The cluster as the coordination store sees it.
    Status {
        /// etcd://HOST:PORT[,HOST:PORT...]/PREFIX, or `kubernetes` (in a pod)
        #[arg(long)]
        coordination: String,
        /// Cluster name.
        #[arg(long)]
        cluster: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run the Kubernetes operator (in-cluster, or with the current kubeconfig).
    Operator,
    /// Print the CustomResourceDefinitions as YAML (deploy/crds/walarch.io.yaml).
    Crdgen,
}

#[derive(Debug, clap::Args)]
struct InstanceArgs {
    /// This member's name (unique in the cluster).
    #[arg(long)]
    name: String,
    /// The cluster's name.
    #[arg(long)]
    cluster: String,
    /// The data directory.
    #[arg(long)]
    pgdata: PathBuf,
    /// etcd://HOST:PORT[,HOST:PORT...]/PREFIX, or `kubernetes` (a Lease named after the
    /// cluster in the pod's namespace)
    #[arg(long)]
    coordination: String,
    /// Address of the HTTP interface (/status, /healthz, /readyz, /metrics).
    #[arg(long)]
    http: SocketAddr,
    /// Address PostgreSQL listens on and peers connect to.
    #[arg(long, default_value = "127.0.0.1")]
    pg_host: String,
    /// PostgreSQL's port.
    #[arg(long, default_value_t = 5432)]
    pg_port: u16,
    /// Repository to archive into (and fetch from): archive_command and restore_command.
    #[arg(long, env = "WALARCH_REPO")]
    repo: Option<String>,
    /// Replicas that acknowledge each commit (ANY n); 0 for asynchronous replication.
    #[arg(long, default_value_t = 1)]
    sync_replicas: u32,
    /// How long the store keeps a lease after its last renewal.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    lease_ttl: Duration,
    /// A leader that could not renew within this stops accepting writes (< lease TTL).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    renew_deadline: Duration,
    /// How long the lease must be vacant before a replica tries to take it.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    failover_delay: Duration,
    /// How often the manager looks and decides.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    tick: Duration,
    /// Directory of PostgreSQL's programs (initdb, postgres, pg_basebackup, pg_rewind).
    #[arg(long, env = "WALARCH_PG_BIN")]
    pg_bin: Option<PathBuf>,
    /// The walarch binary PostgreSQL runs as archive_command/restore_command.
    #[arg(long, env = "WALARCH_BIN")]
    walarch_bin: Option<PathBuf>,
    /// A PostgreSQL setting for every member (NAME=VALUE), repeatable.
    #[arg(long = "set", value_parser = parse_setting)]
    settings: Vec<(String, String)>,
    /// A pg_hba.conf line put first when the cluster is initialized, repeatable.
    #[arg(long = "hba")]
    hba: Vec<String>,
    /// Initialize without data checksums (initdb's --data-checksums is the default here).
    #[arg(long)]
    no_data_checksums: bool,
    /// Keep pg_wal in this directory (a separate volume) instead of the data directory.
    #[arg(long)]
    waldir: Option<PathBuf>,
    /// Bootstrap the cluster by recovering from this repository (read only) instead of
    /// initdb; --repo must be another repository.
    #[arg(long, value_name = "URL")]
    recover_from: Option<String>,
    /// The backup the recovery bootstrap starts from (default: the one the target calls for).
    #[arg(long, value_name = "ID", requires = "recover_from")]
    recovery_backup: Option<String>,
    /// Recover to this time (with a zone).
    #[arg(long, value_name = "TIME", requires = "recover_from")]
    recovery_target_time: Option<String>,
    /// Recover to this LSN.
    #[arg(long, value_name = "LSN", requires = "recover_from")]
    recovery_target_lsn: Option<String>,
    /// Recover to this transaction's commit.
    #[arg(long, value_name = "XID", requires = "recover_from")]
    recovery_target_xid: Option<String>,
    /// Recover to this restore point.
    #[arg(long, value_name = "NAME", requires = "recover_from")]
    recovery_target_name: Option<String>,
    /// `immediate`: stop as soon as the backup is consistent.
    #[arg(long, value_name = "immediate", value_parser = ["immediate"], requires = "recover_from")]
    recovery_target: Option<String>,
    /// The timeline to follow: latest (default), current or a number.
    #[arg(long, value_name = "TLI", requires = "recover_from")]
    recovery_target_timeline: Option<String>,
    /// Whether recovery stops just after the target (true, default) or just before it.
    #[arg(long, value_name = "BOOL", requires = "recover_from")]
    recovery_target_inclusive: Option<bool>,
    /// Key file that encrypts WAL and backup parts (see `walarch key new`); archive_command,
    /// restore_command and the manager's own backups use it.
    #[arg(long, env = "WALARCH_ENCRYPTION_KEY_FILE", value_name = "FILE")]
    encryption_key_file: Option<PathBuf>,
    /// Compression of the manager's backups: zstd (default), gzip or none.
    #[arg(long, env = "WALARCH_COMPRESSION", default_value = "zstd")]
    compression: String,
    /// An S3-compatible endpoint (MinIO, Ceph).
    #[arg(long, env = "WALARCH_S3_ENDPOINT")]
    s3_endpoint: Option<String>,
    /// The S3 region.
    #[arg(long, env = "WALARCH_S3_REGION")]
    s3_region: Option<String>,
    /// Allow an http:// S3 endpoint.
    #[arg(long, env = "WALARCH_S3_ALLOW_HTTP")]
    s3_allow_http: Option<bool>,
}

/// The recovery bootstrap the flags ask for, checked (target, and a repository to archive
/// into that is not the source).
fn recovery_bootstrap(
    args: &InstanceArgs,
    repo: Option<&RepoLocation>,
) -> anyhow::Result<Option<RecoveryBootstrap>> {
    let Some(source) = &args.recover_from else {
        return Ok(None);
    };
    let source = RepoLocation::parse(source).context("--recover-from")?;
    if let Some(repo) = repo
        && walarch_k8s::operator::repository::overlap(&source, repo)
    {
        anyhow::bail!(
            "--repo {repo} shares objects with --recover-from {source}: a recovered cluster \
             archives into a new repository (the source is only read)"
        );
    }
    let target = RecoveryTargetSpec {
        target_time: args.recovery_target_time.clone(),
        target_lsn: args.recovery_target_lsn.clone(),
        target_xid: args.recovery_target_xid.clone(),
        target_name: args.recovery_target_name.clone(),
        target_immediate: args.recovery_target.as_ref().map(|_| true),
        target_tli: args.recovery_target_timeline.clone(),
        exclusive: args.recovery_target_inclusive.map(|inclusive| !inclusive),
    };
    let target = walarch_k8s::operator::repository::target_spec(Some(&target))
        .map_err(anyhow::Error::msg)?;
    let backup = args
        .recovery_backup
        .as_deref()
        .map(str::parse)
        .transpose()
        .context("--recovery-backup")?;
    Ok(Some(RecoveryBootstrap {
        source,
        backup,
        target,
    }))
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map_or((text, "s"), |i| text.split_at(i));
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text}: a duration is a number with ms, s or m"))?;
    let secs = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        _ => return Err(format!("{text}: unknown unit {unit:?} (ms, s, m)")),
    };
    Ok(Duration::from_secs_f64(secs))
}

fn parse_setting(text: &str) -> Result<(String, String), String> {
    let (name, value) = text
        .split_once('=')
        .ok_or_else(|| format!("{text}: a setting is NAME=VALUE"))?;
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
    {
        return Err(format!("{name:?} is not a PostgreSQL setting name"));
    }
    Ok((name.to_owned(), value.to_owned()))
}

fn find_pg_bin(given: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(dir) = given {
        return Ok(dir);
    }
    for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
        if dir.is_absolute() && dir.join("postgres").is_file() && dir.join("initdb").is_file() {
            return Ok(dir);
        }
    }
    bail!("PostgreSQL's programs are not on PATH: give --pg-bin DIR")
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WALARCH_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("walarch-k8s: starting the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("walarch-k8s: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Crdgen => {
            print!("{}", walarch_k8s::operator::crdgen::render()?);
            Ok(())
        }
        Command::Operator => {
            let client = kube::Client::try_default().await?;
            walarch_k8s::operator::run(client).await
        }
        Command::Status {
            coordination,
            cluster,
            json,
        } => {
            // A status reader that never publishes: its view is the store's.
            let ttl = Duration::from_secs(15);
            let view = match Store::parse(&coordination)? {
                Store::Etcd(location) => {
                    EtcdCoordination::new(
                        &location,
                        &cluster,
                        "walarch-k8s-status",
                        ttl,
                        Duration::from_secs(5),
                    )
                    .view()
                    .await?
                }
                Store::Kubernetes => {
                    kubernetes_store(&cluster, "walarch-k8s-status", ttl, Duration::from_secs(5))
                        .await?
                        .view()
                        .await?
                }
            };
            let report = walarch_k8s::status::report(&cluster, &view);
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", walarch_k8s::status::render_table(&report));
            }
            Ok(())
        }
        Command::Instance(args) => run_instance(*args).await,
    }
}

async fn run_instance(args: InstanceArgs) -> anyhow::Result<()> {
    let store_kind = Store::parse(&args.coordination)?;
    let timings = Timings {
        ttl: args.lease_ttl,
        renew_deadline: args.renew_deadline,
        failover_delay: args.failover_delay,
    };
    timings.validate().map_err(anyhow::Error::msg)?;
    let repo = args
        .repo
        .as_deref()
        .map(RepoLocation::parse)
        .transpose()
        .context("--repo")?;
    let recovery = recovery_bootstrap(&args, repo.as_ref())?;
    let needs_walarch = repo.is_some() || recovery.is_some();
    let walarch_bin = match (needs_walarch, args.walarch_bin.clone()) {
        (false, _) => None,
        (true, Some(bin)) => Some(bin),
        (true, None) => Some(
            std::env::current_exe()?
                .parent()
                .map(|d| d.join("walarch"))
                .filter(|p| p.is_file())
                .context("--repo and --recover-from need the walarch binary: give --walarch-bin (it is not beside walarch-k8s)")?,
        ),
    };
    let encryption_key_file = args
        .encryption_key_file
        .clone()
        .map(std::path::absolute)
        .transpose()?;
    let encryption = encryption_key_file
        .as_deref()
        .map(Keyring::load)
        .transpose()?
        .map(Arc::new);
    let (archive_command, restore_command) = match (&args.repo, &walarch_bin) {
        (Some(repo), Some(bin)) => {
            let mut walarch = format!(
                "{} --repo {}",
                shell_quote(&bin.display().to_string()),
                shell_quote(repo)
            );
            if let Some(key_file) = &encryption_key_file {
                walarch.push_str(&format!(
                    " --encryption-key-file {}",
                    shell_quote(&key_file.display().to_string())
                ));
            }
            (
                Some(format!("{walarch} wal-push %p")),
                Some(format!("{walarch} wal-fetch %f %p")),
            )
        }
        _ => (None, None),
    };
    let pgdata = if args.pgdata.is_absolute() {
        args.pgdata
    } else {
        std::env::current_dir()?.join(args.pgdata)
    };
    let config = InstanceConfig {
        name: args.name.clone(),
        cluster: args.cluster.clone(),
        pg: PgSettings {
            bin: find_pg_bin(args.pg_bin)?,
            pgdata,
            name: args.name.clone(),
            host: args.pg_host,
            port: args.pg_port,
            settings: args.settings,
            hba: args.hba,
            archive_command,
            restore_command,
            waldir: args.waldir.clone(),
            data_checksums: !args.no_data_checksums,
        },
        timings,
        sync_replicas: args.sync_replicas,
        http: args.http,
        tick: args.tick,
        store: StoreOptions {
            s3: S3Options {
                endpoint: args.s3_endpoint.clone(),
                region: args.s3_region.clone(),
                allow_http: args.s3_allow_http,
                ..S3Options::default()
            },
            cloud: CloudSettings::from_vars(std::env::vars()),
            ..StoreOptions::default()
        },
        compression: Compression::new(args.compression.parse::<Codec>()?, None)?,
        walarch_bin,
        recovery,
        repo,
        encryption,
        encryption_key_file,
    };
    // Calls must end well within the room between the renew deadline and the TTL.
    let call_timeout = ((timings.ttl - timings.renew_deadline) / 2).min(Duration::from_secs(2));
    let cancel = CancellationToken::new();
    let on_signal = cancel.clone();
    tokio::spawn(async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match &mut term { Some(t) => { t.recv().await; } None => std::future::pending::<()>().await } } => {}
        }
        on_signal.cancel();
    });
    match store_kind {
        Store::Etcd(location) => {
            let store = EtcdCoordination::new(
                &location,
                &args.cluster,
                &args.name,
                timings.ttl,
                call_timeout,
            );
            instance::run(config, Arc::new(store), cancel).await
        }
        Store::Kubernetes => {
            let store =
                kubernetes_store(&args.cluster, &args.name, timings.ttl, call_timeout).await?;
            instance::run(config, Arc::new(store), cancel).await
        }
    }
}

/// Where the cluster's leadership lives.
enum Store {
    /// `etcd://HOST:PORT[,...]/PREFIX`
    Etcd(EtcdLocation),
    /// `kubernetes`: Lease objects in the pod's namespace.
    Kubernetes,
}

impl Store {
    fn parse(url: &str) -> anyhow::Result<Store> {
        if url == "kubernetes" {
            return Ok(Store::Kubernetes);
        }
        EtcdLocation::parse(url)
            .map(Store::Etcd)
            .map_err(|e| anyhow::anyhow!("--coordination: {e} (or `kubernetes` in a pod)"))
    }
}

/// The in-cluster client (service account, namespace of the pod).
async fn kubernetes_store(
    cluster: &str,
    member: &str,
    ttl: Duration,
    call_timeout: Duration,
) -> anyhow::Result<KubeCoordination> {
    let client = kube::Client::try_default()
        .await
        .context("connecting to the Kubernetes API (in a pod, with a service account)")?;
    let namespace = client.default_namespace().to_owned();
    let leases = kube::Api::namespaced(client, &namespace);
    Ok(KubeCoordination::new(
        leases,
        cluster,
        member,
        ttl,
        call_timeout,
    ))
}

fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}
