#!/usr/bin/env python3
"""Run every statement Ricochet issues on a current ClickHouse engine (chDB, ClickHouse 26.x).

    python infra/chdb/run.py STATEMENTS.json

STATEMENTS.json is written by tests/tests/current_clickhouse.rs:
  {"migrations": [sql, ...],        # the schema, rendered for a current server
   "statements": [sql, ...],        # what the product sent to ClickHouse 18.16, binds included
   "current_only": [sql, ...],      # what it sends only to a current server (TTL) or on a fault
                                    # the test cannot cause (KILL QUERY), rendered by the test
   "docs":       [sql, ...]}        # the example queries of docs/data-model.md

Migrations run first, in order, then the statements, the current-only ones and the documented
queries. An INSERT
arrives without its data (the product sends RowBinary); it is run with three generated rows of
the listed columns' types instead, which checks the table and the column list. Every failure is
printed; the exit code is 1 if anything failed.
"""
import json
import re
import sys

from chdb import session

# The clickhouse crate quotes the table and the columns: INSERT INTO `t`(`a`,`b`) FORMAT RowBinary
INSERT = re.compile(r"^\s*INSERT INTO\s+`?([\w.]+)`?\s*\(([^)]*)\)\s*FORMAT\s+\w+\s*$", re.I | re.S)


def column_types(s, table):
    rows = s.query(f"DESCRIBE TABLE {table}", "JSONEachRow").bytes().decode().splitlines()
    return {r["name"]: r["type"] for r in map(json.loads, rows)}


def insert_with_rows(s, sql):
    m = INSERT.match(sql)
    if not m:
        raise ValueError(f"not an INSERT … (columns) FORMAT …: {sql[:120]}")
    table, cols = m.group(1), [c.strip().strip("`") for c in m.group(2).split(",")]
    types = column_types(s, table)
    missing = [c for c in cols if c not in types]
    if missing:
        raise ValueError(f"{table} has no column(s) {missing}")
    structure = ", ".join(f"`{c}` {types[c]}" for c in cols).replace("\\", "\\\\").replace("'", "\\'")
    listed = ", ".join(f"`{c}`" for c in cols)
    s.query(f"INSERT INTO {table} ({listed}) SELECT * FROM generateRandom('{structure}', 1, 10, 2) LIMIT 3")


def main(path):
    with open(path) as f:
        spec = json.load(f)
    s = session.Session()
    version = s.query("SELECT version()", "TSV").bytes().decode().strip()
    print(f"chdb: ClickHouse {version}")
    failed, passed = [], 0
    for kind in ("migrations", "statements", "current_only", "docs"):
        for sql in spec.get(kind, []):
            try:
                if kind == "statements" and sql.lstrip().upper().startswith("INSERT"):
                    insert_with_rows(s, sql)
                else:
                    s.query(sql, "TSV")
                passed += 1
            except Exception as e:  # chdb raises its own error type; every one is a failure
                failed.append((kind, sql, str(e).strip()))
    for kind, sql, err in failed:
        print(f"FAILED ({kind}):\n{sql}\n  -> {err}\n")
    print(f"chdb: {passed} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    sys.exit(main(sys.argv[1]))
