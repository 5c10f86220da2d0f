//! The `guildkey` binary: everything happens in [`guildkey::cli`].

fn main() -> std::process::ExitCode {
    guildkey::cli::main()
}
