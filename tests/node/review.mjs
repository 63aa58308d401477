// Drives the reviewer's web page in real Chromium (Debian's, through
// playwright-core) for ward's native test `coordinator::web`:
//
//   node review.mjs CONFIG.json
//
// { "page": "https://localhost:PORT", "request": "r-1",
//   "reviewer": "bob", "requester": "alice", "screenshots": "DIR" }
//
// The test and this script take turns: at each step the script prints
// `STEP name {json}` and waits for a line on stdin (`ok`, or `fail why`)
// before going on. It ends with `DONE`, or prints `FAIL why` and exits 1.
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { createInterface } from 'node:readline';
import { chromium } from 'playwright-core';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();

async function step(name, data = {}) {
  console.log(`STEP ${name} ${JSON.stringify(data)}`);
  const { value, done } = await lines.next();
  if (done || value.trim() !== 'ok') throw new Error(`the test refused step ${name}: ${value}`);
}

function check(ok, what) {
  if (!ok) throw new Error(what);
}

const shot = (page, name) => page.screenshot({ path: `${config.screenshots}/${name}.png`, fullPage: true });

// Signs `who` in through the provider's own login and consent forms.
async function signIn(page, who) {
  await page.goto(config.page + '/');
  await page.getByRole('link', { name: /Sign in with/ }).click();
  await page.waitForSelector('input[name=login]');
  await page.fill('input[name=login]', who);
  await page.fill('input[name=password]', 'any password');
  await page.click('button[type=submit]');
  // The consent prompt, the first time.
  for (let i = 0; i < 3 && !page.url().startsWith(config.page); i++) {
    await page.waitForLoadState('load');
    if (page.url().startsWith(config.page)) break;
    const button = page.locator('button[type=submit]');
    if (await button.count()) await button.first().click();
  }
  await page.waitForURL(config.page + '/pending');
}

let current = null; // the page in use, for the failure report

