//! The CustomResourceDefinitions: the checked-in YAML is what the code generates, it reads
//! back to the same definitions, every schema node is structural, and fixed-form values carry
//! enums and patterns. The example manifests in `deploy/examples/` read into the Rust types and
//! write back to the same documents.

use std::path::PathBuf;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde::Deserialize;
use serde_json::Value;
use walarch_k8s::operator::crdgen;
use walarch_k8s::operator::resources::{Backup, Cluster, ScheduledBackup};

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn checked_in() -> String {
    std::fs::read_to_string(repo_root().join("deploy/crds/walarch.io.yaml"))
        .expect("deploy/crds/walarch.io.yaml")
}

#[test]
fn the_checked_in_crds_are_what_crdgen_prints() {
    assert!(
        crdgen::render().unwrap() == checked_in(),
        "deploy/crds/walarch.io.yaml differs from the code: run \
         `cargo run -p walarch-k8s -- crdgen > deploy/crds/walarch.io.yaml` and commit it"
    );
}

#[test]
fn the_crd_yaml_reads_back_to_the_same_definitions_and_writes_the_same_yaml() {
    let text = checked_in();
    let read: Vec<CustomResourceDefinition> = serde_yaml::Deserializer::from_str(&text)
        .map(|doc| CustomResourceDefinition::deserialize(doc).expect("a CRD"))
        .collect();
    assert_eq!(read, crdgen::definitions());
    let mut written = String::new();
    for crd in &read {
        written.push_str(&serde_yaml::to_string(crd).unwrap());
    }
    let generated: String = crdgen::definitions()
        .iter()
        .map(|crd| serde_yaml::to_string(crd).unwrap())
        .collect();
    assert_eq!(written, generated);
}

/// Walks a schema; `path` names the node for messages.
fn walk(node: &Value, path: &str, visit: &mut dyn FnMut(&str, &Value)) {
    visit(path, node);
    if let Some(properties) = node.get("properties").and_then(Value::as_object) {
        for (name, child) in properties {
            walk(child, &format!("{path}.{name}"), visit);
        }
    }
    if let Some(items) = node.get("items") {
        walk(items, &format!("{path}[]"), visit);
    }
    if let Some(extra) = node.get("additionalProperties").filter(|v| v.is_object()) {
        walk(extra, &format!("{path}{{}}"), visit);
    }
}

fn schemas() -> Vec<(String, Value)> {
    crdgen::definitions()
        .into_iter()
        .map(|crd| {
            let version = &crd.spec.versions[0];
            let schema = version
                .schema
                .as_ref()
                .unwrap()
                .open_api_v3_schema
                .as_ref()
                .unwrap();
            (
                crd.spec.names.kind.clone(),
                serde_json::to_value(schema).unwrap(),
            )
        })
        .collect()
}

#[test]
fn every_schema_node_is_structural() {
    for (kind, schema) in schemas() {
        walk(&schema, &kind, &mut |path, node| {
            // Kubernetes' structural schema rules: a type on every node (or one of the
            // escape hatches), no $ref, no type-less combinators.
            let escape = node.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true))
                || node.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
            assert!(
                node.get("type").is_some() || escape,
                "{path} has no type: {node}"
            );
            assert!(node.get("$ref").is_none(), "{path} has a $ref");
            for combinator in ["anyOf", "oneOf", "allOf"] {
                if let Some(branches) = node.get(combinator).and_then(Value::as_array) {
                    for branch in branches {
                        assert!(
                            branch.get("type").is_none(),
                            "{path}.{combinator} sets a type"
                        );
                    }
                }
            }
            match node.get("type").and_then(Value::as_str) {
                Some("array") => {
                    assert!(node.get("items").is_some(), "{path}: array without items")
                }
                Some("object") => assert!(
                    node.get("properties").is_some()
                        || node.get("additionalProperties").is_some()
                        || escape
                        || path.ends_with(".metadata"),
                    "{path}: object without properties"
                ),
                _ => {}
            }
        });
    }
}

fn node<'a>(schemas: &'a [(String, Value)], kind: &str, path: &[&str]) -> &'a Value {
    let mut node = &schemas.iter().find(|(k, _)| k == kind).unwrap().1;
    for step in path {
        node = &node["properties"][step];
        assert!(!node.is_null(), "{kind}: no {path:?}");
    }
    node
}

