"""tests/deploy/test_k8s.py - the Kubernetes manifests parse and reference each other correctly
(tests/deploy/check_k8s.py), and the checker catches each kind of broken reference."""
import copy
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
import check_k8s  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
K8S = os.path.join(ROOT, "deploy", "k8s")
SERVER = os.path.join(os.environ.get("TRIEKV_BIN", os.path.join(ROOT, "bin")), "triekv-server")


def docs():
    return check_k8s.load(K8S)


def find(ds, kind, name):
    return next(d for d in ds if d["kind"] == kind and d["metadata"]["name"] == name)


def test_manifests_are_consistent():
    assert check_k8s.check(docs(), SERVER if os.path.exists(SERVER) else None) == []


def test_expected_objects():
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs()}
    for want in [("StatefulSet", "triekv-main"), ("StatefulSet", "triekv-replica"), ("Service", "triekv"),
                 ("Service", "triekv-read"), ("Service", "triekv-replication"), ("ConfigMap", "triekv-config")]:
        assert want in kinds


def broken_selector(ds):
    find(ds, "Service", "triekv-read")["spec"]["selector"]["app.kubernetes.io/component"] = "replicas"


def broken_port(ds):
    find(ds, "Service", "triekv-replication")["spec"]["ports"][0]["targetPort"] = "repl"


def broken_mount(ds):
    c = find(ds, "StatefulSet", "triekv-main")["spec"]["template"]["spec"]["containers"][0]
    c["volumeMounts"][0]["name"] = "dta"


def broken_configmap_key(ds):
    v = find(ds, "StatefulSet", "triekv-replica")["spec"]["template"]["spec"]["volumes"][0]
    v["configMap"]["items"][0]["key"] = "replicas.json"


def broken_replica_list(ds):
    find(ds, "StatefulSet", "triekv-replica")["spec"]["replicas"] = 3


def broken_probe(ds):
    c = find(ds, "StatefulSet", "triekv-main")["spec"]["template"]["spec"]["containers"][0]
    c["livenessProbe"]["httpGet"]["port"] = 8080


def broken_headless(ds):
    del find(ds, "Service", "triekv-replication")["spec"]["clusterIP"]


def broken_config_value(ds):
    cm = find(ds, "ConfigMap", "triekv-config")
    cm["data"]["main.json"] = cm["data"]["main.json"].replace('"cache_size": 512', '"cache_size": "lots"')


@pytest.mark.parametrize("breakage", [broken_selector, broken_port, broken_mount, broken_configmap_key,
                                      broken_replica_list, broken_probe, broken_headless, broken_config_value])
def test_checker_catches(breakage):
    ds = copy.deepcopy(docs())
    breakage(ds)
    server = SERVER if os.path.exists(SERVER) else None
    if breakage is broken_config_value and server is None:
        pytest.skip("triekv-server not built")
    assert check_k8s.check(ds, server) != []
