// The consumer portal's stories in a real browser: headless Chromium from
// Debian's packages, driven by Playwright, against a hookgate that
// tests/portal.rs started (real PostgreSQL and Kafka). Every page visited is
// checked by axe-core (no serious or critical violation) and for Content
// Security Policy violations; the main pages are saved as screenshots.
//
// Everything stays on loopback: the portal and the receivers listen on
// 127.0.0.1, the attacker's page on 127.0.0.1 and localhost (other ports).
//
// Environment (set by tests/portal.rs): PORTAL_BASE, ADMIN_TOKEN,
// EXPIRED_LINK, CHROMIUM, SCREENSHOTS.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { createServer } from 'node:http';
import { readFileSync, mkdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { chromium } from 'playwright-core';

const BASE = process.env.PORTAL_BASE;
const ADMIN = process.env.ADMIN_TOKEN;
const SHOTS = process.env.SCREENSHOTS;
const DEADLINE_MS = 30_000;
const AXE = readFileSync(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf8');

assert.ok(BASE && ADMIN && process.env.CHROMIUM, 'run by tests/portal.rs');

// ------------------------------------------------------------ helpers

async function api(method, path, body) {
  const response = await fetch(BASE + path, {
    method,
    headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(15_000),
  });
  const text = await response.text();
  return { status: response.status, json: text ? JSON.parse(text) : null };
}

async function eventually(what, check) {
  const end = Date.now() + DEADLINE_MS;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** The `v1,` signatures of a webhook that each secret makes (Standard Webhooks). */
function signatures(secret, headers, body) {
  const key = Buffer.from(secret.replace(/^whsec_/, ''), 'base64');
  const content = `${headers['webhook-id']}.${headers['webhook-timestamp']}.${body}`;
  return 'v1,' + createHmac('sha256', key).update(content).digest('base64');
}

/** A webhook receiver on loopback that records what it gets; `fail` makes it answer 500. */
async function receiver() {
  const got = [];
  const state = { fail: false, got };
  const server = createServer((req, res) => {
    let body = '';
    req.on('data', (chunk) => (body += chunk));
    req.on('end', () => {
      got.push({ headers: req.headers, body, json: JSON.parse(body || 'null') });
      res.writeHead(state.fail ? 500 : 200, { 'content-type': 'text/plain' });
      res.end(state.fail ? 'down for maintenance' : 'ok');
    });
  });
  servers.add(server);
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  state.url = `http://127.0.0.1:${server.address().port}/hook`;
  state.close = () => shut(server);
  return state;
}

/** A page of another site that posts a form to the portal when its button is pressed. */
async function attackerSite(host, action, fields) {
  const inputs = Object.entries(fields)
    .map(([name, value]) => `<input type="hidden" name="${name}" value="${value}">`)
    .join('');
  const server = createServer((req, res) => {
    res.writeHead(200, { 'content-type': 'text/html' });
    res.end(`<!doctype html><title>prize</title><form method="post" action="${action}">${inputs}<button>Win a prize</button></form>`);
  });
  servers.add(server);
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  return { url: `http://${host}:${server.address().port}/`, close: () => shut(server) };
}

/**
 * Stops a server and drops its connections. In this order: Chromium opens
 * spare connections of its own, and one that arrived after the drop would
 * keep `close` waiting for minutes (Node's request timeout).
 */
function shut(server) {
  servers.delete(server);
  const closed = new Promise((r) => server.close(r));
  server.closeAllConnections();
  return bounded(closed, 5_000, 'closing a test server');
}

/** Servers still open: `after` shuts those a failed story left behind. */
const servers = new Set();
let browser;
const problems = [];
const audited = new Set();

/** A promise that fails after `ms` instead of waiting for ever. */
function bounded(promise, ms, what) {
  let timer;
  const late = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer in ${ms} ms`)), ms);
  });
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}

/** Checks the page with axe-core and records its CSP violations. */
async function audit(page, name) {
  audited.add(name);
  // A page behind another tab runs no animation frames: axe would wait.
  await bounded(page.bringToFront(), 15_000, `bringing ${name} to the front`);
  await bounded(page.evaluate(AXE), 15_000, `axe on ${name}`);
  const result = await bounded(
    page.evaluate(() => window.axe.run(document, { resultTypes: ['violations'] })),
    15_000,
    `axe on ${name}`,
  );
  for (const v of result.violations.filter((v) => ['serious', 'critical'].includes(v.impact))) {
    problems.push(`${name}: axe ${v.impact} ${v.id}: ${v.help} (${v.nodes.map((n) => n.target).join(', ')})`);
  }
}

async function shot(page, name) {
  if (!SHOTS) return;
  mkdirSync(SHOTS, { recursive: true });
  await page.screenshot({ path: `${SHOTS}/${name}.png`, fullPage: true });
}

async function newPage() {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  page.setDefaultTimeout(20_000);
  page.on('console', (message) => {
    if (message.type() === 'error' && /Content Security Policy/i.test(message.text())) {
      problems.push(`CSP: ${message.text()}`);
    }
  });
  return page;
}

/** Opens a portal link as the tenant would: the link's page, then its button. */
async function openLink(page, url) {
  await page.goto(url);
  await audit(page, 'login');
  await page.getByRole('button', { name: 'Open the portal' }).click();
  await page.waitForURL(`${BASE}/portal/subscriptions`);
}

async function portalLink(tenant, body = {}) {
  const { status, json } = await api('POST', `/v1/tenants/${tenant}/portal-links`, body);
  assert.equal(status, 201, JSON.stringify(json));
  return json.url;
}

// ------------------------------------------------------------ the stories

/** Each story's own bound, so that a stuck one fails with its name. */
const STORY = { timeout: 90_000 };

let tenant;
let other;
let hooks;
let page;
let subscription;
let secret;

before(async () => {
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  tenant = (await api('POST', '/v1/tenants', { name: 'Acme' })).json.id;
  other = (await api('POST', '/v1/tenants', { name: 'Globex' })).json.id;
  for (const type of [
    { name: 'order.created', description: 'An order was placed.', schema: {
      type: 'object', required: ['order_id'],
      properties: { order_id: { type: 'integer', minimum: 1 }, total: { type: 'number' }, currency: { enum: ['EUR', 'USD'] } },
    } },
    { name: 'order.shipped', description: 'An order left the warehouse.' },
  ]) {
    assert.equal((await api('POST', '/v1/event-types', type)).status, 201);
  }
  hooks = await receiver();
  page = await newPage();
}, { timeout: 60_000 });

after(async () => {
  await bounded(Promise.all([browser?.close(), ...[...servers].map(shut)]), 20_000, 'closing the browser')
    .catch((error) => console.error(String(error)));
}, { timeout: 30_000 });

test('an admin makes a portal link; the tenant subscribes, sends a test and sees the attempt', STORY, async () => {
  await openLink(page, await portalLink(tenant));
  await audit(page, 'subscriptions (empty)');
  await page.getByRole('link', { name: 'New subscription' }).click();
  await audit(page, 'new subscription');
  await page.getByLabel('Endpoint URL').fill(hooks.url);
  await page.getByLabel('order.created').check();
  await page.getByLabel('Description').fill('Orders to our ERP');
  await page.getByRole('button', { name: 'Create' }).click();
  await page.getByRole('heading', { name: 'Subscription created' }).waitFor();
  secret = await page.locator('#secret').innerText();
  assert.match(secret, /^whsec_/);
  await audit(page, 'subscription created');
  await page.getByRole('link', { name: 'Go to the subscription' }).click();
  subscription = page.url().split('/').pop();
  assert.match(subscription, /^sub_/);

  await page.getByRole('button', { name: 'Send a test event' }).click();
  await page.getByRole('heading', { name: 'Test event: delivered' }).waitFor();
  await audit(page, 'subscription with a test result');
  await shot(page, 'subscription');
  const test = hooks.got.find((h) => h.json?.type === 'hookgate.test');
  assert.ok(test, 'the receiver got the test event');
  assert.equal(test.headers['webhook-signature'], signatures(secret, test.headers, test.body),
    'the test webhook is signed with the secret the portal showed');

  await page.getByRole('link', { name: 'Attempts' }).click();
  const row = page.locator('table.attempts tbody tr').first();
  await assert.doesNotReject(row.waitFor());
  assert.match(await row.innerText(), /hookgate\.test[\s\S]*success[\s\S]*200/);
  await row.getByText('Request and response').click();
  assert.match(await row.innerText(), /webhook-signature\s*v1,\[redacted\]/);
  assert.ok(!(await page.content()).includes(secret), 'no page shows the secret again');
  await audit(page, 'attempts');
  await shot(page, 'attempts');
  await page.getByLabel('Outcome').selectOption('failed');
  await page.getByRole('button', { name: 'Filter' }).click();
  await page.getByText('No attempts match.').waitFor();

  await page.getByRole('link', { name: 'Subscriptions' }).click();
  await audit(page, 'subscriptions');
  await shot(page, 'subscriptions');
  await page.getByRole('link', { name: 'Event types' }).click();
  const orders = page.locator('section.event-type', { has: page.getByRole('heading', { name: 'order.created' }) });
  assert.match(await orders.innerText(), /An order was placed\.[\s\S]*"order_id": 1/);
  assert.ok(await page.getByRole('heading', { name: 'hookgate.subscription.disabled' }).isVisible(),
    'the operational types are in the catalogue');
  await audit(page, 'event types');
  await shot(page, 'event-types');
});

test('the tenant rotates the secret and the next webhook carries both signatures', STORY, async () => {
  await page.goto(`${BASE}/portal/subscriptions/${subscription}`);
  await page.getByLabel('Grace period').selectOption('86400');
  await page.getByRole('button', { name: 'Rotate the secret' }).click();
  await page.getByRole('heading', { name: 'New signing secret' }).waitFor();
  const fresh = await page.locator('#secret').innerText();
  assert.match(fresh, /^whsec_/);
  assert.notEqual(fresh, secret);
  await audit(page, 'rotated');

  const before = hooks.got.length;
  const published = await api('POST', '/v1/events', { type: 'order.created', tenant_id: tenant, data: { order_id: 7 } });
  assert.equal(published.status, 202, JSON.stringify(published.json));
  const webhook = await eventually('the webhook after the rotation', () =>
    hooks.got.slice(before).find((h) => h.json?.data?.order_id === 7));
  const sent = webhook.headers['webhook-signature'].split(' ');
  assert.equal(sent.length, 2, `two signatures: ${sent}`);
  assert.ok(sent.includes(signatures(fresh, webhook.headers, webhook.body)), 'one by the new secret');
  assert.ok(sent.includes(signatures(secret, webhook.headers, webhook.body)), 'one by the previous secret');
  secret = fresh;
});

test('the tenant edits, pauses, resumes and deletes a subscription, and a bad field is explained', STORY, async () => {
  await page.goto(`${BASE}/portal/subscriptions/new`);
  await page.getByLabel('Endpoint URL').fill('ftp://example.com/hook');
  await page.getByLabel('order.shipped').check();
  await page.getByRole('button', { name: 'Create' }).click();
  const alert = page.getByRole('alert');
  await alert.waitFor();
  assert.match(await alert.innerText(), /url/i, 'the field is named');
  assert.ok(!(await page.content()).includes('urn:hookgate:problem'), 'no raw problem JSON');
  assert.equal(await page.getByLabel('Endpoint URL').inputValue(), 'ftp://example.com/hook', 'what was typed stays');
  await audit(page, 'new subscription refused');
  await page.getByLabel('Endpoint URL').fill(hooks.url);
  await page.getByRole('button', { name: 'Create' }).click();
  await page.getByRole('link', { name: 'Go to the subscription' }).click();
  const second = page.url().split('/').pop();

  await page.getByRole('link', { name: 'Edit' }).click();
  await audit(page, 'edit subscription');
  await page.getByLabel('Description').fill('Shipping updates');
  await page.getByLabel('Deliveries per second (empty: unlimited)').fill('25');
  await page.getByRole('button', { name: 'Save' }).click();
  await page.getByText('Your changes were saved.').waitFor();
  let stored = (await api('GET', `/v1/subscriptions/${second}`)).json;
  assert.equal(stored.description, 'Shipping updates');
  assert.deepEqual(stored.rate_limit, { per_second: 25, burst: 25 });

  await page.getByRole('button', { name: 'Pause' }).click();
  await page.getByText('The subscription is paused', { exact: false }).waitFor();
  assert.equal((await api('GET', `/v1/subscriptions/${second}`)).json.status, 'paused');
  await page.getByRole('button', { name: 'Resume' }).click();
  await page.getByText('The subscription is active again.').waitFor();
  assert.equal((await api('GET', `/v1/subscriptions/${second}`)).json.status, 'active');

  await page.getByText('Delete this subscription').click();
  await page.getByRole('button', { name: 'Delete the subscription' }).click();
  await page.getByText('The subscription was deleted.').waitFor();
  assert.equal((await api('GET', `/v1/subscriptions/${second}`)).status, 404);
  stored = (await api('GET', `/v1/subscriptions/${subscription}`)).json;
  assert.equal(stored.status, 'active', 'the first subscription is untouched');
});

test('a failing receiver makes dead letters; the tenant discards one, dry-runs a bulk replay, replays and watches it finish', STORY, async () => {
  hooks.fail = true;
  const ids = [101, 102, 103, 104];
  for (const n of ids) {
    const published = await api('POST', '/v1/events', { type: 'order.created', tenant_id: tenant, data: { order_id: n } });
    assert.equal(published.status, 202);
  }
  await eventually('four dead letters', async () => {
    const { json } = await api('GET', `/v1/dead-letters?tenant_id=${tenant}&status=pending`);
    return json.data.length === 4;
  });
  hooks.fail = false;

  await page.getByRole('link', { name: 'Dead letters' }).click();
  await page.getByLabel('Status').selectOption('pending');
  await page.getByRole('button', { name: 'Filter' }).click();
  assert.equal(await page.locator('main table tbody tr').count(), 4);
  await audit(page, 'dead letters');
  await shot(page, 'dead-letters');
  await page.locator('main table tbody tr a').first().click();
  await page.getByRole('heading', { name: 'Payload' }).waitFor();
  const shown = await page.locator('main').innerText();
  assert.match(shown, /500/, 'the last status is shown');
  const discarded = Number(shown.match(/"order_id": (\d+)/)[1]);
  assert.ok(ids.includes(discarded));
  await audit(page, 'dead letter');
  await page.getByRole('button', { name: 'Discard' }).click();
  await page.getByText('The dead letter was discarded.').waitFor();

  await page.getByLabel('Status').selectOption('pending');
  await page.getByRole('button', { name: 'Filter' }).click();
  await page.getByRole('link', { name: 'Replay the pending ones that match…' }).click();
  await audit(page, 'bulk replay');
  const beforeDryRun = hooks.got.length;
  await page.getByRole('button', { name: 'Dry run: count them' }).click();
  await page.getByText('3 pending dead letters match.').waitFor();
  assert.equal(hooks.got.length, beforeDryRun, 'a dry run sends nothing');
  await audit(page, 'bulk replay dry run');
  const before = hooks.got.length;
  await page.getByRole('button', { name: 'Replay 3 dead letters' }).click();
  await page.waitForURL(/\/portal\/replays\/rpl_/);
  await page.getByText('Status: completed').waitFor({ timeout: DEADLINE_MS });
  const progress = page.locator('#replay-progress');
  assert.equal(await progress.getAttribute('value'), '3');
  assert.equal(await progress.getAttribute('max'), '3');
  await audit(page, 'replay progress');
  await shot(page, 'replay');
  const kept = ids.filter((n) => n !== discarded);
  await eventually('the replayed webhooks', () => {
    const replayed = new Set(hooks.got.slice(before).map((h) => h.json?.data?.order_id));
    return kept.every((n) => replayed.has(n));
  });
  assert.ok(!hooks.got.slice(before).some((h) => h.json?.data?.order_id === discarded),
    'the discarded one is not sent again');
});

test('used and expired links, another tenant\'s ids and cross-site posts are refused', STORY, async () => {
  // A used link.
  const link = await portalLink(tenant);
  const used = await newPage();
  await openLink(used, link);
  const again = await newPage();
  await again.goto(link);
  await again.getByRole('button', { name: 'Open the portal' }).click();
  await again.getByRole('heading', { name: 'This link cannot be used' }).waitFor();
  await audit(again, 'refused link');
  // An expired one (made by the test in the store: the API makes none).
  await again.goto(process.env.EXPIRED_LINK);
  await again.getByRole('button', { name: 'Open the portal' }).click();
  await again.getByRole('heading', { name: 'This link cannot be used' }).waitFor();
  // No session: the portal asks for a link.
  const response = await again.goto(`${BASE}/portal/subscriptions`);
  assert.equal(response.status(), 401);

  // Another tenant's subscription, typed into the URL.
  const theirs = await api('POST', '/v1/subscriptions', { tenant_id: other, url: hooks.url, event_types: ['order.created'] });
  assert.equal(theirs.status, 201);
  for (const path of [`/portal/subscriptions/${theirs.json.id}`, `/portal/subscriptions/${theirs.json.id}/attempts`,
    `/portal/subscriptions/${theirs.json.id}/edit`]) {
    const answer = await used.goto(BASE + path);
    assert.equal(answer.status(), 404, path);
    assert.ok(!(await used.content()).includes(hooks.url.split('/hook')[0] + '/hook"'), 'nothing of theirs is shown');
  }
  await used.goto(`${BASE}/portal/subscriptions`);
  const csrf = await used.locator('input[name=_csrf]').first().getAttribute('value');
  const pause = await used.request.post(`${BASE}/portal/subscriptions/${theirs.json.id}/pause`, {
    form: { _csrf: csrf }, headers: { origin: BASE },
  });
  assert.equal(pause.status(), 404, 'their subscription cannot be paused from here');
  assert.equal((await api('GET', `/v1/subscriptions/${theirs.json.id}`)).json.status, 'active');

  // Cross-site posts: from another port of the same host (the cookie goes
  // along: same site), with and without the session's CSRF token, and from
  // another host name (the cookie stays home: SameSite=Strict).
  for (const [host, fields] of [['127.0.0.1', {}], ['127.0.0.1', { _csrf: csrf }], ['localhost', { _csrf: csrf }]]) {
    const site = await attackerSite(host, `${BASE}/portal/subscriptions/${subscription}/pause`, fields);
    const tab = await used.context().newPage();
    tab.setDefaultTimeout(20_000);
    await tab.goto(site.url);
    const [answer] = await Promise.all([
      tab.waitForResponse((r) => r.url().endsWith('/pause')),
      tab.getByRole('button', { name: 'Win a prize' }).click(),
    ]);
    assert.ok([401, 403].includes(answer.status()), `${host} ${JSON.stringify(fields)}: ${answer.status()}`);
    // The tab stays open: Chromium sometimes never answers closing a tab
    // whose form post is still loading, and the browser's close ends it.
    await site.close();
  }
  assert.equal((await api('GET', `/v1/subscriptions/${subscription}`)).json.status, 'active',
    'no cross-site post paused the subscription');

  // A read-only link shows everything and changes nothing.
  const viewer = await newPage();
  await openLink(viewer, await portalLink(tenant, { read_only: true }));
  await viewer.goto(`${BASE}/portal/subscriptions/${subscription}`);
  assert.ok(await viewer.getByRole('button', { name: 'Pause' }).isDisabled());
  const token = await viewer.locator('input[name=_csrf]').first().getAttribute('value');
  const refused = await viewer.request.post(`${BASE}/portal/subscriptions/${subscription}/pause`, {
    form: { _csrf: token }, headers: { origin: BASE },
  });
  assert.equal(refused.status(), 403);
  assert.equal((await api('GET', `/v1/subscriptions/${subscription}`)).json.status, 'active');

  // Signing out ends the session.
  await viewer.getByRole('button', { name: 'Sign out' }).click();
  await viewer.getByRole('heading', { name: 'Signed out' }).waitFor();
  await audit(viewer, 'signed out');
  assert.equal((await viewer.goto(`${BASE}/portal/subscriptions`)).status(), 401);
  await audit(viewer, 'not signed in');
  const missing = await again.goto(`${BASE}/portal/no-such-page`);
  assert.equal(missing.status(), 404);
  await audit(again, 'no such page');
});

test('the admin view lists tenants, keys, event types and replays, and makes portal links', STORY, async () => {
  const admin = await newPage();
  await admin.goto(`${BASE}/portal/admin/login`);
  await admin.getByLabel('Admin token').fill('not-the-token-at-all');
  await admin.getByRole('button', { name: 'Sign in' }).click();
  await admin.getByText('That is not an admin token.').waitFor();
  await audit(admin, 'admin sign-in');
  await admin.getByLabel('Admin token').fill(ADMIN);
  await admin.getByRole('button', { name: 'Sign in' }).click();
  await admin.waitForURL(`${BASE}/portal/admin`);
  await audit(admin, 'admin tenants');
  await shot(admin, 'admin-tenants');
  await admin.getByRole('link', { name: 'Acme' }).click();
  await admin.getByRole('heading', { name: 'API keys' }).waitFor();
  await admin.getByRole('button', { name: 'Make a portal link' }).click();
  const made = await admin.locator('#portal-link').innerText();
  assert.match(made, /\/portal\/login\?token=hgp_/);
  await audit(admin, 'admin tenant');
  await admin.getByRole('link', { name: 'Replays' }).click();
  assert.equal(await admin.locator('main table tbody tr').count(), 1);
  await audit(admin, 'admin replays');
  await admin.getByRole('link', { name: 'Event types' }).click();
  await admin.getByRole('heading', { name: 'order.shipped' }).waitFor();
  await audit(admin, 'admin event types');
  // A tenant's session does not reach the admin view.
  const tenantTab = await newPage();
  await openLink(tenantTab, await portalLink(tenant));
  assert.equal((await tenantTab.goto(`${BASE}/portal/admin`)).status(), 403);
  assert.equal((await tenantTab.goto(`${BASE}/portal/admin/replays`)).status(), 403);
  // The link the admin made opens the tenant's portal.
  const tenantView = await newPage();
  await openLink(tenantView, made);
  assert.match(await tenantView.locator('main').innerText(), /Orders to our ERP/);
  // Withdrawn: the tenant's sessions end, and its unused links open nothing.
  const unused = await portalLink(tenant);
  assert.equal((await api('DELETE', `/v1/tenants/${tenant}/portal-access`)).status, 204);
  assert.equal((await tenantView.goto(`${BASE}/portal/subscriptions`)).status(), 401);
  await tenantView.goto(unused);
  await tenantView.getByRole('button', { name: 'Open the portal' }).click();
  await tenantView.getByRole('heading', { name: 'This link cannot be used' }).waitFor();
});

test('every page passed axe-core and the Content Security Policy', { timeout: 10_000 }, () => {
  assert.ok(audited.size >= 15, `axe-core checked ${audited.size} pages: ${[...audited]}`);
  assert.deepEqual(problems, []);
});
