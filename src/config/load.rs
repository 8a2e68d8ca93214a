//! Where the settings come from, highest first: command-line flag, `PARTYFLOW_*` environment
//! variable, the TOML file named by `--config` (its keys are the flag names), built-in default.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches};

use super::{Cli, ConfigError, Mode, ServeConfig, TokenArgs};

impl ServeConfig {
    /// Parses `argv` (program name first), the environment and the `--config` file.
    pub fn load<I, T>(argv: I) -> Result<ServeConfig, ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        Self::load_mode(argv).map(|(_, config)| config)
    }

    /// [`ServeConfig::load`], and whether the server is to run or to check the host.
    pub fn load_mode<I, T>(argv: I) -> Result<(Mode, ServeConfig), ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let mut argv: Vec<OsString> = argv.into_iter().map(Into::into).collect();
        let matches = Cli::command().try_get_matches_from(&argv)?;
        if let Some(token) = matches.subcommand_matches("token") {
            return Ok((Mode::Token(TokenArgs::from_arg_matches(token)?), ServeConfig::default()));
        }
        let serve = serve_matches(&matches);
        if let Some(path) = serve.get_one::<PathBuf>("config") {
            argv.extend(file_args(path, serve)?);
        }
        let matches = Cli::command().try_get_matches_from(&argv)?;
        let mode = if matches.subcommand_name() == Some("doctor") { Mode::Doctor } else { Mode::Serve };
        let config = ServeConfig::from_arg_matches(serve_matches(&matches))?;
        config.validate().map_err(ConfigError::Value)?;
        Ok((mode, config))
    }
}

fn serve_matches(matches: &ArgMatches) -> &ArgMatches {
    matches.subcommand_matches("serve").or_else(|| matches.subcommand_matches("doctor")).unwrap_or(matches)
}

/// Turns the file's settings into flags for every setting not already given by flag or env.
fn file_args(path: &PathBuf, given: &ArgMatches) -> Result<Vec<OsString>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.clone(), source })?;
    let table: toml::Table = text.parse().map_err(|source| ConfigError::Toml { path: path.clone(), source })?;
    let invalid = |message: String| ConfigError::Invalid { path: path.clone(), message };
    let mut args = Vec::new();
    for (key, value) in table {
        let id = key.replace('-', "_");
        let known = ServeConfig::augment_args(clap::Command::new("serve"));
        if id == "config" || !known.get_arguments().any(|arg| arg.get_id().as_str() == id) {
            return Err(invalid(format!("unknown setting `{key}`")));
        }
        if matches!(given.value_source(&id), Some(ValueSource::CommandLine | ValueSource::EnvVariable)) {
            continue;
        }
        let values = match value {
            toml::Value::Array(items) => items,
            other => vec![other],
        };
        for value in values {
            let text = match value {
                toml::Value::String(s) => s,
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(f) => f.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                _ => return Err(invalid(format!("`{key}` must be a string, number or list"))),
            };
            args.push(OsString::from(format!("--{}={text}", key.replace('_', "-"))));
        }
    }
    Ok(args)
}
