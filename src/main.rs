//! The `partyflow` server binary: configuration, logging, then the runtime.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::io::IsTerminal;
use std::process::ExitCode;

use partyflow::config::{LogFormat, Mode, ServeConfig};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let (mode, config) = match ServeConfig::load_mode(std::env::args_os()) {
        Ok(loaded) => loaded,
        Err(partyflow::config::ConfigError::Clap(err)) => err.exit(),
        Err(err) => {
            eprintln!("partyflow: {err}");
            return ExitCode::from(2);
        }
    };
    if let Mode::Token(args) = &mode {
        return match partyflow::pubsub::token::mint(args, std::time::SystemTime::now()) {
            Ok(token) => {
                println!("{token}");
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("partyflow token: {err}");
                ExitCode::from(2)
            }
        };
    }
    if matches!(mode, Mode::Doctor) {
        let (text, code) = partyflow::doctor::report(&partyflow::doctor::check(&partyflow::doctor::HostFacts::read(), &config));
        print!("partyflow doctor {}: this host, for the configuration given\n\n{text}", partyflow::VERSION);
        return ExitCode::from(code);
    }
    let filter = EnvFilter::try_new(&config.log).unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => logs.json().flatten_event(true).with_current_span(false).init(),
    }
    match partyflow::runtime::run(config, partyflow::pubsub::Handlers::default()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("partyflow: {err:#}");
            ExitCode::FAILURE
        }
    }
}
