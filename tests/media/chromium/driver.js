#!/usr/bin/env node
// Drives a Talk call in headless Chromium for tests/it/browser.rs: one page publishes camera
// and microphone (fake devices) with simulcast, one page subscribes with requestoffer; the
// driver switches the subscriber's simulcast layer with selectStream and reports what
// getStats showed after each step. It asserts nothing: it waits (bounded) for each expected
// state and prints one JSON line with the observations, which the Rust test checks.
//
//   node driver.js '<json config>'
//   config: {ws, backend, room, simulcast: "rid" | "sim", width, height,
//            legacyLayerLimit (Chromium's limit on legacy simulcast layers stays on; only
//            the first state is observed),
//            iceTcp (use only the SFU's TCP candidates), temporal (measure the frame rate
//            at temporal layer 0 and 2 after the layer switches), mute (instead of the
//            layer switches: audio packets the subscriber gets and the publisher sends
//            with the publisher's microphone on, muted, and on again),
//            publisher: {user, ticket}, subscriber: {user, ticket}}
//
// Protocol on stdout: {"ready": {"publisher": ID, "subscriber": ID}} once both pages have
// joined the room; then the driver waits for a line on stdin (the test puts everybody in the
// call through the backend API meanwhile) and finally prints {"result": {...}}.
//
// The page is served by this process on 127.0.0.1; Chromium (Debian's, by executablePath)
// starts with a fresh temporary profile and the flags that keep it off the network.
'use strict';

const fs = require('fs');
const http = require('http');
const path = require('path');
const readline = require('readline');
const { chromium } = require('playwright-core');

const config = JSON.parse(process.argv[2]);
const here = __dirname;

const CHROMIUM_FLAGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--use-fake-device-for-media-stream',
  '--use-fake-ui-for-media-stream',
  '--allow-loopback-in-peer-connection',
  '--disable-features=WebRtcHideLocalIpsWithMdns',
];
// Chromium sends fewer legacy (SIM-munged) simulcast layers than announced below 960x540
// (two at 640x360, dropping the lowest). The test's small frames keep the CPU cost low, so
// it lifts that limit unless the config asks for Chromium's default (`legacyLayerLimit`).
if (!config.legacyLayerLimit) {
  CHROMIUM_FLAGS.push('--force-fieldtrials=WebRTC-LegacySimulcastLayerLimit/Disabled/');
}

function emit(obj) {
  process.stdout.write(`${JSON.stringify(obj)}\n`);
}

function serve() {
  const files = { '/talk.html': 'text/html', '/talk.js': 'text/javascript' };
  const server = http.createServer((req, res) => {
    const type = files[req.url];
    if (!type) {
      res.writeHead(404);
      res.end();
      return;
    }
    res.writeHead(200, { 'content-type': type, 'cache-control': 'no-store' });
    res.end(fs.readFileSync(path.join(here, req.url)));
  });
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => resolve(server));
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Polls `page`'s stats every 200 ms until `pred(stats)` or `ms` pass; returns the last stats
// and whether the predicate held.
async function waitStats(page, pred, ms, timeline) {
  const deadline = Date.now() + ms;
  let s = null;
  for (;;) {
    s = await page.evaluate(() => window.talk.stats());
    if (timeline && s.video) {
      const v = s.video;
      timeline.push([ms - (deadline - Date.now()), v.frameWidth, v.framesDecoded, v.keyFramesDecoded, v.pliCount, v.rtpTimestamp, v.rtpAt]);
    }
    if (pred(s)) {
      return { met: true, stats: s, waitedMs: ms - (deadline - Date.now()) };
    }
    if (Date.now() > deadline) {
      return { met: false, stats: s, waitedMs: ms };
    }
    await sleep(200);
  }
}

const decoded = (s) => (s.video ? s.video.framesDecoded : 0);
const width = (s) => (s.video ? s.video.frameWidth : 0);

