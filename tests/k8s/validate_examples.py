#!/usr/bin/env python3
"""Validate walarch custom resources in YAML files against the generated CRDs.

Every document of kind Cluster, Backup or ScheduledBackup found in the given files (default:
deploy/examples/*.yaml and tests/k8s/manifests/*.yaml) is checked against the CRD of its kind in
deploy/crds/walarch.io.yaml:

- apiVersion is the CRD's group/version, metadata.name is set;
- `spec` validates against `spec.versions[0].schema.openAPIV3Schema.properties.spec`, read as
  JSON Schema (draft 4, which OpenAPI 3.0 schemas follow). `nullable: true` admits null; other
  `x-kubernetes-*` keys are not JSON Schema and are left out. An object with `properties` admits
  no other field (unless it says x-kubernetes-preserve-unknown-fields): a misspelt field would
  be rejected by `kubectl apply` (strict field validation) or dropped by the API server;
- the CRD's CEL rules (`x-kubernetes-validations`) known to this script are evaluated too, on
  the spec with the schema's defaults filled in, as the API server does. A rule this script does
  not know is reported as a NOTE (not evaluated), not as a failure.

Other kinds (Secrets, Deployments, ...) are skipped. Placeholders the e2e suite fills in
(`@IMAGE@`, `@TARGET_TIME@`, ...) are replaced by sample values first. A document annotated
`walarch.io/e2e-expect: invalid` must FAIL validation (it is a negative test).

Exit status: 0 when every document is as expected, 1 otherwise (each failure is printed), 2 on
a usage or setup problem. Needs PyYAML and jsonschema (`pip install pyyaml jsonschema`).

    python3 tests/k8s/validate_examples.py [FILE.yaml ...]
"""

from __future__ import annotations

import glob
import os
import re
import sys

try:
    import jsonschema
    import yaml
except ImportError as e:  # pragma: no cover - setup problem
    print(
        f"validate_examples: {e}: install PyYAML and jsonschema, e.g.\n"
        "  python3 -m venv /tmp/walarch-venv && /tmp/walarch-venv/bin/pip install pyyaml jsonschema\n"
        "  /tmp/walarch-venv/bin/python tests/k8s/validate_examples.py",
        file=sys.stderr,
    )
    sys.exit(2)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CRDS = os.path.join(ROOT, "deploy", "crds", "walarch.io.yaml")
DEFAULT_GLOBS = ["deploy/examples/*.yaml", "tests/k8s/manifests/*.yaml"]
WALARCH_KINDS = {"Cluster", "Backup", "ScheduledBackup"}
EXPECT_ANNOTATION = "walarch.io/e2e-expect"

# What tests/k8s/run.sh substitutes at run time, with sample values of the right form.
PLACEHOLDERS = {
    "@IMAGE@": "walarch:e2e",
    "@TARGET_TIME@": "2026-11-21T11:32:00Z",
    "@MINIO_IMAGE@": "quay.io/minio/minio:latest",
    "@MC_IMAGE@": "quay.io/minio/mc:latest",
}
PLACEHOLDER_RE = re.compile(r"@[A-Z_]+@")


# ---- OpenAPI v3 (structural schema) -> JSON Schema ------------------------------------------


