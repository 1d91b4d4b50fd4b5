//! Builds the assembly test guests in `guests/` (see its README) into OUT_DIR/guests.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let src = manifest.join("guests");
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("guests");
    println!("cargo:rerun-if-changed={}", src.display());
    let result = Command::new("make")
        .args(["-s", "--no-print-directory", "-C"])
        .arg(&src)
        .arg(format!("OUT={}", out.display()))
        .output()
        .expect("running make (install make, gcc and binutils)");
    if !result.status.success() {
        panic!(
            "building the test guests failed:\n{}{}",
            String::from_utf8_lossy(&result.stdout),
            String::from_utf8_lossy(&result.stderr)
        );
    }
    println!("cargo:rustc-env=EMBER_TEST_GUESTS={}", out.display());
}
