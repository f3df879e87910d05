'use strict';
// The status page (GET /) in a real browser: Debian's chromium, headless,
// driven by playwright-core, against a real `duckstore serve` on a throwaway
// config and the harness PostgreSQL (DUCKSTORE_TEST_PG). It loads the page
// without the token, is asked for one, sees each source's card, starts a
// sync that PostgreSQL holds up with a lock (so `syncing` is seen for sure),
// sees `ready` with the new row count, resets the watermark, runs a full
// sync, runs queries in the SQL box and checks the table, and checks that a
// hostile error text and hostile values stay text. Screenshots go to
// DUCKSTORE_TEST_ARTIFACTS (ctest: <build>/test-artifacts/ui).
//
//   cd tests/ui && npm ci && cd ../..
//   scripts/with-test-pg.sh env DUCKSTORE_BIN=build/duckstore node tests/ui/test_status_page.js

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { spawn, execFileSync } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const { chromium } = require('playwright-core');

const TOKEN = 'ui-test-token-' + process.pid;
const HOSTILE_COLUMN = '<img src=x onerror=window.__xss=1>';
const WAIT_MS = 60000;
const sourceDir = process.env.DUCKSTORE_SOURCE_DIR || path.resolve(__dirname, '..', '..');
const artifacts = process.env.DUCKSTORE_TEST_ARTIFACTS || path.resolve('test-artifacts', 'ui');
const chromiumPath = process.env.DUCKSTORE_CHROMIUM || '/usr/bin/chromium';

let pg;          // conninfo of this test's own database
let dir;         // the config directory, DuckDB file and server log
let server;      // {proc, port, base, log}
let browser;
let page;
let failed = false;
const requests = [];   // {url, auth} of every request the page made
const pageErrors = [];

function need(name) {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set: run under ctest and scripts/with-test-pg.sh (see docs/development.md)`);
  return v;
}

function psql(conninfo, sql) {
  return execFileSync('psql', ['-X', '-q', '-At', '-v', 'ON_ERROR_STOP=1', '-d', conninfo, '-c', sql],
    { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Polls fn until it returns a truthy value or the deadline passes.
async function until(what, fn, timeoutMs = WAIT_MS) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs / 1000} s (last: ${last})`);
    await sleep(50);
  }
}

// `duckstore serve` on a free loopback port, as tests/testlib/tl_http.c
// starts it: a port taken before the server binds it makes it exit, and
// another is tried.
async function startServer(configDir, log, token) {
  const bin = need('DUCKSTORE_BIN');
  for (let attempt = 0; attempt < 5; attempt++) {
    const port = await freePort();
    const fd = fs.openSync(log, 'a');
    const env = { ...process.env, DUCKSTORE_API_TOKEN: token };
    const proc = spawn(bin, ['--config-dir', configDir, 'serve', '--listen', `127.0.0.1:${port}`],
      { env, stdio: ['ignore', fd, fd] });
    fs.closeSync(fd);
    let exited = null;
    proc.on('exit', (code, signal) => { exited = signal || code; });
    const base = `http://127.0.0.1:${port}`;
    const up = await until(`the server on port ${port} answers /health`, async () => {
      if (exited !== null) return 'exited';
      try {
        return (await fetch(base + '/health')).status === 200 ? 'up' : false;
      } catch (e) {
        return false;
      }
    }, 30000);
    if (up === 'up') return { proc, port, base, log, exited: () => exited };
  }
  throw new Error(`the server did not come up; its log ${log}:\n${fs.readFileSync(log, 'utf8')}`);
}

async function stopServer(srv) {
  if (srv.exited() !== null) return srv.exited();
  const done = new Promise((resolve) => srv.proc.on('exit', (code, signal) => resolve(signal || code)));
  srv.proc.kill('SIGTERM');
  let timer;
  const timeout = new Promise((resolve) => { timer = setTimeout(() => resolve('timeout'), 30000); });
  const result = await Promise.race([done, timeout]);
  clearTimeout(timer);
  if (result === 'timeout') {
    srv.proc.kill('SIGKILL');
    await done;
  }
  return result;
}

async function screenshot(name) {
  const file = path.join(artifacts, name + '.png');
  await page.screenshot({ path: file, fullPage: true });
  return file;
}

function card(dataset, field) {
  return `[data-dataset="${dataset}"] [data-field="${field}"]`;
}

