fn main() -> anyhow::Result<()> {
    anyhow::bail!("tvk-metamover: under construction")
}