const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
try {
  // The coordinator's and the provider's certificates come from test CAs.
  const desk = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1280, height: 800 } });
  const page = await desk.newPage();
  current = page;
  await page.goto(config.page + '/');
  await shot(page, 'web-sign-in');
  await signIn(page, config.reviewer);
  const cookies = await desk.cookies(config.page);
  const session = cookies.find((c) => c.name === '__Host-ward-session');
  check(session && session.secure && session.httpOnly && session.sameSite === 'Lax',
    `the session cookie is Secure, HttpOnly, SameSite=Lax: ${JSON.stringify(session)}`);
  check(!page.url().includes('code='), 'the callback address (with the code) is left at once');

  // Pending: the requester's request is there.
  const row = page.locator('#pending tr', { hasText: config.request });
  await row.waitFor();
  check((await row.textContent()).includes(config.requester), 'the pending row names the requester');
  await shot(page, 'web-pending');

  // The request's details, then an approval with a comment, by keyboard.
  await page.click(`a[href="/requests/${config.request}"]`);
  await page.waitForSelector('#detail');
  const facts = await page.textContent('#detail');
  for (const want of ['Requester', config.requester, 'staff', 'Reason', 'INC-42', 'Decided by policies',
    'staff-connect', '0 of 2', 'Others who may approve']) {
    check(facts.includes(want), `the details show ${want}: ${facts}`);
  }
  await shot(page, 'web-request');
  await page.fill('#comment', 'checked with the on-call lead');
  let reached = false;
  for (let i = 0; i < 40 && !reached; i++) {
    await page.keyboard.press('Tab');
    reached = await page.evaluate(() => document.activeElement?.textContent === 'Approve');
  }
  check(reached, 'the Approve button is reachable with Tab');
  await Promise.all([page.waitForURL(/done=approved/), page.keyboard.press('Enter')]);
  check((await page.textContent('#detail')).includes('1 of 2'), 'one approval of two');
  check((await page.textContent('#detail')).includes('checked with the on-call lead'), 'the comment is shown');
  await step('approved-by-reviewer');

  // A second reviewer decides elsewhere (the test, with the CLI): this
  // open page shows it without a reload.
  await step('second-reviewer');
  await page.waitForFunction(
    () => document.querySelector('#detail .state')?.textContent === 'approved', null, { timeout: 15000 });
  check((await page.textContent('#detail')).includes('2 of 2'), 'two approvals, live');
  await step('live-seen');

  // Active access: revoke from the page.
  await page.goto(config.page + '/active');
  await page.locator('#active tr', { hasText: config.request }).waitFor();
  await shot(page, 'web-active');
  await page.click(`a[href="/requests/${config.request}"]`);
  await page.fill('#revoke-reason', 'done with the incident');
  await Promise.all([page.waitForURL(/done=revoked/), page.click('form.end button')]);
  check((await page.textContent('#detail .state')) === 'revoked', 'revoked');
  await step('revoked');

  // History, filtered by requester.
  await page.goto(config.page + `/audit?requester=${config.requester}&since=24h`);
  const audit = await page.textContent('#audit');
  for (const want of ['created', 'approval', 'approved', 'revoked']) {
    check(audit.includes(want), `the history shows ${want}: ${audit}`);
  }
  await shot(page, 'web-audit');

  // A phone: the same pages, readable without zooming.
  const phone = await browser.newContext({
    ignoreHTTPSErrors: true, viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true,
  });
  await phone.addCookies([session]);
  const small = await phone.newPage();
  await small.goto(config.page + `/requests/${config.request}`);
  const overflow = await small.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  check(overflow <= 0, `no sideways scrolling on a phone (${overflow}px too wide)`);
  await shot(small, 'web-phone-request');
  await small.goto(config.page + '/audit');
  await shot(small, 'web-phone-history');

  // A cross-site POST: a page on another origin submits a form to the
  // review address in the signed-in browser. It is refused.
  const evil = createServer((req, res) => {
    res.setHeader('content-type', 'text/html');
    res.end(`<form id=f method=post action="${config.page}/requests/${config.other}/review">
      <input name=decision value=approve><input name=comment value=pwned></form>
      <script>document.getElementById('f').submit()</script>`);
  });
  await new Promise((r) => evil.listen(0, '127.0.0.1', r));
  const crossSite = page.waitForResponse((r) => r.url().includes(`/requests/${config.other}/review`));
  await page.goto(`http://127.0.0.1:${evil.address().port}/`);
  const refused = await crossSite;
  check(refused.status() === 403, `the cross-site POST is refused (${refused.status()})`);
  evil.close();

  // The same with the session cookie itself but another Origin, or no
  // token: refused by the server, whatever the browser's cookie rules.
  const csrf = await (async () => {
    await page.goto(config.page + '/pending');
    return page.getAttribute('form.signout input[name=csrf]', 'value');
  })();
  const post = async (origin, token) => {
    const r = await page.request.post(`${config.page}/requests/${config.other}/review`, {
      headers: { origin, cookie: `__Host-ward-session=${session.value}` },
      form: { decision: 'approve', comment: 'forged', ...(token ? { csrf: token } : {}) },
      maxRedirects: 0,
    });
    return r.status();
  };
  check(await post('https://evil.example', csrf) === 403, 'another Origin is refused');
  check(await post(config.page, '') === 403, 'no CSRF token is refused');
  check(await post(config.page, csrf + 'x') === 403, 'a wrong CSRF token is refused');

  // The headers every page carries.
  const head = await page.request.get(config.page + '/pending');
  const csp = head.headers()['content-security-policy'] || '';
  check(csp.includes("default-src 'none'") && csp.includes("frame-ancestors 'none'"), `CSP: ${csp}`);
  check(head.headers()['x-content-type-options'] === 'nosniff', 'nosniff');
  check(head.headers()['referrer-policy'] === 'same-origin', 'no referrer to other sites');
  await step('cross-site-refused');

  // Signing out ends the session at the coordinator: the same cookie,
  // replayed afterwards (as a copy taken before would be), signs nobody in.
  await page.goto(config.page + '/pending');
  await page.getByRole('button', { name: /Sign out/ }).click();
  await page.waitForURL(config.page + '/');
  const replay = await page.request.get(config.page + '/pending', {
    headers: { cookie: `__Host-ward-session=${session.value}` }, maxRedirects: 0,
  });
  check(replay.status() === 303 && replay.headers()['location'] === '/',
    `the signed-out session's cookie is sent to sign in again (${replay.status()} ${replay.headers()['location']})`);
  // Signing out again with that dead session only clears the cookie.
  const again = await page.request.post(config.page + '/logout', {
    headers: { origin: config.page, cookie: `__Host-ward-session=${session.value}` },
    form: { csrf }, maxRedirects: 0,
  });
  check(again.status() === 303 && (again.headers()['set-cookie'] || '').includes('__Host-ward-session=;'),
    `a second sign-out clears the cookie (${again.status()} ${again.headers()['set-cookie']})`);
  await step('signed-out');
  console.log('DONE');
} catch (e) {
  const where = current ? ` (at ${current.url()}: ${(await current.textContent('body').catch(() => ''))?.slice(0, 400)})` : '';
  console.log(`FAIL ${(e.stack || String(e)).replace(/\n/g, ' | ')}${where}`.replace(/\n/g, ' '));
  process.exitCode = 1;
} finally {
  await browser.close();
  process.exit(process.exitCode ?? 0);
}
