#!/usr/bin/env python3
"""tests/deploy/check_k8s.py - checks the Kubernetes manifests in deploy/k8s/ without a cluster.

  check_k8s.py [DIR] [--server BIN]

Parses every YAML document and checks the references between objects: each StatefulSet's
governing service exists and is headless, its selector matches its pod labels, every volume mount
names a volume or claim template, every ConfigMap volume names an existing ConfigMap and keys; every
probe and Service targetPort names a port the selected pods declare; every Service selects some
pods; the main's `replicas` URLs are exactly the replica pods' stable DNS names and replication
port. With --server, each node configuration in the ConfigMap is also checked by
`triekv-server --check`. Prints one line per problem and exits 1 if there is any.
"""
import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile

import yaml


def load(directory):
    docs = []
    for path in sorted(glob.glob(os.path.join(directory, "*.yaml"))):
        with open(path) as f:
            for d in yaml.safe_load_all(f):
                if d:
                    d["_file"] = os.path.basename(path)
                    docs.append(d)
    return docs


def pod_ports(sts):
    ports = {}
    for c in sts["spec"]["template"]["spec"]["containers"]:
        for p in c.get("ports", []):
            ports[p.get("name")] = p["containerPort"]
            ports[p["containerPort"]] = p["containerPort"]
    return ports


def check(docs, server=None):
    problems = []
    by_kind = {}
    for d in docs:
        for field in ("apiVersion", "kind"):
            if field not in d:
                problems.append("%s: a document without %s" % (d["_file"], field))
        name = d.get("metadata", {}).get("name")
        if not name:
            problems.append("%s: a %s without metadata.name" % (d["_file"], d.get("kind")))
            continue
        by_kind.setdefault(d.get("kind"), {})[name] = d
    services = by_kind.get("Service", {})
    configmaps = by_kind.get("ConfigMap", {})
    statefulsets = by_kind.get("StatefulSet", {})
    if not statefulsets:
        problems.append("no StatefulSet at all")

    for name, sts in statefulsets.items():
        spec = sts["spec"]
        tmpl = spec["template"]
        labels = tmpl["metadata"].get("labels", {})
        sel = spec["selector"]["matchLabels"]
        if any(labels.get(k) != v for k, v in sel.items()):
            problems.append("StatefulSet %s: selector %s does not match its pod labels %s" % (name, sel, labels))
        svc = services.get(spec.get("serviceName"))
        if svc is None:
            problems.append("StatefulSet %s: serviceName %s is not a Service" % (name, spec.get("serviceName")))
        elif svc["spec"].get("clusterIP") != "None":
            problems.append("StatefulSet %s: its governing Service %s is not headless" % (name, svc["metadata"]["name"]))
        pspec = tmpl["spec"]
        volumes = {v["name"]: v for v in pspec.get("volumes", [])}
        claims = {c["metadata"]["name"] for c in spec.get("volumeClaimTemplates", [])}
        if not claims:
            problems.append("StatefulSet %s: no volumeClaimTemplates (its data would not persist)" % name)
        sc = pspec.get("securityContext", {})
        if not sc.get("runAsNonRoot"):
            problems.append("StatefulSet %s: pods may run as root" % name)
        ports = pod_ports(sts)
        for c in pspec["containers"]:
            if not c.get("image"):
                problems.append("StatefulSet %s: container %s has no image" % (name, c["name"]))
            for m in c.get("volumeMounts", []):
                if m["name"] not in volumes and m["name"] not in claims:
                    problems.append("StatefulSet %s: mount %s names no volume or claim" % (name, m["name"]))
            for probe in ("readinessProbe", "livenessProbe"):
                p = c.get(probe)
                if p is None:
                    problems.append("StatefulSet %s: container %s has no %s" % (name, c["name"], probe))
                    continue
                port = p.get("httpGet", {}).get("port")
                if port not in ports:
                    problems.append("StatefulSet %s: %s targets port %s, which the pod does not declare" %
                                    (name, probe, port))
        for vname, v in volumes.items():
            cm = v.get("configMap")
            if cm is None:
                continue
            data = configmaps.get(cm["name"], {}).get("data")
            if data is None:
                problems.append("StatefulSet %s: volume %s names ConfigMap %s, which does not exist" %
                                (name, vname, cm["name"]))
                continue
            for item in cm.get("items", []):
                if item["key"] not in data:
                    problems.append("StatefulSet %s: ConfigMap %s has no key %s" % (name, cm["name"], item["key"]))

    for name, svc in services.items():
        sel = svc["spec"].get("selector", {})
        targets = [s for s in statefulsets.values()
                   if sel and all(s["spec"]["template"]["metadata"]["labels"].get(k) == v for k, v in sel.items())]
        if not targets:
            problems.append("Service %s: its selector %s matches no pods" % (name, sel))
        for p in svc["spec"].get("ports", []):
            tp = p.get("targetPort", p["port"])
            for s in targets:
                if tp not in pod_ports(s):
                    problems.append("Service %s: targetPort %s is not a port of %s's pods" %
                                    (name, tp, s["metadata"]["name"]))

    # the main's replica list against the replica StatefulSet
    configs = {}
    for cm in configmaps.values():
        for key, text in cm.get("data", {}).items():
            if key.endswith(".json"):
                try:
                    configs[key] = json.loads(text)
                except ValueError as e:
                    problems.append("ConfigMap %s: %s is not JSON: %s" % (cm["metadata"]["name"], key, e))
    mains = [c for c in configs.values() if not c.get("is_replica")]
    reps = [c for c in configs.values() if c.get("is_replica")]
    replica_sets = [s for s in statefulsets.values()
                    if any("replica" in " ".join(c.get("args", [])) for c in s["spec"]["template"]["spec"]["containers"])]
    if mains and replica_sets and reps:
        rs = replica_sets[0]
        port = reps[0].get("replication_port", 3040)
        want = ["http://%s-%d.%s:%d" % (rs["metadata"]["name"], i, rs["spec"]["serviceName"], port)
                for i in range(rs["spec"]["replicas"])]
        if sorted(mains[0].get("replicas", [])) != sorted(want):
            problems.append("the main's replicas %s are not the replica pods %s" % (mains[0].get("replicas"), want))
        if port not in pod_ports(rs):
            problems.append("the replication port %d is not a port of %s's pods" % (port, rs["metadata"]["name"]))
    else:
        problems.append("expected a main and a replica configuration and a replica StatefulSet")

    if server:
        for key, cfg in configs.items():
            with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
                json.dump(cfg, f)
            r = subprocess.run([server, "--config", f.name, "--check"], capture_output=True, text=True)
            os.unlink(f.name)
            if r.returncode != 0:
                problems.append("ConfigMap %s: triekv-server refuses it: %s" % (key, r.stderr.strip()))
    return problems


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir", nargs="?", default=os.path.join(os.path.dirname(__file__), "..", "..", "deploy", "k8s"))
    ap.add_argument("--server", help="triekv-server, to check the node configurations with --check")
    a = ap.parse_args()
    problems = check(load(a.dir), a.server)
    for p in problems:
        print(p)
    print("%d problem(s) in %s" % (len(problems), a.dir))
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