#[test]
fn fixed_form_values_carry_enums_and_patterns() {
    let schemas = schemas();
    let enums = [
        (
            "Cluster",
            vec!["spec", "repository", "compression"],
            vec!["zstd", "gzip", "none"],
        ),
        (
            "Cluster",
            vec!["spec", "affinity", "podAntiAffinityType"],
            vec!["preferred", "required", "none"],
        ),
        (
            "Backup",
            vec!["spec", "target"],
            vec!["prefer-standby", "primary"],
        ),
        ("Backup", vec!["spec", "method"], vec!["walarch"]),
        (
            "Backup",
            vec!["status", "phase"],
            vec!["pending", "running", "completed", "failed"],
        ),
        (
            "ScheduledBackup",
            vec!["spec", "backupOwnerReference"],
            vec!["none", "self", "cluster"],
        ),
    ];
    for (kind, path, values) in enums {
        let found = &node(&schemas, kind, &path)["enum"];
        assert_eq!(found, &serde_json::json!(values), "{kind} {path:?}");
    }
    // Patterns: each must accept what walarch accepts and refuse a near miss.
    let patterns: Vec<(&str, Vec<&str>, &str, &str)> = vec![
        (
            "ScheduledBackup",
            vec!["spec", "schedule"],
            "0 0 2 * * *",
            "0 2 * * *",
        ),
        (
            "Cluster",
            vec!["spec", "repository", "url"],
            "s3://bucket/prefix",
            "bucket/prefix",
        ),
        ("Cluster", vec!["spec", "storage", "size"], "10Gi", "10 GB"),
        (
            "Cluster",
            vec!["spec", "retention", "window"],
            "30d",
            "30 days",
        ),
        (
            "Cluster",
            vec![
                "spec",
                "bootstrap",
                "recovery",
                "recoveryTarget",
                "targetLSN",
            ],
            "0/3000060",
            "3000060",
        ),
        (
            "Cluster",
            vec![
                "spec",
                "bootstrap",
                "recovery",
                "recoveryTarget",
                "targetTime",
            ],
            "2026-11-21T11:32:00Z",
            "2026-11-21 11:32:00",
        ),
        (
            "Cluster",
            vec![
                "spec",
                "bootstrap",
                "recovery",
                "recoveryTarget",
                "targetTLI",
            ],
            "latest",
            "newest",
        ),
    ];
    for (kind, path, good, bad) in patterns {
        let pattern = node(&schemas, kind, &path)["pattern"]
            .as_str()
            .unwrap_or_else(|| panic!("{kind} {path:?} has no pattern"));
        let re = regex::Regex::new(pattern).unwrap();
        assert!(
            re.is_match(good),
            "{kind} {path:?}: {pattern} refuses {good}"
        );
        assert!(
            !re.is_match(bad),
            "{kind} {path:?}: {pattern} accepts {bad}"
        );
    }
    // CEL rules for what one field cannot say alone.
    let cluster = node(&schemas, "Cluster", &["spec"]);
    let rules = cluster["x-kubernetes-validations"].to_string();
    assert!(rules.contains("self.bootstrap.recovery.source.url != self.repository.url"));
    assert!(rules.contains("self.synchronousReplicas < self.instances"));
}

#[test]
fn the_kubectl_columns_show_phase_primary_and_backups() {
    let columns = |kind: &str| -> Vec<String> {
        crdgen::definitions()
            .into_iter()
            .find(|c| c.spec.names.kind == kind)
            .unwrap()
            .spec
            .versions[0]
            .additional_printer_columns
            .clone()
            .unwrap()
            .into_iter()
            .map(|c| c.name)
            .collect()
    };
    assert_eq!(
        columns("Cluster"),
        [
            "Instances",
            "Ready",
            "Status",
            "Primary",
            "Timeline",
            "Last Backup",
            "Age"
        ]
    );
    assert_eq!(
        columns("Backup"),
        ["Cluster", "Phase", "Instance", "Backup ID", "Age"]
    );
    assert_eq!(
        columns("ScheduledBackup"),
        ["Cluster", "Schedule", "Suspend", "Last Backup", "Age"]
    );
    for crd in crdgen::definitions() {
        let version = &crd.spec.versions[0];
        assert!(
            version.subresources.as_ref().unwrap().status.is_some(),
            "{} has a status subresource",
            crd.spec.names.kind
        );
    }
}

/// `value` read into the Rust type of `kind` and written back; `None` for other kinds.
fn through_types(kind: &str, value: &Value) -> Option<Value> {
    fn via<T: serde::de::DeserializeOwned + serde::Serialize>(value: &Value) -> Value {
        serde_json::to_value(serde_json::from_value::<T>(value.clone()).unwrap()).unwrap()
    }
    match kind {
        "Cluster" => Some(via::<Cluster>(value)),
        "Backup" => Some(via::<Backup>(value)),
        "ScheduledBackup" => Some(via::<ScheduledBackup>(value)),
        _ => None,
    }
}

/// Reads every document of `file` of a walarch kind into its Rust type and back; the
/// documents must come back the same (with the defaults the types fill in).
fn round_trip_examples(file: &str) -> usize {
    let text = std::fs::read_to_string(repo_root().join("deploy/examples").join(file)).unwrap();
    let mut count = 0;
    for document in serde_yaml::Deserializer::from_str(&text) {
        let value = Value::deserialize(document).unwrap();
        let kind = value["kind"].as_str().unwrap_or_default().to_owned();
        let Some(back) = through_types(&kind, &value) else {
            continue;
        };
        // Every field written is read: nothing the user wrote is dropped or renamed.
        assert_subset(&value, &back, &format!("{file} {kind}"));
        // And what the types write reads back to the same object.
        let again = through_types(&kind, &back).unwrap();
        assert_eq!(back, again, "{file} {kind}");
        count += 1;
    }
    count
}

fn assert_subset(given: &Value, back: &Value, path: &str) {
    match (given, back) {
        (Value::Object(g), Value::Object(b)) => {
            for (key, value) in g {
                let other = b
                    .get(key)
                    .unwrap_or_else(|| panic!("{path}.{key} was dropped"));
                assert_subset(value, other, &format!("{path}.{key}"));
            }
        }
        (Value::Array(g), Value::Array(b)) => {
            assert_eq!(g.len(), b.len(), "{path}");
            for (i, (g, b)) in g.iter().zip(b).enumerate() {
                assert_subset(g, b, &format!("{path}[{i}]"));
            }
        }
        (Value::Number(g), Value::Number(b)) => assert_eq!(g.as_f64(), b.as_f64(), "{path}"),
        _ => assert_eq!(given, back, "{path}"),
    }
}

#[test]
fn the_example_manifests_read_into_the_types_and_back() {
    assert_eq!(
        round_trip_examples("cluster.yaml"),
        2,
        "a Cluster and its ScheduledBackup"
    );
    assert_eq!(round_trip_examples("backup.yaml"), 1);
    assert_eq!(round_trip_examples("pitr-clone.yaml"), 1);
}
