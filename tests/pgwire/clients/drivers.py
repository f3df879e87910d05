"""duckstore's PostgreSQL protocol read by Python's real drivers, each
compared with what the same driver reads from the source PostgreSQL.

Usage: drivers.py psycopg|psycopg2|sqlalchemy. Environment: DS_PG (duckstore's
conninfo), DS_SRC (the source's), DS_SERVER_PID (for its memory). Prints one
"ok ..." line per check; exits 1 on the first failure, saying what differed.
"""
import datetime
import decimal
import math
import os
import sys
import threading
import time

DS = os.environ["DS_PG"]
SRC = os.environ["DS_SRC"]
# The type table: the source's table and duckstore's copy of it.
COLUMNS = ["i2", "i4", "i8", "f4", "f8", "num", "t", "vc", "b", "d", "ts", "tstz", "tm", "iv", "u", "j", "jb",
           "bt", "ai", "ta"]
TYPES_SQL = "SELECT id, " + ", ".join(COLUMNS) + " FROM {} ORDER BY id"


def fail(msg):
    print("FAIL " + msg, flush=True)
    sys.exit(1)


def ok(msg):
    print("ok " + msg, flush=True)


def same(a, b):
    """Equal values of equal Python types; NaN equals NaN; a Decimal keeps
    its scale; bytes-like values compare as bytes."""
    if isinstance(a, memoryview):
        a = bytes(a)
    if isinstance(b, memoryview):
        b = bytes(b)
    if type(a) is not type(b):
        return False
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    if isinstance(a, decimal.Decimal):
        return str(a) == str(b)
    if isinstance(a, datetime.datetime):
        return a == b and a.utcoffset() == b.utcoffset()
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


def compare_rows(driver, want, got):
    if len(want) != len(got):
        fail("%s: %d rows from PostgreSQL, %d from duckstore" % (driver, len(want), len(got)))
    for w, g in zip(want, got):
        for name, x, y in zip(["id"] + COLUMNS, w, g):
            if not same(x, y):
                fail("%s: row %r column %s: PostgreSQL %r (%s), duckstore %r (%s)" %
                     (driver, w[0], name, x, type(x).__name__, y, type(y).__name__))
    ok("%s: %d rows x %d types equal to PostgreSQL's" % (driver, len(want), len(COLUMNS)))


