"""Evaluates the PromQL operators are given on a real Prometheus that scrapes a running
cluster: every query of the Grafana dashboard, and every query in the docs (`quoted`
text that names a metric). Usage:
`check_queries.py PROMETHEUS_URL TARGETS DASHBOARD.json DOC.md...` where TARGETS is
how many scrape targets Prometheus has.

A query must be accepted and return at least one series: a query that returns nothing
on a cluster exporting every metric (a label mismatch across metrics, a misspelt
label) would draw an empty panel or never fire. Queries that filter with a
comparison (`> 0`) may return nothing. Exits 1 naming each failing query."""

import json
import re
import sys
import time
import urllib.parse
import urllib.request

# Bounds: Prometheus scrapes twice a second; rate() over a window needs two samples.
READY_TIMEOUT_SECONDS = 60
SAMPLES_NEEDED = 2
HTTP_TIMEOUT_SECONDS = 10

QUOTED_QUERY = re.compile(r"`([^`]*(?:safekeeper_|pageserver_)[^`]*)`")
COMPARISON = re.compile(r"[<>]=?|==|!=")
IDENTIFIER = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


def query(url, expr):
    """Returns (error or None, number of series)."""
    full = f"{url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
    try:
        with urllib.request.urlopen(full, timeout=HTTP_TIMEOUT_SECONDS) as response:
            body = json.load(response)
    except urllib.error.HTTPError as e:
        body = json.load(e)
    except (urllib.error.URLError, OSError) as e:
        return (str(e), 0)
    if body.get("status") != "success":
        return (body.get("error", "failed"), 0)
    return (None, len(body["data"]["result"]))


def wait_ready(url, targets):
    """Until every target has been scraped SAMPLES_NEEDED times."""
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    expr = f"count_over_time(up[1m]) >= {SAMPLES_NEEDED}"
    while time.monotonic() < deadline:
        error, series = query(url, expr)
        if error is None and series >= targets:
            return
        time.sleep(0.5)
    print(f"Prometheus at {url} did not scrape {targets} targets {SAMPLES_NEEDED} times "
          f"within {READY_TIMEOUT_SECONDS} s")
    sys.exit(1)


def dashboard_queries(path):
    with open(path) as f:
        dashboard = json.load(f)
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            yield (f"{path}: {panel['title']}", target["expr"])


def doc_queries(path):
    with open(path) as f:
        for number, line in enumerate(f, 1):
            for expr in QUOTED_QUERY.findall(line):
                yield (f"{path}:{number}", expr)


def main():
    url, targets, dashboard, docs = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:]
    started = time.monotonic()
    wait_ready(url, targets)
    ready = time.monotonic() - started
    queries = list(dashboard_queries(dashboard))
    for doc in docs:
        queries.extend(doc_queries(doc))
    problems = []
    for where, expr in queries:
        error, series = query(url, expr)
        if error is None and series == 0 and IDENTIFIER.fullmatch(expr):
            # A histogram's name in a reference table: its series are _bucket, _sum
            # and _count.
            error, series = query(url, expr + "_count")
        if error is not None:
            problems.append(f"{where}: {expr}: {error}")
        elif series == 0 and not COMPARISON.search(expr):
            problems.append(f"{where}: {expr}: no series on a running cluster")
    if problems:
        print("\n".join(problems))
        sys.exit(1)
    print(f"{len(queries)} queries evaluated on a live cluster, each returns series "
          f"(Prometheus ready in {ready:.1f} s, queries took {time.monotonic() - started - ready:.1f} s)")


if __name__ == "__main__":
    main()
