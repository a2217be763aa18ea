//! `isa-mcp keys create`: an API key made straight in the database, for the first
//! administrator of a server without a token issuer, and for services that call each other.

use std::{path::PathBuf, sync::Arc};

use clap::{Args, Subcommand};
use isa_auth::ApiKeys;
use isa_core::{UserId, UserStore};

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Make an API key and print it (it is shown only once).
    Create(CreateArgs),
}

#[derive(Args)]
pub struct CreateArgs {
    /// The user the key acts for.
    #[arg(long)]
    user: String,
    /// A label for the key.
    #[arg(long, default_value = "cli")]
    name: String,
    /// Scopes the key grants (`admin` acts for every user); repeat for several.
    #[arg(long = "scope")]
    scopes: Vec<String>,
    /// The server's data directory (where its default SQLite database lives).
    #[arg(long, env = "ISA_DATA_DIR", default_value_os_t = isa_mcp_server::settings::default_data_dir())]
    data_dir: PathBuf,
    /// The database, as for `isa-mcp serve`.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
}

pub async fn run(command: KeysCommand) -> anyhow::Result<()> {
    match command {
        KeysCommand::Create(args) => {
            let db =
                isa_mcp_server::app::open_database(&args.data_dir, args.database_url.as_deref())
                    .await?;
            let user = UserId::new(args.user)?;
            db.ensure_user(&user, None, 0).await?;
            let keys = ApiKeys::new(Arc::new(db));
            let (key, record) = keys.issue(&user, &args.name, args.scopes).await?;
            eprintln!(
                "API key {} for {} (scopes: {:?}); send it as `Authorization: Bearer …` or `X-API-Key`",
                record.id, record.user_id, record.scopes
            );
            println!("{key}");
            Ok(())
        }
    }
}
