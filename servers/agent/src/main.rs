//! The agent service. Not built yet: this binary only says so.

fn main() -> anyhow::Result<()> {
    anyhow::bail!("the agent service is not implemented yet")
}
