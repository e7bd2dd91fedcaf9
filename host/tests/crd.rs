//! `crds/` is generated from the API types: this fails when it is stale.

#[test]
fn checked_in_crd_matches_the_api_types() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../crds/wukongs.vm.novasphere.dev.yaml");
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    let generated = wukong::cli::crdgen::crd_yaml().expect("generate CRD");
    assert!(
        checked_in == generated,
        "{} is stale: run `cargo run -p wukong -- crdgen --out crds`",
        path.display()
    );
}

#[test]
fn optional_enums_carry_no_null_value() {
    let yaml = wukong::cli::crdgen::crd_yaml().expect("generate CRD");
    assert!(
        !yaml.contains("- null"),
        "the apiserver refuses null enum values"
    );
}

#[test]
fn release_manifest_is_built_from_deploy() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let path = root.join("release/wukong.yaml");
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    let generated = wukong::cli::manifest::release_manifest(&root.join("deploy"))
        .expect("build the release manifest");
    assert!(
        checked_in == generated,
        "{} is stale: run `cargo run -p wukong -- manifest --out release/wukong.yaml`",
        path.display()
    );
    for kind in [
        "CustomResourceDefinition",
        "Deployment",
        "ConfigMap",
        "ClusterRole",
        "Role",
    ] {
        assert!(
            generated.contains(&format!("\nkind: {kind}\n")),
            "{kind} in the manifest"
        );
    }
    assert!(
        generated.contains("image: ghcr.io/novasphere/wukong:"),
        "the kustomization's image is applied"
    );
}
