//! The command line: `hookgate serve|api|dispatcher|migrate|dev|listen`,
//! and `hookgate secrets re-encrypt`.
//! A bad configuration ends the process with one line and exit code 2.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use rand::RngCore;
use rdkafka::mocking::MockCluster;

use crate::app::{self, StartError};
use crate::config::{
    ApiArgs, ApiConfig, AppConfig, DatabaseArgs, DeliveryArgs, DispatcherConfig, EgressArgs,
    KafkaArgs, LimitsArgs, QuotaArgs, SecretKeyArgs, ServerLimitsArgs, TelemetryArgs, TopicArgs,
    Topics,
};
use crate::domain::{PublicKey, SigningSecret};
use crate::kafka::KafkaConfig;
use crate::{listen, shutdown, store, telemetry};

#[derive(Debug, Parser)]
#[command(
    name = "hookgate",
    version,
    about = "Webhook delivery service and event API gateway on Apache Kafka"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// REST API and dispatcher in one process (single node).
    Serve {
        #[command(flatten)]
        service: ServiceArgs,
        #[command(flatten)]
        api: ApiArgs,
        #[command(flatten)]
        quotas: QuotaArgs,
        #[command(flatten)]
        delivery: DeliveryArgs,
    },
    /// REST API only; stateless, scale by replicas.
    Api {
        #[command(flatten)]
        service: ServiceArgs,
        #[command(flatten)]
        api: ApiArgs,
        #[command(flatten)]
        quotas: QuotaArgs,
    },
    /// Kafka consumer-group workers that deliver; scale up to the partition count.
    Dispatcher {
        /// Address of the probes and metrics endpoint (`/healthz`, `/readyz`, `/metrics`).
        #[arg(long, env = "HOOKGATE_LISTEN", default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        #[command(flatten)]
        service: ServiceArgs,
        #[command(flatten)]
        delivery: DeliveryArgs,
    },
    /// Secrets at rest: `hookgate secrets re-encrypt`.
    Secrets {
        #[command(subcommand)]
        command: SecretsCommand,
    },
    /// Apply the database migrations and exit.
    Migrate {
        #[command(flatten)]
        database: DatabaseArgs,
        #[command(flatten)]
        telemetry: TelemetryArgs,
    },
    /// Everything in one process on SQLite and an in-process Kafka; nothing to install.
    Dev(DevArgs),
    /// A local receiver that verifies signatures and prints deliveries.
    Listen(ListenArgs),
    /// Print the OpenAPI 3.1 document of the REST API (YAML), as committed in openapi/hookgate.yaml.
    Openapi,
}

/// What every long-running role takes: where its data is, where it may
/// send, its limits and how it logs.
#[derive(Debug, Args)]
struct ServiceArgs {
    #[command(flatten)]
    database: DatabaseArgs,
    #[command(flatten)]
    kafka: KafkaArgs,
    #[command(flatten)]
    egress: EgressArgs,
    #[command(flatten)]
    limits: LimitsArgs,
    #[command(flatten)]
    server: ServerLimitsArgs,
    #[command(flatten)]
    secrets: SecretKeyArgs,
    #[command(flatten)]
    telemetry: TelemetryArgs,
}

#[derive(Debug, Subcommand)]
enum SecretsCommand {
    /// Encrypt every subscription's secrets with the first key of
    /// HOOKGATE_SECRET_KEY (after adding a key, before removing an old one);
    /// safe while the service runs.
    ReEncrypt {
        #[command(flatten)]
        database: DatabaseArgs,
        #[command(flatten)]
        secrets: SecretKeyArgs,
        /// Subscriptions read and rewritten at a time.
        #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(i64).range(1..=10_000))]
        batch_size: i64,
        #[command(flatten)]
        telemetry: TelemetryArgs,
    },
}

#[derive(Debug, Args)]
struct DevArgs {
    /// Address the REST API listens on.
    #[arg(long, env = "HOOKGATE_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Database URL (default: an SQLite file in the working directory).
    #[arg(
        long,
        env = "HOOKGATE_DATABASE_URL",
        default_value = "sqlite:hookgate-dev.db",
        hide_env_values = true
    )]
    database_url: String,
    /// Admin bearer token (default: generated and printed).
    #[arg(long, env = "HOOKGATE_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    #[command(flatten)]
    topics: TopicArgs,
    #[command(flatten)]
    delivery: DeliveryArgs,
    #[command(flatten)]
    egress: EgressArgs,
    #[command(flatten)]
    limits: LimitsArgs,
    #[command(flatten)]
    quotas: QuotaArgs,
    #[command(flatten)]
    server: ServerLimitsArgs,
    #[command(flatten)]
    secrets: SecretKeyArgs,
    #[command(flatten)]
    telemetry: TelemetryArgs,
}

