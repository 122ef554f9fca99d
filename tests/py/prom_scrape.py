"""Scrapes a Prometheus text endpoint and parses it with Prometheus' own parser
(Debian's python3-prometheus-client), so the appliance's /metrics is checked as a
real scraper reads it. Prints one JSON object: the families with their type and
every sample as {name, labels, value}. Exits non-zero if the text does not parse
or the Content-Type is not the text format.

usage: /usr/bin/python3 prom_scrape.py URL
"""
import json
import sys
import urllib.request

from prometheus_client.parser import text_string_to_metric_families


def main():
    url = sys.argv[1]
    with urllib.request.urlopen(url, timeout=10) as r:
        ctype = r.headers.get("Content-Type", "")
        text = r.read().decode("utf-8")
    if not ctype.startswith("text/plain") or "version=0.0.4" not in ctype:
        sys.exit(f"unexpected Content-Type {ctype!r}")
    out = {}
    for fam in text_string_to_metric_families(text):
        out[fam.name] = {
            "type": fam.type,
            "samples": [
                {"name": s.name, "labels": s.labels, "value": s.value}
                for s in fam.samples
            ],
        }
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