def rss_mb(pid):
    with open("/proc/%s/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


def cancel_check(driver, conn, cancel, canceled_error):
    """A long query is interrupted by the driver's cancel request; the
    connection then answers again."""
    result = {}

    def run():
        cur = conn.cursor()
        try:
            cur.execute("SELECT count(*) FROM big_data a, big_data b WHERE a.id + b.id < 0")
            result["rows"] = cur.fetchall()
        except Exception as e:  # the cancel's error is what is wanted
            result["error"] = e

    th = threading.Thread(target=run)
    th.start()
    deadline = time.time() + 60
    while th.is_alive() and time.time() < deadline:
        time.sleep(0.2)
        cancel()
    th.join(60)
    if th.is_alive():
        fail("%s: the query still runs 60 s after the cancel" % driver)
    err = result.get("error")
    if not isinstance(err, canceled_error):
        fail("%s: the cancelled query ended with %r" % (driver, err if err else result.get("rows")))
    conn.rollback()
    cur = conn.cursor()
    cur.execute("SELECT 1")
    if cur.fetchone()[0] != 1:
        fail("%s: no answer after the cancel" % driver)
    ok("%s: cancel gives %s (%s)" % (driver, type(err).__name__, getattr(err, "pgcode", None) or err.sqlstate))


def big_result(driver, rows_iter):
    """1M rows streamed while duckstore's memory stays flat."""
    pid = os.environ["DS_SERVER_PID"]
    base = peak = rss_mb(pid)
    n = total = 0
    for row in rows_iter:
        n += 1
        total += row[0]
        if n % 50000 == 0:
            peak = max(peak, rss_mb(pid))
    if n != 1000000 or total != 1000000 * 1000001 // 2:
        fail("%s: the 1M-row result had %d rows, ids summing to %d" % (driver, n, total))
    if peak - base > 300:
        fail("%s: duckstore grew from %.0f MB to %.0f MB while streaming 1M rows" % (driver, base, peak))
    ok("%s: 1M rows streamed, duckstore %.0f -> %.0f MB" % (driver, base, peak))


def run_psycopg():
    import psycopg
    import psycopg.errors
    from psycopg.types import TypeInfo
    with psycopg.connect(SRC) as src, psycopg.connect(DS, sslmode="require") as ds:
        if ds.info.pgconn.ssl_in_use != 1:
            fail("psycopg: sslmode=require did not give TLS")
        ok("psycopg: SCRAM over TLS, server_version %s" % ds.info.parameter_status("server_version"))
        # Catalog discovery as psycopg does it for a type adapter.
        for name in ("int4", "numeric", "uuid", "_text"):
            info = TypeInfo.fetch(ds, name)
            ref = TypeInfo.fetch(src, name)
            if info is None or (info.oid, info.array_oid) != (ref.oid, ref.array_oid):
                fail("psycopg: TypeInfo %s: %r, PostgreSQL %r" % (name, info and (info.oid, info.array_oid),
                                                                 (ref.oid, ref.array_oid)))
        ok("psycopg: TypeInfo.fetch finds PostgreSQL's OIDs")
        # Binary results, server-side parameters.
        want = src.cursor(binary=True).execute(TYPES_SQL.format("types")).fetchall()
        got = ds.cursor(binary=True).execute(TYPES_SQL.format("types_data")).fetchall()
        compare_rows("psycopg binary", want, got)
        want = src.cursor().execute(TYPES_SQL.format("types")).fetchall()
        got = ds.cursor().execute(TYPES_SQL.format("types_data")).fetchall()
        compare_rows("psycopg text", want, got)
        row = ds.execute("SELECT i8, t FROM types_data WHERE id = %s AND t = %s", (1, 'héllo "q"')).fetchall()
        if row != [(9007199254740993, 'héllo "q"')]:
            fail("psycopg: parameterized query gave %r" % row)
        ok("psycopg: server-side parameters")
        ds.rollback()
        try:
            ds.execute("INSERT INTO types_data (id) VALUES (99)")
            fail("psycopg: the INSERT was accepted")
        except psycopg.errors.ReadOnlySqlTransaction as e:
            ok("psycopg: write refused, %s" % e.sqlstate)
        ds.rollback()
        cancel_check("psycopg", ds, ds.cancel, psycopg.errors.QueryCanceled)
        big_result("psycopg", ds.cursor().stream("SELECT id, pad FROM big_data"))


def run_psycopg2():
    import psycopg2
    import psycopg2.errors
    src = psycopg2.connect(SRC)
    ds = psycopg2.connect(DS)
    ok("psycopg2: SCRAM, server_version %d" % ds.server_version)
    for table, conn in (("types", src), ("types_data", ds)):
        cur = conn.cursor()
        cur.execute(TYPES_SQL.format(table))
        if table == "types":
            want, want_oids = cur.fetchall(), [d.type_code for d in cur.description]
        else:
            got, got_oids = cur.fetchall(), [d.type_code for d in cur.description]
    # DuckDB has one string type and one JSON type: varchar(n) arrives as
    # text, jsonb as json (the values are the same).
    expect = [{1043: 25, 3802: 114}.get(oid, oid) for oid in want_oids]
    if expect != got_oids:
        fail("psycopg2: type OIDs %r, PostgreSQL %r" % (got_oids, want_oids))
    ok("psycopg2: RowDescription OIDs equal to PostgreSQL's (varchar as text, jsonb as json)")
    compare_rows("psycopg2", want, got)
    cur = ds.cursor()
    cur.execute("SELECT i4 FROM types_data WHERE t = %s", ('héllo "q"',))
    if cur.fetchall() != [(-2147483648,)]:
        fail("psycopg2: parameterized query")
    ok("psycopg2: parameterized query")
    ds.rollback()
    try:
        cur.execute("DELETE FROM types_data")
        fail("psycopg2: the DELETE was accepted")
    except psycopg2.errors.ReadOnlySqlTransaction as e:
        ok("psycopg2: write refused, %s" % e.pgcode)
    ds.rollback()
    cancel_check("psycopg2", ds, ds.cancel, psycopg2.errors.QueryCanceled)
    named = ds.cursor()
    named.itersize = 10000
    named.execute("SELECT id, pad FROM big_data")
    big_result("psycopg2", iter(named.fetchone, None))


def run_sqlalchemy():
    import pandas
    import sqlalchemy
    kv = dict(x.split("=", 1) for x in DS.split())
    url = sqlalchemy.engine.URL.create("postgresql+psycopg2", username=kv["user"], password=kv["password"],
                                       host=kv["host"], port=int(kv["port"]), database=kv["dbname"])
    engine = sqlalchemy.create_engine(url)
    insp = sqlalchemy.inspect(engine)
    names = insp.get_table_names()
    if sorted(names) != ["big_data", "types_data"]:
        fail("sqlalchemy: get_table_names() = %r" % names)
    ok("sqlalchemy: get_table_names() = %r" % sorted(names))
    src_engine = sqlalchemy.create_engine(sqlalchemy.engine.URL.create(
        "postgresql+psycopg2", query=dict(x.split("=", 1) for x in SRC.split())))
    want = [(c["name"], repr(c["type"])) for c in sqlalchemy.inspect(src_engine).get_columns("types")]
    got = [(c["name"], repr(c["type"])) for c in insp.get_columns("types_data")]
    # DuckDB has one string type and one JSON type (see psycopg2's OIDs).
    want = [(n, {"VARCHAR(length=20)": "TEXT()", "JSONB(astext_type=Text())": "JSON(astext_type=Text())"}.get(t, t)) for n, t in want]
    if want != got:
        fail("sqlalchemy: get_columns() gives %r, PostgreSQL %r" % (got, want))
    ok("sqlalchemy: get_columns() types as PostgreSQL's: %s" % ", ".join("%s %s" % c for c in got))
    frames = []
    for eng, table in ((src_engine, "types"), (engine, "types_data")):
        with eng.connect() as conn:
            frames.append(pandas.read_sql(sqlalchemy.text(
                "SELECT id, i8, f8, num, t, d, tstz FROM %s WHERE id <= :n ORDER BY id" % table), conn,
                params={"n": 2}))
    if not frames[0].equals(frames[1]) or list(frames[1]["id"]) != [1, 2]:
        fail("sqlalchemy: read_sql gave\n%s\nPostgreSQL\n%s" % (frames[1], frames[0]))
    ok("sqlalchemy: pandas.read_sql with a parameter, %d rows equal to PostgreSQL's" % len(frames[1]))


def run_sync():
    """A driver's transaction keeps its snapshot while a full sync commits;
    the next transaction sees the new data."""
    import json
    import urllib.request
    import psycopg
    api = "http://127.0.0.1:%s/api/store" % os.environ["DS_HTTP_PORT"]

    def full_sync_to(rows):
        urllib.request.urlopen(urllib.request.Request(api + "/sync/types?full=true", method="POST")).read()
        deadline = time.time() + 120
        while time.time() < deadline:
            with urllib.request.urlopen(api + "/status") as r:
                d = json.load(r)["datasets"]["types_data"]
            if d.get("rows") == rows and d.get("state") == "ready":
                return
            time.sleep(0.05)
        fail("psycopg: the full sync did not reach %d rows: %r" % (rows, d))

    count = "SELECT count(*), sum(i4::bigint) FROM types_data"
    with psycopg.connect(SRC, autocommit=True) as src, psycopg.connect(DS) as ds:
        before = ds.execute(count).fetchone()  # opens the transaction
        src.execute("INSERT INTO types (id, i4) VALUES (4, 7)")
        try:
            full_sync_to(4)
            during = ds.execute(count).fetchone()
            if during != before:
                fail("psycopg: inside one transaction %r, then %r after the sync" % (before, during))
            ds.commit()
            after = ds.execute(count).fetchone()
            if after != (before[0] + 1, before[1] + 7):
                fail("psycopg: after the sync %r, before %r" % (after, before))
            ds.commit()
            ok("psycopg: a transaction keeps its snapshot while a full sync commits (%d rows, then %d)" %
               (before[0], after[0]))
        finally:
            src.execute("DELETE FROM types WHERE id = 4")
            full_sync_to(before[0])


{"psycopg": run_psycopg, "psycopg2": run_psycopg2, "sqlalchemy": run_sqlalchemy, "sync": run_sync}[sys.argv[1]]()
print("done", flush=True)