// Waits until the element's text matches (a string: equal; a RegExp: test);
// on timeout the error names what was expected and what is shown, and a
// screenshot is kept.
async function waitText(selector, expected, timeoutMs = WAIT_MS) {
  const want = expected instanceof RegExp ? { re: expected.source, flags: expected.flags } : { eq: expected };
  try {
    await page.waitForFunction(([sel, w]) => {
      const node = document.querySelector(sel);
      if (!node) return false;
      const text = node.textContent;
      return w.re !== undefined ? new RegExp(w.re, w.flags).test(text) : text === w.eq;
    }, [selector, want], { timeout: timeoutMs, polling: 50 });
  } catch (e) {
    const shown = await page.evaluate((sel) => {
      const node = document.querySelector(sel);
      return node ? JSON.stringify(node.textContent) : '(no such element)';
    }, selector);
    const shot = await screenshot('failure-' + selector.replace(/[^a-z0-9]+/gi, '-'));
    throw new Error(`${selector}: expected ${expected}, the page shows ${shown} (screenshot ${shot})`);
  }
}

async function text(selector) {
  return page.locator(selector).first().textContent();
}

// A psql session holding ACCESS EXCLUSIVE on events after inserting rows in
// the same transaction: a sync blocks on it (in `describing`) until commit().
async function holdEventsLocked(newRows) {
  const proc = spawn('psql', ['-X', '-q', '-At', '-v', 'ON_ERROR_STOP=1', '-d', pg],
    { stdio: ['pipe', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  proc.stdout.on('data', (d) => { out += d; });
  proc.stderr.on('data', (d) => { err += d; });
  const exited = new Promise((resolve) => proc.on('exit', (code) => resolve(code)));
  proc.stdin.write(`BEGIN;
INSERT INTO events SELECT g, 'new ' || g, now() FROM generate_series(4, ${3 + newRows}) g;
LOCK TABLE events IN ACCESS EXCLUSIVE MODE;
SELECT 'locked';
`);
  await until('psql holds the lock on events', () => {
    if (err) throw new Error(err);
    return out.includes('locked');
  });
  return {
    async commit() {
      proc.stdin.end('COMMIT;\n');
      const code = await exited;
      assert.equal(code, 0, `psql: ${err}`);
    },
  };
}

// Each step runs only when every step before it passed: later steps build
// on the state the earlier ones left.
function step(name, fn) {
  it(name, { timeout: 180000 }, async (t) => {
    if (failed) {
      t.skip('an earlier step failed');
      return;
    }
    try {
      await fn();
    } catch (e) {
      failed = true;
      throw e;
    }
  });
}

describe('status page in headless chromium', () => {
  before(async () => {
    const base = need('DUCKSTORE_TEST_PG');
    if (!fs.existsSync(chromiumPath))
      throw new Error(`no chromium at ${chromiumPath}: run scripts/install-deps.sh test (or set DUCKSTORE_CHROMIUM)`);
    fs.mkdirSync(artifacts, { recursive: true });
    const db = `ui_${process.pid}_${Date.now()}`;
    psql(base, `CREATE DATABASE "${db}"`);
    pg = `${base} dbname=${db}`;
    psql(pg, `CREATE TABLE events (id int PRIMARY KEY, note text, created_at timestamptz NOT NULL DEFAULT now());
INSERT INTO events (id, note, created_at) VALUES
  (1, '<b>one</b>', now() - interval '3 minutes'),
  (2, '<script>window.__xss=2</script>', now() - interval '2 minutes'),
  (3, 'plain', now() - interval '1 minute');`);
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'duckstore-ui-'));
    fs.writeFileSync(path.join(dir, 'duckdb.yaml'),
      `duckdb:\n  path: ${dir}/store.duckdb\n  sync_mode: startup\n`);
    fs.writeFileSync(path.join(dir, 'events_db.yaml'),
      `events_db:\n  url: "${pg}"\n  query: SELECT id, note, created_at FROM events\n` +
      '  incremental_column: created_at\n  refresh_interval_minutes: 0\n');
    // Its query names a column PostgreSQL does not know, and the name is
    // markup: the error text that reaches the page holds it.
    fs.writeFileSync(path.join(dir, 'broken_db.yaml'),
      `broken_db:\n  url: "${pg}"\n  query: 'SELECT "${HOSTILE_COLUMN}" FROM events'\n`);
    server = await startServer(dir, path.join(dir, 'serve.log'), TOKEN);
    browser = await chromium.launch({ executablePath: chromiumPath, args: ['--no-sandbox'], headless: true });
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    page = await context.newPage();
    page.setDefaultTimeout(WAIT_MS);
    page.on('request', (r) => requests.push({ url: r.url(), auth: r.headers()['authorization'] || null }));
    page.on('pageerror', (e) => pageErrors.push(String(e)));
    page.on('dialog', (d) => d.accept());
    // Collects what the CSP blocks (Playwright's init scripts are not
    // subject to it).
    await page.addInitScript(() => {
      window.__csp = [];
      document.addEventListener('securitypolicyviolation',
        (e) => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));
    });
  });

  after(async () => {
    if (browser) await browser.close();
    if (server) {
      const code = await stopServer(server);
      const log = fs.readFileSync(server.log, 'utf8');
      fs.copyFileSync(server.log, path.join(artifacts, 'serve.log'));
      assert.equal(code, 0, `duckstore serve exited with ${code}; log:\n${log}`);
      for (const marker of ['ERROR: AddressSanitizer', 'ERROR: LeakSanitizer', 'runtime error:'])
        assert.ok(!log.includes(marker), `sanitizer report in the server log:\n${log}`);
      const password = process.env.DUCKSTORE_TEST_PG_PASSWORD;
      if (password) assert.ok(!log.includes(password), 'the PostgreSQL password is in the server log');
      assert.ok(!log.includes(TOKEN), 'the API token is in the server log');
    }
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  step('/ and /ui serve the page without the token, with a strict CSP', async () => {
    const page1 = await fetch(server.base + '/');
    assert.equal(page1.status, 200);
    assert.equal(page1.headers.get('content-type'), 'text/html; charset=utf-8');
    assert.equal(page1.headers.get('cache-control'), 'no-cache');
    assert.equal(page1.headers.get('x-content-type-options'), 'nosniff');
    const csp = page1.headers.get('content-security-policy');
    assert.match(csp, /^default-src 'none'; script-src 'sha256-[A-Za-z0-9+/]{43}='; style-src 'sha256-[A-Za-z0-9+/]{43}='; connect-src 'self';/);
    assert.doesNotMatch(csp, /unsafe|https?:|\*|data:/);
    const html = await page1.text();
    assert.equal(html, fs.readFileSync(path.join(sourceDir, 'src/server/ui/index.html'), 'utf8'));
    // Data goes into the page as text only.
    assert.doesNotMatch(html, /innerHTML|outerHTML|insertAdjacentHTML|document\.write|eval\(|new Function/);
    const page2 = await fetch(server.base + '/ui');
    assert.equal(page2.status, 200);
    assert.equal(await page2.text(), html);
    const head = await fetch(server.base + '/', { method: 'HEAD' });
    assert.equal(head.status, 200);
    assert.equal(await head.text(), '');
    const post = await fetch(server.base + '/', { method: 'POST' });
    assert.equal(post.status, 405);
    assert.equal(post.headers.get('allow'), 'GET, HEAD');
    assert.deepEqual(await post.json(), {
      success: false,
      error: 'use GET for the status page',
      detail: 'use GET for the status page',
    });
    assert.equal((await fetch(server.base + '/ui/')).status, 404);
    assert.equal((await fetch(server.base + '/api/store/status')).status, 401);
  });

  step('the page asks for the token, refuses a wrong one, then shows every source', async () => {
    await page.goto(server.base + '/');
    await page.locator('#token-form').waitFor({ state: 'visible' });
    await screenshot('01-token');
    await page.fill('#token', 'wrong-token');
    await page.click('#token-form button[type=submit]');
    await waitText('#token-note', /^The server refused this token\./);
    assert.ok(await page.locator('#token-form').isVisible());
    await page.fill('#token', TOKEN);
    await page.click('#token-form button[type=submit]');
    await waitText(card('events_data', 'state'), 'ready');
    await waitText(card('events_data', 'rows'), '3');
    assert.equal(await text(card('events_data', 'name')), 'events');
    assert.equal(await text(card('events_data', 'sync_type')), 'full');
    assert.match(await text(card('events_data', 'watermarks')), /^events_data: \d{4}-\d\d-\d\d \d\d:\d\d:\d\d/);
    assert.ok(await page.locator('#token-form').isHidden());
    assert.equal(await page.evaluate(() => sessionStorage.getItem('duckstore.token')), TOKEN);
  });

  step('a hostile error text is shown as text, not markup', async () => {
    await waitText(card('broken_data', 'state'), 'error');
    const err = await text(card('broken_data', 'error'));
    assert.ok(err.includes(`column "${HOSTILE_COLUMN}" does not exist`), `the error shown: ${err}`);
    assert.equal(await page.locator('img').count(), 0);
    assert.equal(await page.evaluate(() => window.__xss), undefined);
    await screenshot('02-ready');
  });

  step('sync: syncing (held by a lock in PostgreSQL) with live progress, then ready with the new rows', async () => {
    assert.equal(await page.locator(card('events_data', 'sparkline')).getAttribute('data-count'), '1');
    const lock = await holdEventsLocked(1200);
    try {
      await page.click('[data-dataset="events_data"] button[data-action="sync"]');
      await waitText(card('events_data', 'state'), 'syncing');
      await waitText(card('events_data', 'message'), 'sync of events started');
      assert.ok(await page.locator(card('events_data', 'progress')).isVisible());
      assert.match(await text(card('events_data', 'phase')), /^(describing|reading) · [\d,]+ rows/);
      assert.ok(await page.locator('[data-dataset="events_data"] button[data-action="sync"]').isDisabled());
      await screenshot('03-syncing');
    } finally {
      await lock.commit();
    }
    await waitText(card('events_data', 'state'), 'ready');
    await waitText(card('events_data', 'rows'), '1,203');
    assert.equal(await text(card('events_data', 'sync_type')), 'incremental');
    assert.match(await text(card('events_data', 'last_incremental')), /, \+1,200 rows$/);
    assert.ok(await page.locator(card('events_data', 'progress')).isHidden());
    await waitText(card('events_data', 'sparkline-label'), /^last 2 syncs: /);
    assert.equal(await page.locator('[data-dataset="events_data"] [data-field="sparkline"] circle').count(), 2);
    await screenshot('04-synced');
  });

  step('reset watermark, then a full sync', async () => {
    await page.click('[data-dataset="events_data"] button[data-action="reset"]');
    await waitText(card('events_data', 'message'), 'watermarks of events cleared; the next sync is a full rebuild');
    await waitText(card('events_data', 'watermarks'), /^events_data: none \(next sync is full\)/);
    await page.click('[data-dataset="events_data"] button[data-action="full"]');
    await waitText(card('events_data', 'message'), 'full sync of events started');
    await waitText(card('events_data', 'sync_type'), 'full');
    await waitText(card('events_data', 'state'), 'ready');
    assert.equal(await text(card('events_data', 'rows')), '1,203');
    await waitText(card('events_data', 'sparkline-label'), /^last 3 syncs: /);
  });

  step('the SQL box shows the result as a table of text', async () => {
    await page.fill('#sql', 'SELECT id, note AS "<i>note</i>", created_at IS NOT NULL AS timed ' +
      'FROM events_data WHERE id <= 3 ORDER BY id');
    await page.click('#run');
    await waitText('#query-info', /^3 rows in [\d.]+ ms$/);
    const table = await page.evaluate(() => ({
      head: [...document.querySelectorAll('#result th')].map((th) => [th.firstChild.textContent, th.lastChild.textContent]),
      rows: [...document.querySelectorAll('#result tbody tr')].map((tr) => [...tr.cells].map((td) => td.textContent)),
      numeric: [...document.querySelectorAll('#result tbody td.num')].length,
      markup: document.querySelectorAll('#result i, #result b, #result script').length,
    }));
    assert.deepEqual(table.head, [['id', 'INTEGER'], ['<i>note</i>', 'VARCHAR'], ['timed', 'BOOLEAN']]);
    assert.deepEqual(table.rows, [
      ['1', '<b>one</b>', 'true'],
      ['2', '<script>window.__xss=2</script>', 'true'],
      ['3', 'plain', 'true'],
    ]);
    assert.equal(table.numeric, 3);
    assert.equal(table.markup, 0);
    assert.equal(await page.evaluate(() => window.__xss), undefined);
    await screenshot('05-query');

    await page.fill('#sql', 'DELETE FROM events_data');
    await page.press('#sql', 'Control+Enter');
    await waitText('#query-error', /^only reads are allowed .*the statement is of kind DELETE$/);
    await waitText('#query-info', 'failed (HTTP 400)');
    await page.fill('#sql', 'SELECT count(*) AS n, NULL AS nothing FROM events_data');
    await page.click('#run');
    await waitText('#query-info', /^1 row in /);
    assert.deepEqual(await page.evaluate(() => [...document.querySelectorAll('#result tbody td')]
      .map((td) => [td.textContent, td.className])), [['1203', 'num'], ['NULL', 'null']]);
    assert.ok(await page.locator('#query-error').isHidden());
  });

  step('the token went only in headers; the CSP blocked nothing of the page and blocks injected script', async () => {
    assert.ok(!page.url().includes(TOKEN));
    const api = requests.filter((r) => new URL(r.url).pathname.startsWith('/api/'));
    assert.ok(api.length > 5, `API requests seen: ${api.length}`);
    for (const r of requests) {
      assert.ok(!r.url.includes(TOKEN), `the token is in a URL: ${r.url}`);
      assert.ok(r.url.startsWith(server.base + '/'), `a request left the server: ${r.url}`);
    }
    const first = requests.find((r) => r.url === server.base + '/');
    assert.equal(first.auth, null);
    assert.ok(api.some((r) => r.auth === 'Bearer ' + TOKEN));
    assert.deepEqual(pageErrors, []);
    assert.deepEqual(await page.evaluate(() => window.__csp), []);
    // The policy is enforced: script the page did not ship does not run.
    await page.evaluate(() => {
      const s = document.createElement('script');
      s.textContent = 'window.__injected = 1';
      document.body.append(s);
    });
    await until('the CSP reports the injected script', () => page.evaluate(() => window.__csp.length > 0));
    assert.equal(await page.evaluate(() => window.__injected), undefined);
    assert.match((await page.evaluate(() => window.__csp))[0], /^script-src/);
  });
});
