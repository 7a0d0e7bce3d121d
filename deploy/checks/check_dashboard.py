"""Checks that the Grafana dashboard parses and that every metric its queries use is
exported: usage `check_dashboard.py DASHBOARD.json SCRAPE.prom` where SCRAPE.prom holds
/metrics of every daemon concatenated. Prints the number of metrics checked; exits 1
naming each metric no daemon exports."""

import json
import re
import sys

# Label lists of aggregations and vector matching: their words are labels.
LABEL_LISTS = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
# A word followed by "(" is a function or an aggregation, not a metric.
CALLS = re.compile(r"\b[a-zA-Z_]+\s*\(")
KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset",
    "and", "or", "unless",
}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def exported(scrape_path):
    names = set()
    with open(scrape_path) as f:
        for line in f:
            if line.startswith("#") or not line.strip():
                continue
            names.add(re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line).group(0))
    return names


def queried(dashboard_path):
    with open(dashboard_path) as f:
        dashboard = json.load(f)
    names = set()
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]|\"[^\"]*\"", "", target["expr"])
            expr = CALLS.sub("(", LABEL_LISTS.sub("", expr))
            for word in re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr):
                if word not in KEYWORDS:
                    names.add(word)
    return names


def main():
    have = exported(sys.argv[2])
    want = queried(sys.argv[1])
    missing = sorted(
        n for n in want
        if n not in have and not any(n.endswith(s) and n[: -len(s)] + "_count" in have for s in HISTOGRAM_SUFFIXES)
    )
    if missing:
        for name in missing:
            print(f"{name}: queried by the dashboard, exported by no daemon")
        sys.exit(1)
    print(f"{len(want)} metrics queried, all exported")


if __name__ == "__main__":
    main()
