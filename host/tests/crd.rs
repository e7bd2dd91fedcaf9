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
