//! How the two binaries (`sweep`, `sweep-worker`) log: text for people or
//! JSON for log shippers (`--log-format`), at the level SWEEP_LOG sets.
//! Process plumbing both share, like [`crate::client`]'s token and TLS
//! settings.

use tracing_subscriber::fmt::MakeWriter;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One line per event, for a terminal.
    Text,
    /// One JSON object per line; the enclosing spans (worker, trial) as a
    /// `spans` list of their fields.
    Json,
}

/// Installs the global subscriber: SWEEP_LOG's filter (else `default`),
/// text to `text_writer` (with colours when `ansi`), or JSON to stderr
/// (JSON escapes control characters itself).
pub fn init<W>(format: LogFormat, default: &str, text_writer: W, ansi: bool)
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = tracing_subscriber::EnvFilter::try_from_env("SWEEP_LOG").unwrap_or_else(|_| default.into());
    match format {
        LogFormat::Text => {
            tracing_subscriber::fmt().with_env_filter(filter).with_writer(text_writer).with_ansi(ansi).init();
        }
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(true)
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init(),
    }
}