#[derive(Debug, Args)]
struct ListenArgs {
    /// The subscription's signing secret (`whsec_…`), for hmac-sha256.
    #[arg(
        long,
        env = "HOOKGATE_LISTEN_SECRET",
        hide_env_values = true,
        required_unless_present = "public_key",
        conflicts_with = "public_key"
    )]
    secret: Option<String>,
    /// The subscription's public key (`whpk_…`), for ed25519.
    #[arg(long, env = "HOOKGATE_LISTEN_PUBLIC_KEY")]
    public_key: Option<String>,
    /// Port to listen on (0: any free port).
    #[arg(long, default_value_t = 9000)]
    port: u16,
    /// Address to listen on.
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    host: IpAddr,
}

/// Exit code 2: the process never started serving.
const EXIT_CONFIG: u8 = 2;

enum Failure {
    Config(String),
    Run(anyhow::Error),
}

impl From<StartError> for Failure {
    fn from(error: StartError) -> Self {
        Self::Config(error.to_string())
    }
}

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) if !error.use_stderr() => {
            // --help and --version.
            let _ = error.print();
            return ExitCode::SUCCESS;
        }
        Err(error) => {
            eprintln!("hookgate: {}", first_paragraph(&error.render().to_string()));
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    // Before the runtime: the OTLP exporter's client must not live in it.
    let _telemetry = match cli.command.log_format().map(telemetry::init).transpose() {
        Ok(telemetry) => telemetry,
        Err(message) => {
            eprintln!("hookgate: {message}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("hookgate: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let code = match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Config(message)) => {
            eprintln!("hookgate: {message}");
            ExitCode::from(EXIT_CONFIG)
        }
        Err(Failure::Run(error)) => {
            eprintln!("hookgate: {error:#}");
            ExitCode::FAILURE
        }
    };
    // What a bounded shutdown left behind must not hold the exit.
    runtime.shutdown_timeout(shutdown::EXIT_WAIT);
    code
}

impl Command {
    /// How the role logs; `None` for the commands that only print.
    fn log_format(&self) -> Option<crate::config::LogFormat> {
        match self {
            Self::Serve { service, .. }
            | Self::Api { service, .. }
            | Self::Dispatcher { service, .. } => Some(service.telemetry.log_format),
            Self::Migrate { telemetry, .. }
            | Self::Secrets { command: SecretsCommand::ReEncrypt { telemetry, .. } } => {
                Some(telemetry.log_format)
            }
            Self::Dev(args) => Some(args.telemetry.log_format),
            Self::Listen(_) | Self::Openapi => None,
        }
    }
}

/// Clap's message up to its first blank line, folded onto one line.
fn first_paragraph(rendered: &str) -> String {
    let text = rendered.strip_prefix("error: ").unwrap_or(rendered);
    text.lines()
        .take_while(|line| !line.trim().is_empty())
        .map(str::trim)
        .collect::<Vec<_>>()
        .join(" ")
}

async fn run(command: Command) -> Result<(), Failure> {
    match command {
        Command::Serve { service, api, quotas, delivery } => {
            let config = service.config(Some((&api, &quotas)), Some(&delivery), true)?;
            run_roles(&config, api.listen).await
        }
        Command::Api { service, api, quotas } => {
            let config = service.config(Some((&api, &quotas)), None, false)?;
            run_roles(&config, api.listen).await
        }
        Command::Dispatcher { listen, service, delivery } => {
            let config = service.config(None, Some(&delivery), false)?;
            run_roles(&config, listen).await
        }
        Command::Secrets {
            command: SecretsCommand::ReEncrypt { database, secrets, batch_size, .. },
        } => re_encrypt(&database, &secrets, batch_size).await,
        Command::Migrate { database, .. } => {
            let store = store::connect(&database.database_url)
                .await
                .map_err(|e| Failure::Config(e.to_string()))?;
            store.migrate().await.map_err(|e| Failure::Run(e.into()))?;
            println!("migrations applied");
            Ok(())
        }
        Command::Dev(args) => dev(args).await,
        Command::Openapi => {
            print!("{}", crate::api::openapi::yaml());
            Ok(())
        }
        Command::Listen(args) => {
            let verifier = match (&args.secret, &args.public_key) {
                (Some(secret), _) => SigningSecret::parse_lenient(secret)
                    .map(listen::Verifier::Secret)
                    .map_err(|e| Failure::Config(format!("invalid value for '--secret': {e}")))?,
                (None, Some(key)) => {
                    PublicKey::parse(key).map(listen::Verifier::PublicKey).map_err(|e| {
                        Failure::Config(format!("invalid value for '--public-key': {e}"))
                    })?
                }
                (None, None) => {
                    return Err(Failure::Config("--secret or --public-key is required".into()))
                }
            };
            let addr = SocketAddr::new(args.host, args.port);
            listen::run(addr, verifier, shutdown::on_signal())
                .await
                .map_err(|e| Failure::Config(format!("cannot listen on {addr}: {e}")))
        }
    }
}

impl ServiceArgs {
    /// The configuration of the roles asked for: the API (with its quotas),
    /// the dispatcher, or both.
    fn config(
        &self,
        api: Option<(&ApiArgs, &QuotaArgs)>,
        delivery: Option<&DeliveryArgs>,
        migrate: bool,
    ) -> Result<AppConfig, Failure> {
        let topics =
            Topics::from_args(&self.kafka.topics).map_err(|e| Failure::Config(e.to_string()))?;
        let kafka = KafkaConfig::from_env(self.kafka.kafka_brokers.clone());
        Ok(AppConfig {
            api: api
                .map(|(api, _)| {
                    api.admin_tokens().map(|admin_tokens| ApiConfig {
                        admin_tokens,
                        public_url: api.public_url.clone(),
                    })
                })
                .transpose()
                .map_err(Failure::Config)?,
            dispatcher: delivery.map(DispatcherConfig::from_args),
            limits: (&self.limits).into(),
            egress: self.egress.rules(false).map_err(Failure::Config)?,
            quotas: api.map(|(_, quotas)| quotas.into()).unwrap_or_default(),
            server: (&self.server).into(),
            secret_keys: self.secrets.keys().map_err(Failure::Config)?,
            migrate,
            ..AppConfig::new(self.database.database_url.clone(), kafka, topics)
        })
    }
}

/// `hookgate secrets re-encrypt`: every subscription, batch by batch, then
/// one line of what was done. Rows it cannot decrypt (a key id no longer
/// configured) are named, and make it fail.
async fn re_encrypt(
    database: &DatabaseArgs,
    secrets: &SecretKeyArgs,
    batch_size: i64,
) -> Result<(), Failure> {
    let keys = secrets.keys().map_err(Failure::Config)?;
    let Some(key_id) = keys.current_id().map(str::to_owned) else {
        return Err(Failure::Config(
            "HOOKGATE_SECRET_KEY is not set: there is no key to encrypt with".to_owned(),
        ));
    };
    let store = store::connect_with_keys(&database.database_url, keys)
        .await
        .map_err(|e| Failure::Config(e.to_string()))?;
    let mut total = store::ResealBatch::default();
    let mut after: Option<String> = None;
    loop {
        let batch = store
            .reseal_subscriptions(after.as_deref(), batch_size)
            .await
            .map_err(|e| Failure::Run(e.into()))?;
        for (id, error) in &batch.unreadable {
            tracing::error!(subscription_id = %id, %error, "secrets cannot be decrypted; left as they are");
        }
        total.scanned += batch.scanned;
        total.rewritten += batch.rewritten;
        total.current += batch.current;
        total.unreadable.extend(batch.unreadable);
        total.busy.extend(batch.busy);
        match batch.last_id {
            Some(last) if batch.scanned >= batch_size as u64 => after = Some(last),
            _ => break,
        }
    }
    println!(
        "re-encrypted {} of {} subscriptions with key `{key_id}` ({} already were, {} cannot be decrypted, {} changed during every try)",
        total.rewritten,
        total.scanned,
        total.current,
        total.unreadable.len(),
        total.busy.len(),
    );
    if total.unreadable.is_empty() && total.busy.is_empty() {
        Ok(())
    } else {
        let ids: Vec<&str> = total
            .unreadable
            .iter()
            .map(|(id, _)| id.as_str())
            .chain(total.busy.iter().map(String::as_str))
            .collect();
        Err(Failure::Run(anyhow::anyhow!(
            "not every subscription is encrypted with `{key_id}`: {} (run it again; for ones that cannot be decrypted, add the key they name to HOOKGATE_SECRET_KEY)",
            ids.join(", ")
        )))
    }
}

async fn run_roles(config: &AppConfig, listen: SocketAddr) -> Result<(), Failure> {
    let shutdown = shutdown::on_signal();
    let running = app::start(config, listen, None, shutdown.clone()).await?;
    shutdown::watchdog(&shutdown, running.shutdown_deadline() + shutdown::WATCHDOG_MARGIN);
    if let Some(addr) = running.api_addr.or(running.ops_addr) {
        println!("listening on http://{addr}");
    }
    running.wait().await.map_err(Failure::Run)
}

async fn dev(args: DevArgs) -> Result<(), Failure> {
    let topics = Topics::from_args(&args.topics).map_err(|e| Failure::Config(e.to_string()))?;
    // The in-process broker has no CreateTopics API: it makes the topics itself.
    let mock = MockCluster::new(1).map_err(|e| Failure::Run(e.into()))?;
    let dispatcher = DispatcherConfig::from_args(&args.delivery);
    for topic in topics.to_create(&dispatcher.retry_schedule) {
        mock.create_topic(&topic, topics.partitions, 1).map_err(|e| Failure::Run(e.into()))?;
    }
    let admin_token = args.admin_token.unwrap_or_else(|| {
        let mut bytes = [0u8; 24];
        rand::thread_rng().fill_bytes(&mut bytes);
        format!("hg_admin_{}", hex::encode(bytes))
    });
    let kafka = KafkaConfig { brokers: mock.bootstrap_servers(), properties: Vec::new() };
    let config = AppConfig {
        api: Some(ApiConfig::with_admin_tokens(vec![admin_token.clone()])),
        dispatcher: Some(dispatcher),
        limits: (&args.limits).into(),
        // Locally, webhooks go to local receivers, unless told otherwise.
        egress: args.egress.rules(true).map_err(Failure::Config)?,
        quotas: (&args.quotas).into(),
        server: (&args.server).into(),
        secret_keys: args.secrets.keys().map_err(Failure::Config)?,
        migrate: true,
        create_topics: false,
        ..AppConfig::new(args.database_url, kafka, topics)
    };
    let shutdown = shutdown::on_signal();
    let running = app::start(&config, args.listen, None, shutdown.clone()).await?;
    shutdown::watchdog(&shutdown, running.shutdown_deadline() + shutdown::WATCHDOG_MARGIN);
    let addr = running.api_addr.unwrap_or(args.listen);
    println!("listening on http://{addr}");
    print_quickstart(addr, &admin_token, config.egress.allow_private);
    let result = running.wait().await;
    // The broker goes only once every role is done with it: roles still
    // running when the deadline passed keep it until the process exits.
    if result.as_ref().is_err_and(|error| error.is::<app::DeadlinePassed>()) {
        std::mem::forget(mock);
    } else {
        drop(mock);
    }
    result.map_err(Failure::Run)
}

fn print_quickstart(addr: SocketAddr, token: &str, private_targets: bool) {
    let exe = std::env::current_exe()
        .ok()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "hookgate".to_owned());
    let secret = SigningSecret::generate();
    let secret = secret.expose();
    let targets = if private_targets { "allowed" } else { "refused" };
    println!(
        "\nhookgate dev: SQLite store and in-process Kafka; private targets {targets}.\n\
         admin token: {token}\n\n\
         Quickstart (run each in its own terminal):\n  \
         {exe} listen --port 9000 --secret {secret}\n  \
         curl -sS http://{addr}/v1/subscriptions -H 'authorization: Bearer {token}' -H 'content-type: application/json' -d '{{\"url\":\"http://127.0.0.1:9000/\",\"event_types\":[\"order.*\"],\"secret\":\"{secret}\"}}'\n  \
         curl -sS http://{addr}/v1/events -H 'authorization: Bearer {token}' -H 'content-type: application/json' -d '{{\"type\":\"order.created\",\"data\":{{\"order_id\":42}}}}'\n"
    );
}
