// Drives Debian's chromium (playwright-core, no browser download) through depotai
// serve's pages as a person would, and prints what it saw as one JSON document on
// stdout. tests/web.rs decides what is right; this script only observes.
//
//   node browse.mjs PLAN.json
//
// PLAN: { base, artifacts, search, modelPage, copyFile, fileFilter, oddPage, stackedPage }
import { chromium } from 'playwright-core';
import { readFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';

const plan = JSON.parse(readFileSync(process.argv[2], 'utf8'));
mkdirSync(plan.artifacts, { recursive: true });
const shot = (page, name) => page.screenshot({ path: join(plan.artifacts, name), fullPage: true });

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  // Root in a container has no user namespace for chromium's sandbox.
  args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
});
const out = { console: [], pageErrors: [], requests: [] };
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 860 }, deviceScaleFactor: 1 });
  await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: plan.base });
  const page = await context.newPage();
  page.on('console', (m) => out.console.push(`${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => out.pageErrors.push(String(e)));
  page.on('request', (r) => out.requests.push(r.url()));

  const visibleRows = (table) =>
    page.$$eval(`#${table} tbody tr`, (rows) =>
      rows.filter((r) => !r.hidden && r.offsetParent !== null).map((r) => r.dataset.name || r.dataset.path || r.dataset.dir));
  const clipboard = () => page.evaluate(() => navigator.clipboard.readText());
  const copied = () => page.evaluate(() => document.body.dataset.copied || null);

  // The list of models, then typing into its search box.
  await page.goto(plan.base + '/', { waitUntil: 'networkidle' });
  await page.waitForSelector('html[data-ready="1"]');
  out.index = {
    title: await page.title(),
    rows: await visibleRows('models'),
    count: await page.textContent('#count'),
    scripts: await page.$$eval('script', (s) => s.map((x) => x.getAttribute('src'))),
  };
  await shot(page, 'index.png');
  await page.click('#q');
  await page.keyboard.type(plan.search, { delay: 15 });
  out.search = {
    query: plan.search,
    rows: await visibleRows('models'),
    count: await page.textContent('#count'),
  };
  await shot(page, 'index-search.png');
  // The copy button of the (first) row left.
  await page.click('#models tbody tr:not([hidden]) button.copy');
  await page.waitForSelector('#models tbody tr:not([hidden]) button.copy[data-state]');
  out.search.copy = {
    clipboard: await clipboard(),
    dom: await copied(),
    button: await page.textContent('#models tbody tr:not([hidden]) button.copy'),
  };
  out.search.url = page.url();
  // Enter opens the only match.
  await page.focus('#q');
  await Promise.all([page.waitForURL('**' + plan.modelPage), page.keyboard.press('Enter')]);

  // A linked search: the query comes from the address.
  const linked = await context.newPage();
  await linked.goto(plan.base + '/?q=' + encodeURIComponent(plan.linkedSearch), { waitUntil: 'networkidle' });
  await linked.waitForSelector('html[data-ready="1"]');
  out.linked = {
    value: await linked.inputValue('#q'),
    rows: await linked.$$eval('#models tbody tr', (rows) => rows.filter((r) => !r.hidden).map((r) => r.dataset.name)),
  };
  await linked.close();

  // The model's page.
  await page.waitForSelector('html[data-ready="1"]');
  out.model = {
    url: page.url(),
    title: await page.title(),
    h1: await page.textContent('h1'),
    files: await visibleRows('files'),
    fileNames: await page.$$eval('#files tbody tr', (rows) => rows.map((r) => r.querySelector('td.path').textContent)),
    exampleOne: await page.textContent('#example-one').catch(() => null),
    exampleAll: await page.textContent('#example-all'),
    examplePinned: await page.textContent('#example-pinned').catch(() => null),
    layers: await page.$$eval('table.layers tbody tr', (rows) => rows.map((r) => Array.from(r.cells, (c) => c.textContent))),
    facts: await page.$$eval('dl.facts dt', (dts) => dts.map((dt) => [dt.textContent, dt.nextElementSibling.textContent])),
  };
  await shot(page, 'model.png');
  const row = `#files tbody tr[data-path="${plan.copyFile}"] button.copy`;
  await page.click(row);
  await page.waitForSelector(`${row}[data-state]`);
  out.model.copy = { path: plan.copyFile, clipboard: await clipboard(), dom: await copied() };
  await page.click('#example-one + button.copy');
  out.model.copyExample = { clipboard: await clipboard(), dom: await copied() };
  await page.click('#fq');
  await page.keyboard.type(plan.fileFilter, { delay: 15 });
  out.model.filtered = { query: plan.fileFilter, rows: await visibleRows('files'), count: await page.textContent('#file-count') };
  await shot(page, 'model-filter.png');

  // A page whose file names and commit are markup: it must show them as text.
  await page.goto(plan.base + plan.oddPage, { waitUntil: 'networkidle' });
  await page.waitForSelector('html[data-ready="1"]');
  out.odd = {
    title: await page.title(),
    scripts: await page.$$eval('script', (s) => s.map((x) => x.getAttribute('src'))),
    images: await page.$$eval('img', (i) => i.map((x) => x.getAttribute('src'))),
    fileNames: await page.$$eval('#files tbody tr', (rows) => rows.map((r) => r.querySelector('td.path').textContent)),
    facts: await page.$$eval('dl.facts dt', (dts) => dts.map((dt) => [dt.textContent, dt.nextElementSibling.textContent])),
    links: await page.$$eval('a[href]', (a) => a.map((x) => x.getAttribute('href'))),
    copies: await page.$$eval('button[data-copy]', (b) => b.map((x) => x.dataset.copy)),
    pwned: await page.evaluate(() => window.__pwned || null),
  };
  await shot(page, 'odd.png');
  // A model of several layers (one per large file, as built for big models).
  await page.goto(plan.base + plan.stackedPage, { waitUntil: 'networkidle' });
  out.stacked = {
    layers: await page.$$eval('table.layers tbody tr', (rows) => rows.map((r) => Array.from(r.cells, (c) => c.textContent))),
    layerColumn: await page.$$eval('#files tbody tr.file', (rows) => rows.map((r) => [r.dataset.path, r.cells[2].textContent])),
  };
  await shot(page, 'stacked.png');
  // A model page in the dark colour scheme.
  await page.emulateMedia({ colorScheme: 'dark' });
  await page.goto(plan.base + plan.modelPage, { waitUntil: 'networkidle' });
  await shot(page, 'model-dark.png');
  await page.emulateMedia({ colorScheme: 'light' });
  // The same list on a phone-sized screen.
  await page.setViewportSize({ width: 420, height: 860 });
  await page.goto(plan.base + '/', { waitUntil: 'networkidle' });
  await shot(page, 'index-narrow.png');
} finally {
  await browser.close();
}
process.stdout.write(JSON.stringify(out, null, 1) + '\n');
