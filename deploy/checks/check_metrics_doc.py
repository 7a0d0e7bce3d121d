"""Checks that docs/metrics.md is the reference of what the daemons export: usage
`check_metrics_doc.py METRICS.md SCRAPE.prom` where SCRAPE.prom holds /metrics of
every daemon concatenated (after a workload, so that every family has a series).
Every exported metric must have a row `| `name` | type | labels | meaning |` with its
type and label names, and every row must name an exported metric. Prints the number
of metrics checked; exits 1 naming each difference."""

import re
import sys

ROW = re.compile(r"^\|\s*`([a-zA-Z_:][a-zA-Z0-9_:]*)`\s*\|\s*([a-z]+)\s*\|\s*([^|]*)\|")
# Labels the exposition format adds to a histogram's series.
HISTOGRAM_LABELS = {"le"}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def documented(doc_path):
    rows = {}
    with open(doc_path) as f:
        for line in f:
            m = ROW.match(line)
            if m:
                labels = {
                    label.strip()
                    for label in m.group(3).split(",")
                    if label.strip() not in ("", "—", "-")
                }
                rows[m.group(1)] = (m.group(2), labels)
    return rows


def exported(scrape_path):
    types = {}
    labels = {}
    with open(scrape_path) as f:
        for line in f:
            if line.startswith("# TYPE "):
                _, _, name, kind = line.split()
                types[name] = kind
                labels.setdefault(name, set())
            elif line.strip() and not line.startswith("#"):
                name = re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line).group(0)
                family = name
                if name not in types:
                    for suffix in HISTOGRAM_SUFFIXES:
                        if name.endswith(suffix) and name[: -len(suffix)] in types:
                            family = name[: -len(suffix)]
                names = set(re.findall(r"([a-zA-Z_][a-zA-Z0-9_]*)=\"", line.split(" ")[0]))
                labels.setdefault(family, set()).update(names - HISTOGRAM_LABELS)
    return {name: (types[name], labels[name]) for name in types}


def main():
    doc = documented(sys.argv[1])
    have = exported(sys.argv[2])
    problems = []
    for name, (kind, labels) in sorted(have.items()):
        if name not in doc:
            problems.append(f"{name}: exported ({kind}), missing from {sys.argv[1]}")
            continue
        doc_kind, doc_labels = doc[name]
        if doc_kind != kind:
            problems.append(f"{name}: exported as a {kind}, documented as a {doc_kind}")
        if doc_labels != labels:
            problems.append(
                f"{name}: exported with labels {sorted(labels)}, documented with {sorted(doc_labels)}"
            )
    for name in sorted(set(doc) - set(have)):
        problems.append(f"{name}: documented in {sys.argv[1]}, exported by no daemon")
    if problems:
        print("\n".join(problems))
        sys.exit(1)
    print(f"{len(have)} metrics exported, all documented with their type and labels")


if __name__ == "__main__":
    main()
