#!/usr/bin/env python3
"""Checks deploy/k8s/prometheus-adapter-rules.yaml against the HPA and the server.

    adapter_rules_check.py REPO_ROOT

Every Pods metric the HorizontalPodAutoscaler (deploy/k8s/base/hpa.yaml) scales on must
be served by exactly one prometheus-adapter rule: its `name` maps the series to that
metric name, its resources map the namespace and pod labels (a Pods metric is per pod),
its seriesQuery names a metric that server/metrics.cc registers, and its seriesQuery and
metricsQuery (the adapter's templates filled in) parse as PromQL (`promtool check rules`).
Broken copies of the rules must then fail the same checks. Debian's python3-yaml and
promtool (package prometheus) only.
"""
import copy
import json
import os
import pathlib
import re
import subprocess
import sys
import tempfile

import yaml


def promql_errors(queries):
    """promtool's complaint about any of `queries`, or '' when all parse."""
    rules = {"groups": [{"name": "adapter", "rules": [
        {"record": f"adapter:q{i}", "expr": q} for i, q in enumerate(queries)]}]}
    with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as f:
        json.dump(rules, f)  # JSON is YAML
    try:
        run = subprocess.run(["promtool", "check", "rules", f.name], capture_output=True, text=True)
        return "" if run.returncode == 0 else (run.stdout + run.stderr).strip()
    finally:
        os.unlink(f.name)


def fill(template, metric):
    """The adapter's Go template as it expands for a query over two pods."""
    return (template.replace("<<.Series>>", metric)
            .replace("<<.LabelMatchers>>", 'namespace="llm",pod=~"moe-serve-a|moe-serve-b"')
            .replace("<<.GroupBy>>", "pod"))


def problems(rules, hpa_metrics, registered):
    out = []
    custom = (rules.get("rules") or {}).get("custom") or []
    if not custom:
        return ["no rules.custom"]
    for metric in hpa_metrics:
        serving = []
        for rule in custom:
            series = re.match(r"\s*([a-zA-Z_:][a-zA-Z0-9_:]*)", rule.get("seriesQuery", ""))
            series = series.group(1) if series else ""
            name = rule.get("name") or {}
            exposed = (re.sub(name["matches"], name["as"], series)
                       if "matches" in name and "as" in name and re.search(name["matches"], series)
                       else series)
            if exposed == metric:
                serving.append((rule, series))
        if len(serving) != 1:
            out.append(f"{len(serving)} rules expose the HPA's metric {metric}")
            continue
        rule, series = serving[0]
        if series not in registered:
            out.append(f"{metric}: series {series} is not a metric server/metrics.cc registers")
        overrides = (rule.get("resources") or {}).get("overrides") or {}
        for label in ("namespace", "pod"):
            if (overrides.get(label) or {}).get("resource") != label:
                out.append(f"{metric}: label {label} is not mapped to the {label} resource")
        error = promql_errors([rule["seriesQuery"], fill(rule.get("metricsQuery", ""), series)])
        if error:
            out.append(f"{metric}: not PromQL: {error}")
    return out


def main(root):
    root = pathlib.Path(root)
    rules = yaml.safe_load((root / "deploy/k8s/prometheus-adapter-rules.yaml").read_text())
    hpa = yaml.safe_load((root / "deploy/k8s/base/hpa.yaml").read_text())
    hpa_metrics = [m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"]
                   if m.get("type") == "Pods"]
    registered = set(re.findall(r'\.Name\("(moe_[a-z0-9_]+)"\)',
                                (root / "server/metrics.cc").read_text()))
    if not hpa_metrics or not registered:
        print("FAIL: no Pods metric in the HPA, or no metric names in server/metrics.cc")
        return 1
    found = problems(rules, hpa_metrics, registered)
    for p in found:
        print(f"FAIL: {p}")
    if found:
        return 1
    print(f"adapter_rules_check: {', '.join(hpa_metrics)} served by one rule each, PromQL parses")

    def custom0(r):
        return r["rules"]["custom"][0]
    breakages = {
        "a renamed metric": lambda r: custom0(r)["name"].update({"as": "moe_requests_waiting"}),
        "an unbalanced metricsQuery": lambda r: custom0(r).update(
            metricsQuery=custom0(r)["metricsQuery"] + ")"),
        "no pod mapping": lambda r: custom0(r)["resources"]["overrides"].pop("pod"),
        "a series the server does not export": lambda r: (
            custom0(r).update(seriesQuery=custom0(r)["seriesQuery"].replace(
                "moe_num_requests_waiting", "moe_requests_waiting")),
            custom0(r)["name"].update(matches="^moe_requests_waiting$")),
    }
    failures = 0
    for what, breakage in breakages.items():
        broken = copy.deepcopy(rules)
        breakage(broken)
        caught = problems(broken, hpa_metrics, registered)
        if caught:
            print(f"self-test: rejected {what}: {' '.join(caught[0].split())[:160]}")
        else:
            print(f"FAIL self-test: {what} passed")
            failures += 1
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "."))
