pub(crate) fn run(_args: crate::cli::TopArgs) -> anyhow::Result<std::process::ExitCode> {
    anyhow::bail!("top: not yet")
}
