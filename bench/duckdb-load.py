"""The DuckDB side of the load benchmarks, as a DuckDB user runs it.

Usage: duckdb-load.py SQLITE_DB SQL_FILE MS_FILE

Loads the sqlite_scanner and postgres_scanner extensions from the files their PyPI wheels
ship (DuckDB's INSTALL needs its extension server), ATTACHes the SQLite file and the
PostgreSQL that the libpq variables name (so no password is on a command line), runs
SQL_FILE's statements (INSERT INTO pg.t SELECT ... FROM s.t) between BEGIN and COMMIT, and
appends to MS_FILE the milliseconds from ATTACH to COMMIT (the process start, Python and
the extension loading are left out, in DuckDB's favour).
"""

import glob
import os
import sys
import time

import duckdb


def main():
    db, sql_file, ms_file = sys.argv[1:4]
    statements = [s.strip() for s in open(sql_file).read().split(";") if s.strip()]
    con = duckdb.connect()
    site = os.path.dirname(os.path.dirname(duckdb.__file__))
    for name in ("sqlite_scanner", "postgres_scanner"):
        found = glob.glob(f"{site}/duckdb_extension_*/extensions/v{duckdb.__version__}/{name}.duckdb_extension")
        if not found:
            sys.exit(f"duckdb-load: no {name}.duckdb_extension under {site}")
        con.execute(f"LOAD '{found[0]}'")
    # Timestamps without an offset are UTC on every side of the benchmark.
    con.execute("SET TimeZone = 'UTC'")
    start = time.monotonic()
    con.execute(f"ATTACH '{db}' AS s (TYPE sqlite, READ_ONLY)")
    con.execute("ATTACH '' AS pg (TYPE postgres)")
    con.execute("BEGIN")
    for s in statements:
        con.execute(s)
    con.execute("COMMIT")
    ms = (time.monotonic() - start) * 1000
    with open(ms_file, "a") as f:
        f.write(f"{ms:.0f}\n")


if __name__ == "__main__":
    main()