def to_json_schema(node):
    """The JSON Schema (draft 4) reading of a CRD's structural schema node."""
    if isinstance(node, list):
        return [to_json_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key == "nullable" or key.startswith("x-kubernetes-"):
            continue
        if key in ("properties", "patternProperties", "definitions"):
            out[key] = {name: to_json_schema(sub) for name, sub in value.items()}
        elif key in ("items", "additionalProperties", "not", "allOf", "anyOf", "oneOf"):
            out[key] = to_json_schema(value)
        else:
            # type, enum, pattern, format, minimum, maximum, required, default, description ...
            out[key] = value
    if node.get("nullable") is True and "type" in out:
        out["type"] = [out["type"], "null"] if isinstance(out["type"], str) else out["type"] + ["null"]
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


# ---- defaults and CEL rules ------------------------------------------------------------------


def with_defaults(schema, value):
    """`value` with the schema's defaults filled in (recursively), as the API server does
    before it evaluates CEL rules."""
    if isinstance(value, dict) and isinstance(schema.get("properties"), dict):
        value = dict(value)
        for name, sub in schema["properties"].items():
            if name not in value and "default" in sub:
                value[name] = sub["default"]
            if name in value and value[name] is not None:
                value[name] = with_defaults(sub, value[name])
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        value = [with_defaults(schema["items"], v) for v in value]
    return value


def has(obj, field):
    """CEL's has(self.field) on an object."""
    return isinstance(obj, dict) and obj.get(field) is not None


def _recovery_url_rule(s):
    if not has(s, "bootstrap") or not has(s["bootstrap"], "recovery") or not has(s, "repository"):
        return True
    return s["bootstrap"]["recovery"]["source"]["url"] != s["repository"]["url"]


# The CEL rules of deploy/crds/walarch.io.yaml, by their exact text, as Python predicates on
# `self`. A rule not listed here is reported as not evaluated.
CEL_RULES = {
    "!has(self.bootstrap) || !has(self.bootstrap.recovery) || !has(self.repository) || "
    "self.bootstrap.recovery.source.url != self.repository.url": _recovery_url_rule,
    "!has(self.synchronousReplicas) || self.synchronousReplicas < self.instances": lambda s: (
        not has(s, "synchronousReplicas") or s["synchronousReplicas"] < s["instances"]
    ),
    "self.renewDeadlineSeconds < self.ttlSeconds": lambda s: s["renewDeadlineSeconds"] < s["ttlSeconds"],
    "has(self.keep) || has(self.window)": lambda s: has(s, "keep") or has(s, "window"),
    "has(self.initdb) != has(self.recovery)": lambda s: has(s, "initdb") != has(s, "recovery"),
    "(has(self.targetTime) ? 1 : 0) + (has(self.targetLSN) ? 1 : 0) + (has(self.targetXID) ? 1 : 0) + "
    "(has(self.targetName) ? 1 : 0) + ((has(self.targetImmediate) && self.targetImmediate) ? 1 : 0) <= 1": lambda s: (
        sum(has(s, f) for f in ("targetTime", "targetLSN", "targetXID", "targetName"))
        + (1 if has(s, "targetImmediate") and s["targetImmediate"] else 0)
        <= 1
    ),
}


def check_cel(schema, value, path, errors, notes):
    """Evaluates the known x-kubernetes-validations rules on `value` (defaults filled in)."""
    if value is None or not isinstance(schema, dict):
        return
    for rule in schema.get("x-kubernetes-validations", []):
        text = rule.get("rule", "")
        if "oldSelf" in text:
            # A transition rule: the API server evaluates it on updates only, and these
            # documents are creations.
            continue
        predicate = CEL_RULES.get(text)
        if predicate is None:
            notes.append(f"{path}: CEL rule not evaluated by this script: {text}")
            continue
        try:
            ok = predicate(value)
        except (KeyError, TypeError) as e:
            errors.append(f"{path}: CEL rule {text!r} cannot be evaluated ({e!r})")
            continue
        if not ok:
            errors.append(f"{path}: {rule.get('message', 'failed CEL rule: ' + text)}")
    if isinstance(value, dict):
        for name, sub in (schema.get("properties") or {}).items():
            if name in value:
                check_cel(sub, value[name], f"{path}.{name}", errors, notes)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            check_cel(schema["items"], item, f"{path}[{i}]", errors, notes)


# ---- driver ----------------------------------------------------------------------------------


def load_crds(path):
    crds = {}
    with open(path, encoding="utf-8") as f:
        for doc in yaml.safe_load_all(f):
            if not doc or doc.get("kind") != "CustomResourceDefinition":
                continue
            spec = doc["spec"]
            version = spec["versions"][0]
            schema = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
            crds[spec["names"]["kind"]] = {
                "apiVersion": f"{spec['group']}/{version['name']}",
                "schema": schema,
                "validator": jsonschema.Draft4Validator(to_json_schema(schema)),
            }
    return crds


def error_path(error):
    return "spec" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)


