// duckstore's PostgreSQL protocol read by node-postgres, compared with what
// node-postgres reads from the source PostgreSQL. Environment as
// drivers.py's (DS_PG, DS_SRC, DS_SERVER_PID). Prints one "ok ..." line per
// check and "done"; exits 1 on the first failure, saying what differed.
'use strict';
const fs = require('fs');
const net = require('net');
const { Client } = require('pg');
const Cursor = require('pg-cursor');

const COLUMNS = ['i2', 'i4', 'i8', 'f4', 'f8', 'num', 't', 'vc', 'b', 'd', 'ts', 'tstz', 'tm', 'iv', 'u', 'j',
                 'jb', 'bt', 'ai', 'ta'];

function fail(msg) {
  console.log('FAIL ' + msg);
  process.exit(1);
}
const ok = (msg) => console.log('ok ' + msg);

function config(env) {
  const kv = Object.fromEntries(process.env[env].trim().split(/\s+/).map((p) => {
    const i = p.indexOf('=');
    return [p.slice(0, i), p.slice(i + 1)];
  }));
  return { host: kv.host, port: Number(kv.port), user: kv.user, password: kv.password,
           database: kv.dbname || 'postgres' };
}

// A value as text that compares what the driver decoded, its kind included.
function show(v) {
  if (v === null) return 'null';
  if (Buffer.isBuffer(v)) return 'Buffer ' + v.toString('hex');
  if (v instanceof Date) return 'Date ' + v.toISOString();
  if (Array.isArray(v)) return 'Array [' + v.map(show).join(', ') + ']';
  if (typeof v === 'object') return (v.constructor ? v.constructor.name : 'Object') + ' ' + JSON.stringify(v);
  return typeof v + ' ' + String(v);
}

function rssMb(pid) {
  const m = /VmRSS:\s+(\d+)/.exec(fs.readFileSync('/proc/' + pid + '/status', 'utf8'));
  return m ? Number(m[1]) / 1024 : 0;
}

// PostgreSQL's CancelRequest with the session's key, as libpq's PQcancel sends it.
function cancelRequest(cfg, client) {
  return new Promise((resolve) => {
    const msg = Buffer.alloc(16);
    msg.writeInt32BE(16, 0);
    msg.writeInt32BE(80877102, 4);
    msg.writeInt32BE(client.processID, 8);
    msg.writeInt32BE(client.secretKey, 12);
    const sock = net.connect(cfg.port, cfg.host, () => sock.end(msg));
    sock.on('close', resolve);
    sock.on('error', resolve);
  });
}

async function main() {
  const srcCfg = config('DS_SRC'), dsCfg = config('DS_PG');
  const src = new Client(srcCfg), ds = new Client(dsCfg);
  await src.connect();
  await ds.connect();
  const version = (await ds.query('SELECT version() AS v')).rows[0].v;
  ok('node-postgres: SCRAM, ' + version);

  const tables = (await ds.query(
    "SELECT c.relname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace " +
    "WHERE c.relkind = 'r' AND pg_catalog.pg_table_is_visible(c.oid) ORDER BY 1")).rows.map((r) => r.relname);
  if (JSON.stringify(tables) !== '["big_data","types_data"]') fail('node-postgres: tables ' + tables);
  ok('node-postgres: catalog lists ' + tables.join(', '));

  const sql = (t) => 'SELECT id, ' + COLUMNS.join(', ') + ' FROM ' + t + ' ORDER BY id';
  const want = await src.query(sql('types')), got = await ds.query(sql('types_data'));
  // DuckDB has one string type and one JSON type: varchar(n) is text, jsonb json.
  const oid = (f) => ({ 1043: 25, 3802: 114 })[f.dataTypeID] || f.dataTypeID;
  const wantOids = want.fields.map(oid), gotOids = got.fields.map((f) => f.dataTypeID);
  if (JSON.stringify(wantOids) !== JSON.stringify(gotOids))
    fail('node-postgres: type OIDs ' + gotOids + ', PostgreSQL ' + wantOids);
  if (want.rows.length !== got.rows.length) fail('node-postgres: row counts differ');
  want.rows.forEach((w, i) => {
    for (const col of ['id'].concat(COLUMNS)) {
      if (show(w[col]) !== show(got.rows[i][col]))
        fail('node-postgres: row ' + w.id + ' ' + col + ': PostgreSQL ' + show(w[col]) + ', duckstore ' +
             show(got.rows[i][col]));
    }
  });
  ok('node-postgres: ' + got.rows.length + ' rows x ' + COLUMNS.length + ' types equal to PostgreSQL\'s');

  const p = await ds.query('SELECT i8, t FROM types_data WHERE id = $1 AND t = $2', [1, 'héllo "q"']);
  if (p.rows.length !== 1 || p.rows[0].i8 !== '9007199254740993') fail('node-postgres: parameterized query');
  ok('node-postgres: parameterized query');

  try {
    await ds.query('INSERT INTO types_data (id) VALUES (98)');
    fail('node-postgres: the INSERT was accepted');
  } catch (e) {
    if (e.code !== '25006') fail('node-postgres: the INSERT failed with ' + e.code + ' ' + e.message);
    ok('node-postgres: write refused, ' + e.code);
  }

  let done = false;
  const running = ds.query('SELECT count(*) FROM big_data a, big_data b WHERE a.id + b.id < 0')
    .then(() => null, (e) => e).finally(() => { done = true; });
  const deadline = Date.now() + 60000;
  while (!done && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 200));
    if (!done) await cancelRequest(dsCfg, ds);
  }
  const err = await running;
  if (!err || err.code !== '57014') fail('node-postgres: cancel gave ' + (err ? err.code + ' ' + err.message : 'rows'));
  ok('node-postgres: cancel gives ' + err.code);

  const pid = process.env.DS_SERVER_PID;
  const base = rssMb(pid);
  let peak = base, n = 0, sum = 0n;
  const cursor = ds.query(new Cursor('SELECT id, pad FROM big_data'));
  for (;;) {
    const rows = await cursor.read(10000);
    if (rows.length === 0) break;
    for (const r of rows) { n++; sum += BigInt(r.id); }
    if (n % 50000 === 0) peak = Math.max(peak, rssMb(pid));
  }
  await cursor.close();
  if (n !== 1000000 || sum !== 500000500000n) fail('node-postgres: the 1M-row result had ' + n + ' rows');
  if (peak - base > 300) fail('node-postgres: duckstore grew from ' + base + ' MB to ' + peak + ' MB');
  ok('node-postgres: 1M rows streamed, duckstore ' + Math.round(base) + ' -> ' + Math.round(peak) + ' MB');

  await src.end();
  await ds.end();
  console.log('done');
}

main().catch((e) => fail('node-postgres: ' + (e.stack || e)));
