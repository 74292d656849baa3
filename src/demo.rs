//! `demo` and `server` entry points (the server lands with its own module).

use std::time::Duration;

use crate::cli::ServerArgs;
use crate::commands::Settings;

pub async fn serve(_s: Settings, _args: ServerArgs) -> anyhow::Result<u8> {
    anyhow::bail!(crate::commands::UsageError(
        "the server is not built yet".into()
    ))
}

pub async fn run(_pipeline_duration: Duration) -> anyhow::Result<u8> {
    anyhow::bail!(crate::commands::UsageError(
        "the demo is not built yet".into()
    ))
}
