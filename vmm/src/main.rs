//! `ember`: the command line over the [`vmm`] library.

use clap::Parser;

fn main() {
    std::process::exit(vmm::launch::main(&vmm::cli::Cli::parse()));
}