// Selects `substream` and waits until the decoded width satisfies `fits`, then until 15 more
// frames have been decoded at that width (the stream keeps flowing after the switch).
async function switchLayer(sub, substream, fits) {
  await sub.evaluate((n) => window.talk.selectStream(n, 2), substream);
  // [ms since selectStream, frameWidth, framesDecoded, keyFramesDecoded, pliCount,
  //  rtpTimestamp and arrival time (ms) of the last packet] per poll
  const timeline = [];
  const switched = await waitStats(sub, (s) => fits(width(s)), 10000, timeline);
  const after = decoded(switched.stats);
  const flowing = await waitStats(sub, (s) => fits(width(s)) && decoded(s) >= after + 15, 8000);
  return {
    substream,
    switched: switched.met,
    switchWaitMs: switched.waitedMs,
    frameWidth: width(switched.stats),
    frameHeight: switched.stats.video ? switched.stats.video.frameHeight : 0,
    framesAfterSwitch: decoded(flowing.stats) - after,
    widthAfterFlow: width(flowing.stats),
    timeline,
    video: flowing.stats.video || null,
  };
}

// Frames decoded per second over `ms`.
async function fps(sub, ms) {
  const a = decoded(await sub.evaluate(() => window.talk.stats()));
  const t = Date.now();
  await sleep(ms);
  const b = decoded(await sub.evaluate(() => window.talk.stats()));
  return ((b - a) * 1000) / (Date.now() - t);
}

// selectStream's temporal layer on the top substream: the decoded frame rate with only the
// base temporal layer, then with all three again.
async function temporalStep(sub) {
  await sub.evaluate(() => window.talk.selectStream(2, 0));
  await sleep(1500);
  const base = await fps(sub, 2500);
  await sub.evaluate(() => window.talk.selectStream(2, 2));
  await sleep(1500);
  const all = await fps(sub, 2500);
  return { base, all };
}

// Audio packets the subscriber receives (on, muted, onAgain) and the publisher sends
// (sentOn, ...) per 2 s with the publisher's microphone on, then muted as Talk mutes it,
// then on again (each after a second to settle).
async function muteStep(pub, sub) {
  const counts = async () => {
    const [p, s] = await Promise.all([
      pub.evaluate(() => window.talk.stats()),
      sub.evaluate(() => window.talk.stats()),
    ]);
    return {
      sent: p.audioOut ? p.audioOut.packetsSent : 0,
      received: s.audio ? s.audio.packetsReceived : 0,
    };
  };
  const over2s = async () => {
    await sleep(1000);
    const a = await counts();
    await sleep(2000);
    const b = await counts();
    return { sent: b.sent - a.sent, received: b.received - a.received };
  };
  const on = await over2s();
  await pub.evaluate(() => window.talk.muteAudio(true));
  const muted = await over2s();
  await pub.evaluate(() => window.talk.muteAudio(false));
  const onAgain = await over2s();
  return {
    on: on.received,
    muted: muted.received,
    onAgain: onAgain.received,
    sentOn: on.sent,
    sentMuted: muted.sent,
    sentOnAgain: onAgain.sent,
  };
}

