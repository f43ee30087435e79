fn main() -> std::process::ExitCode {
    sitewatch_agent::cli::main()
}
