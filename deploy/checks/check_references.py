"""Checks what a schema cannot: that the objects of a rendered kustomization refer to
each other correctly (scripts/check-deploy.sh pipes `kubectl kustomize OVERLAY` in).

Usage: kubectl kustomize DIR | python check_references.py [--external-secret NAME]...
Every ConfigMap and Secret a pod uses exists (or is named as external); every
Service, PodDisruptionBudget and StatefulSet selector matches a pod template's labels;
every StatefulSet's serviceName is a Service; every named port a Service or
probe targets is a container port. Prints one line per problem; exit 1 if any.
"""

import argparse
import sys

import yaml


def pod_templates(objects):
    for obj in objects:
        template = obj.get("spec", {}).get("template")
        if obj["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job") and template:
            yield obj, template


def matches(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def pod_references(pod_spec):
    """(kind, name) of every ConfigMap and Secret the pod spec uses."""
    for volume in pod_spec.get("volumes", []):
        if "configMap" in volume:
            yield "ConfigMap", volume["configMap"]["name"]
        if "secret" in volume:
            yield "Secret", volume["secret"]["secretName"]
    for container in pod_spec.get("containers", []) + pod_spec.get("initContainers", []):
        for source in container.get("envFrom", []):
            if "configMapRef" in source:
                yield "ConfigMap", source["configMapRef"]["name"]
            if "secretRef" in source:
                yield "Secret", source["secretRef"]["name"]
        for env in container.get("env", []):
            value_from = env.get("valueFrom", {})
            if "configMapKeyRef" in value_from:
                yield "ConfigMap", value_from["configMapKeyRef"]["name"]
            if "secretKeyRef" in value_from:
                yield "Secret", value_from["secretKeyRef"]["name"]


def probe_ports(container):
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        action = container.get(probe, {})
        for kind in ("httpGet", "tcpSocket", "grpc"):
            port = action.get(kind, {}).get("port")
            if isinstance(port, str):
                yield probe, port


def check(objects, external_secrets):
    errors = []
    names = {(obj["kind"], obj["metadata"]["name"]) for obj in objects}
    templates = list(pod_templates(objects))
    for owner, template in templates:
        where = f"{owner['kind']}/{owner['metadata']['name']}"
        labels = template.get("metadata", {}).get("labels", {})
        if not matches(owner["spec"].get("selector", {}).get("matchLabels"), labels):
            errors.append(f"{where}: its selector does not match its pod template")
        spec = template["spec"]
        for kind, name in pod_references(spec):
            if (kind, name) not in names and not (kind == "Secret" and name in external_secrets):
                errors.append(f"{where}: uses {kind} {name}, which is not rendered")
        for container in spec["containers"]:
            port_names = {p.get("name") for p in container.get("ports", [])}
            for probe, port in probe_ports(container):
                if port not in port_names:
                    errors.append(f"{where}: {probe} targets port {port!r}, not a container port")
        if owner["kind"] == "StatefulSet":
            service = next((o for o in objects if o["kind"] == "Service"
                            and o["metadata"]["name"] == owner["spec"].get("serviceName")), None)
            if service is None:
                errors.append(f"{where}: serviceName {owner['spec'].get('serviceName')} is no Service")
    for obj in objects:
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        if obj["kind"] == "Service":
            selector = obj["spec"].get("selector")
            pods = [t for _, t in templates if matches(selector, t["metadata"].get("labels", {}))]
            if not pods:
                errors.append(f"{where}: its selector matches no pod template")
            port_names = {p.get("name") for t in pods for c in t["spec"]["containers"]
                          for p in c.get("ports", [])}
            for port in obj["spec"].get("ports", []):
                target = port.get("targetPort")
                if isinstance(target, str) and target not in port_names:
                    errors.append(f"{where}: targetPort {target!r} is no container port")
        if obj["kind"] == "PodDisruptionBudget":
            selector = obj["spec"].get("selector", {}).get("matchLabels")
            if not any(matches(selector, t["metadata"].get("labels", {})) for _, t in templates):
                errors.append(f"{where}: its selector matches no pod template")
    return errors


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--external-secret", action="append", default=[])
    args = parser.parse_args()
    objects = [obj for obj in yaml.safe_load_all(sys.stdin) if obj]
    if not objects:
        print("nothing rendered")
        return 1
    errors = check(objects, set(args.external_secret))
    for error in errors:
        print(error)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
