fn main() -> anyhow::Result<()> {
    anyhow::bail!("tvk-control-plane: under construction")
}
