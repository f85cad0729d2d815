//! calgate-bench: the benchmark harness of docs/benchmarks.md.
//!
//! `calgate-bench run` starts the project's fake Cronofy in this process,
//! starts calgate (release build, SQLite and PostgreSQL) and a bare passthrough
//! as child processes, drives them with h2load and its own gRPC client, and
//! prints medians and ratios. `calgate-bench passthrough` is that passthrough.

mod ahead;
mod calls;
mod changes;
mod expiry;
mod grants;
mod h2load;
mod harness;
mod passthrough;
mod peaks;
mod queue;
mod report;
mod scenarios;
mod setup;
mod soak;

use std::{net::SocketAddr, path::PathBuf};

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(about = "calgate's benchmark harness (docs/benchmarks.md)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the benchmark scenarios and print the report.
    Run(setup::RunArgs),
    /// Steady load with injected Cronofy faults and a PostgreSQL restart (docs/security.md).
    Soak(soak::SoakArgs),
    /// Serve the bare passthrough: UpsertEvent → one reqwest POST, nothing else.
    Passthrough {
        /// gRPC listen address.
        #[arg(long)]
        listen: SocketAddr,
        /// The upstream API base URL (the fake Cronofy's api host).
        #[arg(long)]
        api_base_url: String,
        /// Environment variable holding the access token to send.
        #[arg(long)]
        access_token_env: String,
    },
}

fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new()?;
    match cli.command {
        Command::Run(args) => runtime.block_on(scenarios::run(args)),
        Command::Soak(args) => runtime.block_on(soak::run(args)),
        Command::Passthrough {
            listen,
            api_base_url,
            access_token_env,
        } => {
            let token =
                std::env::var(&access_token_env).map_err(|_| anyhow::anyhow!("{access_token_env} is not set"))?;
            runtime.block_on(passthrough::serve(listen, api_base_url, token))
        }
    }
}

/// Where the calgate binary of the same build lives (`target/<profile>/calgate`).
fn sibling_calgate() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("calgate")))
        .unwrap_or_else(|| PathBuf::from("target/release/calgate"))
}
