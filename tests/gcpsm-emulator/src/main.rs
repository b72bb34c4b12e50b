//! Stand-alone Secret Manager emulator for manual testing: `gcpsm-emulator --port 8085`.
#![forbid(unsafe_code)]

use clap::Parser;
use gcpsm_emulator::{Auth, Config};

#[derive(Parser)]
#[command(about = "In-memory Google Cloud Secret Manager v1 REST emulator (test use only)")]
struct Args {
    /// Port to listen on (0 picks a free one).
    #[arg(long, default_value_t = 8085)]
    port: u16,
    /// Address to bind; keep it on loopback.
    #[arg(long, default_value = "127.0.0.1")]
    bind: std::net::IpAddr,
    /// Require service-account JWTs: CLIENT_EMAIL,PRIVATE_KEY_ID,PUBLIC_KEY_PEM_FILE (repeatable).
    #[arg(long = "service-account", value_name = "EMAIL,KEY_ID,PEM_FILE")]
    service_accounts: Vec<String>,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let auth = if args.service_accounts.is_empty() {
        Auth::None
    } else {
        let mut accounts = Vec::new();
        for spec in &args.service_accounts {
            let mut parts = spec.splitn(3, ',');
            let (Some(email), Some(kid), Some(file)) = (parts.next(), parts.next(), parts.next())
            else {
                return Err(
                    format!("--service-account {spec:?}: expected EMAIL,KEY_ID,PEM_FILE").into(),
                );
            };
            let pem = std::fs::read_to_string(file)?;
            accounts.push((email.to_string(), kid.to_string(), pem));
        }
        Auth::ServiceAccounts(accounts)
    };
    let listener = tokio::net::TcpListener::bind((args.bind, args.port)).await?;
    println!(
        "gcpsm-emulator listening on http://{}",
        listener.local_addr()?
    );
    gcpsm_emulator::serve(listener, Config { auth }, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    Ok(())
}