def validate_document(doc, crd):
    """The problems of one walarch document (empty when valid), and notes."""
    errors, notes = [], []
    if doc.get("apiVersion") != crd["apiVersion"]:
        errors.append(f"apiVersion is {doc.get('apiVersion')!r}, the CRD serves {crd['apiVersion']!r}")
    if not (doc.get("metadata") or {}).get("name"):
        errors.append("metadata.name is missing")
    extra = set(doc) - {"apiVersion", "kind", "metadata", "spec", "status"}
    if extra:
        errors.append(f"unknown top-level fields: {', '.join(sorted(extra))}")
    if "spec" not in doc:
        errors.append("spec is missing")
        return errors, notes
    spec = doc["spec"]
    for error in sorted(crd["validator"].iter_errors(spec), key=lambda e: list(e.absolute_path)):
        errors.append(f"{error_path(error)}: {error.message}")
    if not errors:
        check_cel(crd["schema"], with_defaults(crd["schema"], spec), "spec", errors, notes)
    return errors, notes


def substitute(text):
    for placeholder, value in PLACEHOLDERS.items():
        text = text.replace(placeholder, value)
    return text


def main(argv):
    files = argv[1:]
    if not files:
        for pattern in DEFAULT_GLOBS:
            files.extend(sorted(glob.glob(os.path.join(ROOT, pattern))))
    if not files:
        print("validate_examples: no files to validate", file=sys.stderr)
        return 2
    try:
        crds = load_crds(CRDS)
    except (OSError, yaml.YAMLError, KeyError) as e:
        print(f"validate_examples: reading {CRDS}: {e}", file=sys.stderr)
        return 2
    missing = WALARCH_KINDS - set(crds)
    if missing:
        print(f"validate_examples: {CRDS} lacks the CRDs of {', '.join(sorted(missing))}", file=sys.stderr)
        return 2

    checked = failed = 0
    for path in files:
        shown = os.path.relpath(path, ROOT) if os.path.isabs(path) else path
        try:
            with open(path, encoding="utf-8") as f:
                docs = list(yaml.safe_load_all(substitute(f.read())))
        except (OSError, yaml.YAMLError) as e:
            print(f"FAIL  {shown}: cannot read: {e}")
            failed += 1
            continue
        for index, doc in enumerate(docs):
            if not doc:
                continue
            kind = doc.get("kind")
            meta = doc.get("metadata") or {}
            name = "/".join(p for p in (meta.get("namespace"), meta.get("name")) if p) or f"#{index}"
            label = f"{shown}: {kind} {name}"
            if kind not in WALARCH_KINDS:
                print(f"skip  {label} (not a walarch kind)")
                continue
            checked += 1
            errors, notes = validate_document(doc, crds[kind])
            leftover = PLACEHOLDER_RE.search(yaml.safe_dump(doc.get("spec")))
            expect_invalid = (meta.get("annotations") or {}).get(EXPECT_ANNOTATION) == "invalid"
            for note in notes:
                print(f"NOTE  {label}: {note}")
            if leftover and not errors:
                errors.append("an unreplaced @PLACEHOLDER@ is left in spec")
            if expect_invalid:
                if errors:
                    print(f"ok    {label} (invalid, as expected: {errors[0]})")
                else:
                    print(f"FAIL  {label}: expected to be invalid ({EXPECT_ANNOTATION}), but it validates")
                    failed += 1
            elif errors:
                print(f"FAIL  {label}:")
                for error in errors:
                    print(f"        {error}")
                failed += 1
            else:
                print(f"ok    {label}")
    if checked == 0:
        print("validate_examples: no Cluster, Backup or ScheduledBackup document found")
        return 1
    print(f"validate_examples: {checked} walarch documents checked, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
