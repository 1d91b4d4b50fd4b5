//! The VMM's log: standard error by default, or the file a config's `logger` section names.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::{Mutex, OnceLock};

use api::LogLevel;
use log::{LevelFilter, Log, Metadata, Record};

/// How lines are written and where.
struct Settings {
    file: Option<File>,
    show_level: bool,
    show_origin: bool,
    module: Option<String>,
}

struct Logger(Mutex<Settings>);

static LOGGER: OnceLock<Logger> = OnceLock::new();

fn filter(level: LogLevel) -> LevelFilter {
    match level {
        LogLevel::Off => LevelFilter::Off,
        LogLevel::Error => LevelFilter::Error,
        LogLevel::Warning => LevelFilter::Warn,
        LogLevel::Info => LevelFilter::Info,
        LogLevel::Debug => LevelFilter::Debug,
        LogLevel::Trace => LevelFilter::Trace,
    }
}

/// Installs the logger writing to standard error at `level`. Later calls only change the level.
pub fn init(level: LogLevel) {
    let logger = LOGGER.get_or_init(|| {
        Logger(Mutex::new(Settings {
            file: None,
            show_level: true,
            show_origin: false,
            module: None,
        }))
    });
    // Fails only if a logger is already installed, which is then this one.
    let _ = log::set_logger(logger);
    log::set_max_level(filter(level));
}

/// Applies a config file's `logger` section; `cli_level` (from `--log-level`) wins over its
/// `level`. Errors name the log file.
pub fn configure(section: &api::Logger, cli_level: Option<LogLevel>) -> Result<(), String> {
    let file = match &section.log_path {
        Some(path) => Some(open_log(path)?),
        None => None,
    };
    let level = cli_level.or(section.level).unwrap_or(LogLevel::Warning);
    init(level);
    if let Some(logger) = LOGGER.get() {
        let mut s = logger.0.lock().unwrap_or_else(|e| e.into_inner());
        s.file = file;
        s.show_level = section.show_level;
        s.show_origin = section.show_log_origin;
        s.module = section.module.clone();
    }
    Ok(())
}

fn open_log(path: &Path) -> Result<File, String> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| format!("logger.log_path: cannot open {}: {e}", path.display()))
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let mut s = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(module) = &s.module {
            if !record
                .module_path()
                .unwrap_or("")
                .starts_with(module.as_str())
            {
                return;
            }
        }
        let mut line = String::from("ember: ");
        if s.show_level {
            line.push_str(&record.level().as_str().to_ascii_lowercase());
            line.push_str(": ");
        }
        if s.show_origin {
            line.push_str(&format!(
                "[{}:{}] ",
                record.file().unwrap_or("?"),
                record.line().unwrap_or(0)
            ));
        }
        line.push_str(&record.args().to_string());
        line.push('\n');
        // A log line that cannot be written has nowhere else to go.
        let _ = match s.file.as_mut() {
            Some(f) => f.write_all(line.as_bytes()),
            None => std::io::stderr().write_all(line.as_bytes()),
        };
    }

    fn flush(&self) {
        let mut s = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = s.file.as_mut() {
            let _ = f.flush();
        }
    }
}
