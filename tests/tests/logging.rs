//! The config file's `logger` section and `--log-level`.

use std::time::Duration;

use ember_tests::{boot, scratch_dir, test_guest, write_config, Run};

const LIMIT: Duration = Duration::from_secs(60);

fn config_with_logger(dir: &std::path::Path, log: &std::path::Path) -> std::path::PathBuf {
    config_with_logger_at(dir, log, "Info")
}

fn config_with_logger_at(
    dir: &std::path::Path,
    log: &std::path::Path,
    level: &str,
) -> std::path::PathBuf {
    write_config(
        dir,
        &format!(
            r#"{{"boot-source": {{"kernel_image_path": "{}", "boot_args": "exit=5"}},
                "machine-config": {{"vcpu_count": 1, "mem_size_mib": 64}},
                "logger": {{"log_path": "{}", "level": "{level}", "show_level": true}}}}"#,
            test_guest("modes").display(),
            log.display()
        ),
    )
}

#[test]
fn logger_section_sends_the_log_to_its_file_at_its_level() {
    let dir = scratch_dir("logger");
    let log = dir.join("ember.log");
    let run = boot(
        &config_with_logger(&dir, &log),
        &["--accel", "interp"],
        b"",
        LIMIT,
    );
    assert_eq!(run.code(), 11, "{run:#?}");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("ember: info: accelerator: software CPU"),
        "{text}"
    );
    assert!(text.contains("VM stopped: Guest(DebugExit(5))"), "{text}");
    assert!(
        !run.stderr.contains("accelerator"),
        "log must not go to stderr: {run:#?}"
    );
}

/// Boots with the config's logger at `config_level` and `--log-level flag_level`; returns the
/// run and what reached the log file.
fn boot_with_levels(test: &str, config_level: &str, flag_level: &str) -> (Run, String) {
    let dir = scratch_dir(test);
    let log = dir.join("ember.log");
    let config = config_with_logger_at(&dir, &log, config_level);
    let run = boot(
        &config,
        &["--accel", "interp", "--log-level", flag_level],
        b"",
        LIMIT,
    );
    assert_eq!(run.code(), 11, "{run:#?}");
    let text = std::fs::read_to_string(&log).unwrap();
    (run, text)
}

/// The flag wins over the config in both directions, and what passes goes to the file.
#[test]
fn log_level_flag_overrides_the_config() {
    let (run, text) = boot_with_levels("logger-flag-up", "Error", "info");
    assert!(text.contains("ember: info: VM stopped"), "{text}");
    assert!(!run.stderr.contains("info"), "{run:#?}");
    let (_, text) = boot_with_levels("logger-flag-down", "Info", "error");
    assert!(!text.contains("info"), "{text}");
}

#[test]
fn unwritable_log_path_is_named() {
    let dir = scratch_dir("logger-bad");
    let log = dir.join("no/such/dir/ember.log");
    let run = boot(
        &config_with_logger(&dir, &log),
        &["--accel", "interp"],
        b"",
        LIMIT,
    );
    assert_eq!(run.code(), 2, "{run:#?}");
    assert!(
        run.stderr.contains("logger.log_path") && run.stderr.contains("no/such/dir"),
        "{run:#?}"
    );
}
