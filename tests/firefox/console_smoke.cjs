// Debian's Firefox opens the console as a person would: the client certificate from the
// profile's NSS store (chosen without asking), the fleet page, then a camera page with its
// live video. Driven over WebDriver BiDi by puppeteer-core (pinned by console/package-lock.json);
// tests/test_console_firefox.py runs it with NODE_PATH=console/node_modules.
//
//   node console_smoke.cjs ORIGIN PROFILE_DIR FIREFOX SCREENSHOT.png
const puppeteer = require("puppeteer-core");

async function main() {
  const [origin, profile, firefox, screenshot] = process.argv.slice(2);
  const browser = await puppeteer.launch({
    browser: "firefox",
    executablePath: firefox,
    headless: true,
    userDataDir: profile,
    acceptInsecureCerts: true, // the private CA is not in Firefox's store; the client cert is
    extraPrefsFirefox: {
      "security.default_personal_cert": "Select Automatically",
      "media.autoplay.default": 0,
      "media.autoplay.blocking_policy": 0,
      // The test's MediaMTX listens on 127.0.0.1, which Firefox leaves out of ICE unless told
      // (a camera on a network is never on loopback).
      "media.peerconnection.ice.loopback": true,
    },
  });
  try {
    const page = await browser.newPage();
    await page.setViewport({ width: 1280, height: 800 });
    const errors = [];
    page.on("pageerror", (err) => errors.push(String(err)));
    await page.goto(`${origin}/`);
    await page.waitForSelector('[data-camera="camera"] .badge', { timeout: 20000 });
    const badge = await page.$eval('[data-camera="camera"] .badge', (e) => e.textContent);
    // Every state the player reports, for the test's message when it is not the one expected.
    await page.evaluate(() => {
      window.videoStates = [];
      new MutationObserver(() => {
        const state = document.querySelector(".video-state");
        if (state && state.textContent !== window.videoStates.at(-1)) window.videoStates.push(state.textContent);
      }).observe(document.body, { subtree: true, childList: true, characterData: true });
    });
    await page.goto(`${origin}/#/camera/camera`);
    await page.waitForFunction(
      () => {
        const v = document.querySelector("video");
        return v && v.readyState >= 2 && v.videoWidth > 0;
      },
      { timeout: 30000, polling: 100 },
    );
    await page.waitForFunction(() => document.querySelector(".video-state").textContent.startsWith("live"), { timeout: 30000 });
    const video = await page.$eval(".video-state", (e) => e.textContent);
    const states = await page.evaluate(() => window.videoStates);
    const hlsjs = await page.evaluate(() =>
      performance.getEntries().some((e) => e.name.endsWith("/vendor/hls.light.min.js")),
    );
    const width = await page.$eval("video", (v) => v.videoWidth);
    const slider = await page.$eval("#control-brightness", (e) => ({ type: e.type, disabled: e.disabled }));
    await page.screenshot({ path: screenshot, fullPage: true });
    console.log(JSON.stringify({ badge, video, states, hlsjs, width, slider, errors }));
  } finally {
    await browser.close();
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
