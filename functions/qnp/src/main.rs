//! `qnp`: every function behind one listener for local development and single-host use, plus the operator
//! commands. It reads the same configuration as the Lambda functions, so pointed at MongoDB and DynamoDB it
//! administers production data; with nothing set it uses the embedded store in `QNP_DATA_DIR`.

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod context;
mod keys;
mod retention;
mod serve;
mod usage;

#[derive(Parser)]
#[command(
    name = "qnp",
    version,
    about = "QNP LLM API gateway: local server and operator commands"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run every function behind one HTTP listener.
    Serve {
        #[arg(long, default_value = "127.0.0.1:8787")]
        listen: SocketAddr,
    },
    /// Create, list and revoke API keys.
    Keys {
        #[command(subcommand)]
        command: keys::KeysCommand,
    },
    /// Export usage.
    Usage {
        #[command(subcommand)]
        command: usage::UsageCommand,
    },
    /// Run the retention cleaner.
    Retention {
        #[command(subcommand)]
        command: retention::RetentionCommand,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve { listen } => serve::run(listen).await,
            Command::Keys { command } => keys::run(command).await,
            Command::Usage { command } => usage::run(command).await,
            Command::Retention { command } => retention::run(command).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("qnp: {e:#}");
            ExitCode::FAILURE
        }
    }
}
