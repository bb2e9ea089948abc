#!/usr/bin/env python3
"""Validates rendered Kubernetes objects against the committed JSON schemas.

    k8s_schema_check.py [--self-test] SCHEMA_DIR FILE.yaml...

Every object in the files must validate. With --self-test, each of a list of broken
copies of those objects (MUTATIONS; the files together must hold every kind they touch)
must then be rejected, which shows that the check can fail.

SCHEMA_DIR holds kubernetes-<version>-strict.json (tools/make_k8s_schemas.py: the
Kubernetes OpenAPI schemas, unknown fields rejected) and one <kind>-<group>-<version>.json
per custom resource. An object whose apiVersion and kind have no schema is an error.
Needs only Debian's python3-yaml and python3-jsonschema (draft 2020-12).
"""
import copy
import json
import pathlib
import sys

import jsonschema
import yaml


class Schemas:
    def __init__(self, directory):
        directory = pathlib.Path(directory)
        self.validators = {}
        core = sorted(directory.glob("kubernetes-*-strict.json"))
        if len(core) != 1:
            raise SystemExit(f"{directory}: expected one kubernetes-*-strict.json, found {core}")
        document = json.loads(core[0].read_text())
        self.kubernetes_version = document["kubernetes_version"]
        for key, root in document["kinds"].items():
            schema = dict(root, **{"$defs": document["$defs"]})
            self._add(key, schema)
        for path in sorted(directory.glob("*.json")):
            if path == core[0]:
                continue
            schema = json.loads(path.read_text())
            api_version = schema["properties"]["apiVersion"]["enum"][0]
            kind = schema["properties"]["kind"]["enum"][0]
            self._add(f"{api_version} {kind}", schema)

    def _add(self, key, schema):
        jsonschema.Draft202012Validator.check_schema(schema)
        self.validators[key] = jsonschema.Draft202012Validator(schema)

    def errors(self, obj):
        """Every problem with one object, as 'Kind/name: path: message' lines."""
        if not isinstance(obj, dict):
            return [f"not an object: {obj!r:.80}"]
        key = f"{obj.get('apiVersion')} {obj.get('kind')}"
        name = f"{obj.get('kind')}/{(obj.get('metadata') or {}).get('name')}"
        validator = self.validators.get(key)
        if validator is None:
            return [f"{name}: no schema for apiVersion/kind '{key}'"]
        out = []
        for error in sorted(validator.iter_errors(obj), key=lambda e: list(e.absolute_path)):
            path = ".".join(str(p) for p in error.absolute_path) or "(root)"
            out.append(f"{name}: {path}: {error.message[:300]}")
        return out


def load(path):
    with open(path) as f:
        return [doc for doc in yaml.safe_load_all(f) if doc is not None]


def find(objects, kind):
    for obj in objects:
        if obj.get("kind") == kind:
            return obj
    raise SystemExit(f"self-test: the rendered file has no {kind}")


def container(objects):
    return find(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]


# Each breaks one thing that kubectl apply (or the operator) would reject; each must fail.
MUTATIONS = {
    "unknown Deployment field": lambda o: find(o, "Deployment")["spec"].update(replicaz=2),
    "containerPort as a string":
        lambda o: container(o)["ports"][0].update(containerPort="grpc"),
    "gRPC probe port as a name":
        lambda o: container(o)["readinessProbe"]["grpc"].update(port="grpc"),
    "misspelt probe field":
        lambda o: container(o)["livenessProbe"].update(periodSecond=10),
    "HPA maxReplicas as a string":
        lambda o: find(o, "HorizontalPodAutoscaler")["spec"].update(maxReplicas="8"),
    "HPA metric of an unknown type":
        lambda o: find(o, "HorizontalPodAutoscaler")["spec"]["metrics"][0].update(type=7),
    "Service port without a number":
        lambda o: find(o, "Service")["spec"]["ports"][0].pop("port"),
    "PDB minAvailable as a boolean":
        lambda o: find(o, "PodDisruptionBudget")["spec"].update(minAvailable=True),
    "ConfigMap value that is not a string":
        lambda o: find(o, "ConfigMap").setdefault("data", {}).update(MOE_MAX_SEQS=16),
    "ServiceMonitor interval in words":
        lambda o: find(o, "ServiceMonitor")["spec"]["endpoints"][0].update(interval="15 seconds"),
    "ServiceMonitor unknown endpoint field":
        lambda o: find(o, "ServiceMonitor")["spec"]["endpoints"][0].update(paht="/metrics"),
    "misspelt kind": lambda o: find(o, "Deployment").update(kind="Deploymnet"),
}


def main(argv):
    self_test = "--self-test" in argv
    args = [a for a in argv if a != "--self-test"]
    if len(args) < 2:
        raise SystemExit(__doc__)
    schemas = Schemas(args[0])
    objects, failures = [], 0
    for path in args[1:]:
        loaded = load(path)
        problems = [p for obj in loaded for p in schemas.errors(obj)]
        for p in problems:
            print(f"FAIL {path}: {p}")
        failures += len(problems)
        objects += loaded
        print(f"k8s_schema_check: {path}: {len(loaded)} objects, {len(problems)} schema errors "
              f"(Kubernetes {schemas.kubernetes_version} strict schemas)")
    if self_test and not failures:
        # The checks above could fail: every broken copy of the objects must be rejected.
        for what, mutate in MUTATIONS.items():
            broken = copy.deepcopy(objects)
            mutate(broken)
            caught = [p for obj in broken for p in schemas.errors(obj)]
            if caught:
                print(f"self-test: rejected {what}: {caught[0]}")
            else:
                print(f"FAIL self-test: {what} passed validation")
                failures += 1
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
