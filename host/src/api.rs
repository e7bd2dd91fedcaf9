//! The `Wukong` custom resource (`vm.novasphere.dev/v1alpha1`): spec as users write it,
//! status as the operator reports it, and the mapping into the plugin contract.

mod contract;
mod spec;
mod status;

pub use contract::{MANAGED_BY_LABEL, WUKONG_LABEL, to_contract};
pub use spec::*;
pub use status::*;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// The Wukong CRD as the apiserver accepts it.
///
/// NB: schemars lists `null` among the values of an optional enum, and gives `""` as the
/// default of a defaulted string; older apiservers refuse both (`nullable: true` already
/// says the first, and an empty default says nothing).
pub fn crd() -> CustomResourceDefinition {
    let mut crd = Wukong::crd();
    for version in &mut crd.spec.versions {
        if let Some(schema) = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
        {
            drop_null_enum_values(schema);
        }
    }
    crd
}

fn drop_null_enum_values(
    schema: &mut k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaProps,
) {
    if let Some(values) = schema.enum_.as_mut() {
        values.retain(|v| !v.0.is_null());
    }
    if schema
        .default
        .as_ref()
        .is_some_and(|d| d.0.as_str() == Some(""))
    {
        schema.default = None;
    }
    for child in schema.properties.iter_mut().flat_map(|p| p.values_mut()) {
        drop_null_enum_values(child);
    }
    if let Some(k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaPropsOrArray::Schema(items)) = schema.items.as_mut() {
        drop_null_enum_values(items);
    }
    if let Some(k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaPropsOrBool::Schema(extra)) = schema.additional_properties.as_mut() {
        drop_null_enum_values(extra);
    }
}

/// The finalizer the operator puts on every Wukong.
pub const FINALIZER: &str = "vm.novasphere.dev/cleanup";

#[cfg(test)]
mod tests {
    use kube::Resource;

    use super::Wukong;
    use crate::plugin::ownership::{WUKONG_API_VERSION, WUKONG_KIND};

    #[test]
    fn the_owner_references_the_host_writes_name_this_crd() {
        assert_eq!(Wukong::api_version(&()), WUKONG_API_VERSION);
        assert_eq!(Wukong::kind(&()), WUKONG_KIND);
    }
}