async function main() {
  const server = await serve();
  const base = `http://127.0.0.1:${server.address().port}`;
  const browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    headless: true,
    args: CHROMIUM_FLAGS,
  });
  const result = { simulcast: config.simulcast };
  const pages = {};
  const consoleLines = [];
  try {
    for (const role of ['publisher', 'subscriber']) {
      const ctx = await browser.newContext();
      const page = await ctx.newPage();
      page.on('console', (m) => consoleLines.push(`${role}: ${m.text()}`));
      page.on('pageerror', (e) => consoleLines.push(`${role} pageerror: ${e}`));
      await page.goto(`${base}/talk.html`);
      pages[role] = page;
    }
    const ids = {};
    for (const role of ['publisher', 'subscriber']) {
      const who = config[role];
      const joined = await pages[role].evaluate(
        (c) => window.talk.connect(c),
        {
          ws: config.ws,
          backend: config.backend,
          user: who.user,
          ticket: who.ticket,
          room: config.room,
          iceTcp: !!config.iceTcp,
        },
      );
      ids[role] = joined.sessionid;
      result[`${role}Features`] = joined.features;
    }
    result.userAgent = await pages.publisher.evaluate(() => navigator.userAgent);
    emit({ ready: ids });

    // The test puts both sessions in the call, then tells us to go on.
    const rl = readline.createInterface({ input: process.stdin });
    await new Promise((resolve) => rl.once('line', resolve));
    rl.close();

    const pub = pages.publisher;
    const sub = pages.subscriber;
    await withTimeout(
      pub.evaluate((o) => window.talk.publish(o), {
        simulcast: config.simulcast,
        width: config.width,
        height: config.height,
      }),
      15000,
      'the publisher got no answer',
    );
    await withTimeout(
      sub.evaluate((p) => window.talk.subscribe(p), ids.publisher),
      30000,
      'the subscriber got no offer',
    );

    // Connected, and 30 frames decoded of the layer forwarded by default: the highest one
    // being sent. Chromium may start its top layer seconds after the others (as its
    // bandwidth estimate grows); the SFU starts the viewer on the best layer sent so far and
    // switches up once the top one arrives, so this waits for the capture width too.
    const initial = await waitStats(
      sub,
      (s) => s.connection === 'connected' && decoded(s) >= 30 && width(s) >= config.width,
      20000,
    );
    result.initial = { met: initial.met, ...initial.stats };
    // With Chromium's legacy layer limit it sends two of the three layers: only the first
    // state is observed (the steps below would wait for layers that never come).
    if (config.legacyLayerLimit) {
      result.subscriber = await sub.evaluate(() => window.talk.stats());
      return finish(result, pages, consoleLines, browser, server);
    }
    // The publisher sends all three layers once its bandwidth estimate allows.
    const layers = await waitStats(
      pub,
      (s) => s.outbound.length === 3 && s.outbound.every((o) => o.framesEncoded > 0),
      10000,
    );
    result.publisher = layers.stats;
    const top = width(initial.stats);
    if (initial.met && config.mute) {
      result.mute = await muteStep(pub, sub);
    } else if (initial.met) {
      result.low = await switchLayer(sub, 0, (w) => w > 0 && w <= top * 0.3);
      result.medium = await switchLayer(sub, 1, (w) => w >= top * 0.4 && w <= top * 0.6);
      result.high = await switchLayer(sub, 2, (w) => w >= top * 0.9);
      if (config.temporal) {
        result.temporal = await temporalStep(sub);
      }
    }
    const dc = await waitStats(
      sub,
      (s) => s.received > 0 && s.channels.includes('JanusDataChannel'),
      5000,
    );
    result.datachannel = {
      channels: dc.stats.channels,
      received: dc.stats.received,
      lastReceived: dc.stats.lastReceived,
      publisherSent: (await pub.evaluate(() => window.talk.stats())).sentMessages,
    };
    result.subscriber = await sub.evaluate(() => window.talk.stats());
  } catch (e) {
    result.failure = String(e && e.stack ? e.stack : e);
  }
  return finish(result, pages, consoleLines, browser, server);
}

// Adds the pages' debug output to `result`, prints it and closes everything.
async function finish(result, pages, consoleLines, browser, server) {
  try {
    result.debug = {};
    for (const [role, page] of Object.entries(pages)) {
      result.debug[role] = await page.evaluate(() => window.talk.debug());
    }
    result.debug.console = consoleLines.slice(-40);
  } catch (e) {
    result.debugFailure = String(e);
  }
  emit({ result });
  await browser.close();
  server.close();
}

function withTimeout(promise, ms, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what} within ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

main().catch((e) => {
  emit({ result: { failure: String(e && e.stack ? e.stack : e) } });
  process.exit(1);
});
