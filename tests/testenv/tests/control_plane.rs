//! The control plane: starts, installs the CRDs, enforces their schemas.

use wukong_testenv::TestEnv;

#[tokio::test]
async fn starts_and_installs_crds() -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    let client = env.client();
    let v = client.apiserver_version().await?;
    eprintln!("{v:?}");
    Ok(())
}
