//! The `sim` command: the Management API simulator as a stand-in tenant on a loopback port,
//! for trying the service without an Auth0 tenant; a bad seed file exits 2.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use mgmt_sim::{Seed, SeedRole, SimConfig, Simulator};

use super::{ExitStatus, EXIT_CONFIG};

/// The `sim` command's arguments.
#[derive(Debug, clap::Args)]
pub struct SimArgs {
    /// Port on 127.0.0.1 (0 picks a free one).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// JSON seed file: {"roles":[{"name":"Viewer"}],"users":[{"user_id":"auth0|1","email":"a@b.c","email_verified":true}]}.
    #[arg(long)]
    seed: Option<PathBuf>,
    /// Role names to create (in addition to the seed's).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "INTERNAL,CUSTOMER,Viewer,PARTNER"
    )]
    roles: Vec<String>,
    /// Tenant rate limit in requests per second (0: unlimited).
    #[arg(long, default_value_t = 0.0)]
    rate_limit: f64,
    /// Tenant rate-limit burst.
    #[arg(long, default_value_t = 10)]
    burst: u32,
    /// Answer 404 for users not in the seed (by default any user id is accepted).
    #[arg(long)]
    strict_users: bool,
    /// Domain of the simulated tenant (the token audience is https://{domain}/api/v2/).
    #[arg(long, default_value = "sim.auth0.local")]
    domain: String,
    /// Client id the simulator accepts.
    #[arg(long, default_value = "sim-client")]
    client_id: String,
    /// Client secret the simulator accepts (also read from AUTH0_CLIENT_SECRET).
    #[arg(
        long,
        env = "AUTH0_CLIENT_SECRET",
        default_value = "sim-secret",
        hide_env_values = true
    )]
    client_secret: String,
}

/// Why the simulator could not run.
#[derive(Debug, thiserror::Error)]
pub enum SimCommandError {
    #[error("cannot read seed file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A seed file that is not the documented JSON (a configuration error: exit 2).
    #[error("seed file {path}: {source}")]
    Seed {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

impl ExitStatus for SimCommandError {
    fn exit_code(&self) -> u8 {
        match self {
            SimCommandError::Seed { .. } => EXIT_CONFIG,
            SimCommandError::Read { .. } | SimCommandError::Listen { .. } => 1,
        }
    }
}

/// Runs `sim`: serves the simulator until Ctrl-C, after printing how to point a config at it.
pub async fn run(args: SimArgs) -> Result<u8, SimCommandError> {
    let mut seed: Seed = match &args.seed {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| SimCommandError::Read {
                path: path.clone(),
                source,
            })?;
            serde_json::from_str(&text).map_err(|source| SimCommandError::Seed {
                path: path.clone(),
                source,
            })?
        }
        None => Seed::default(),
    };
    for name in args.roles.into_iter().filter(|r| !r.is_empty()) {
        if !seed.roles.iter().any(|r| r.name == name) {
            seed.roles.push(SeedRole::named(name));
        }
    }
    let config = SimConfig {
        domain: args.domain,
        client_id: args.client_id,
        client_secret: args.client_secret,
        rate_per_second: args.rate_limit,
        burst: args.burst,
        accept_any_user: !args.strict_users,
        ..SimConfig::default()
    };
    let addr = SocketAddr::new(args.host, args.port);
    let roles: Vec<String> = seed.roles.iter().map(|r| r.name.clone()).collect();
    let simulator = Simulator::new(config.clone(), seed);
    let running = simulator
        .start(addr)
        .await
        .map_err(|source| SimCommandError::Listen { addr, source })?;
    let base = &running.base_url;
    println!("Management API simulator listening on {base}");
    println!(
        "  tenant domain {} (audience {})",
        config.domain,
        config.audience()
    );
    println!(
        "  client_id {} (secret from --client-secret or AUTH0_CLIENT_SECRET)",
        config.client_id
    );
    println!("  roles: {}", roles.join(", "));
    println!("  state: GET {base}/sim/state   control: POST {base}/sim/control");
    println!(
        "Point a config at it with: base_url = \"{base}\", domain = \"{}\", client_id = \"{}\"",
        config.domain, config.client_id
    );
    println!("Stop with Ctrl-C.");
    crate::shutdown::Shutdown::on_signals().wait().await;
    running.shutdown().await;
    Ok(0)
}
