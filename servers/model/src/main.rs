//! The model service. Not built yet: this binary only says so.

fn main() -> anyhow::Result<()> {
    anyhow::bail!("the model service is not implemented yet")
}
