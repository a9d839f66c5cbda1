// The live video: WebRTC through WHEP first, LL-HLS when WebRTC cannot connect. Both go through
// nginx on this origin (/media/PATH/...), which checks the person's certificate and adds the
// stream credentials; the page never sees a stream password.

const WEBRTC_FIRST_FRAME_MS = 5000;
// No new frame for this long while live: the session is dead even if nobody said so (MediaMTX
// restarted, the network moved); start a new one.
const STALL_MS = 4000;

export class LivePlayer {
  constructor(video, path, onState) {
    this.video = video;
    this.path = encodeURIComponent(path);
    this.onState = onState;
    this.pc = null;
    this.session = null;
    this.hls = null;
    this.closed = false;
    this.retry = null;
    this.mode = null;
    this.watchdog = null;
  }

  // Restarts the session when frames stop coming, whatever the transport reported.
  watch() {
    clearInterval(this.watchdog);
    let frames = -1;
    let since = performance.now();
    this.watchdog = setInterval(() => {
      const count = this.video.getVideoPlaybackQuality().totalVideoFrames;
      if (count !== frames) {
        frames = count;
        since = performance.now();
      } else if (performance.now() - since > STALL_MS && !this.retry) {
        this.onState("video stalled; reconnecting");
        this.scheduleRestart();
      }
    }, 500);
  }

  async start() {
    this.watch();
    try {
      await this.startWebRTC();
    } catch (err) {
      if (this.closed) return;
      this.onState(`WebRTC unavailable (${err.message}); trying HLS`);
      this.stopWebRTC();
      await this.startHLS();
    }
  }

  async startWebRTC() {
    this.mode = "webrtc";
    const pc = new RTCPeerConnection({ bundlePolicy: "max-bundle" });
    this.pc = pc;
    pc.addTransceiver("video", { direction: "recvonly" });
    pc.addTransceiver("audio", { direction: "recvonly" });
    pc.ontrack = (event) => {
      if (event.track.kind === "video") this.video.srcObject = event.streams[0];
    };
    pc.onconnectionstatechange = () => {
      if (this.closed || this.pc !== pc) return;
      if (pc.connectionState === "failed" || pc.connectionState === "disconnected") {
        this.onState("video connection lost; reconnecting");
        this.scheduleRestart();
      }
    };
    await pc.setLocalDescription(await pc.createOffer());
    await gathered(pc, 2000);
    const response = await fetch(`/media/${this.path}/whep`, {
      method: "POST",
      headers: { "Content-Type": "application/sdp" },
      body: pc.localDescription.sdp,
    });
    if (response.status !== 201) {
      // MediaMTX says why in JSON ({"status": "error", "error": "codecs not supported..."}).
      const text = (await response.text()).trim();
      let why = text.slice(0, 120);
      try {
        why = JSON.parse(text).error || why;
      } catch {
        // not JSON: nginx's own page (403, 502), shown as it is
      }
      throw new Error(`${response.status}: ${why}`);
    }
    this.session = response.headers.get("Location");
    await pc.setRemoteDescription({ type: "answer", sdp: await response.text() });
    await firstFrame(this.video, WEBRTC_FIRST_FRAME_MS);
    this.onState("live (WebRTC)");
  }

  stopWebRTC() {
    if (this.session) {
      fetch(this.session, { method: "DELETE" }).catch(() => {});
      this.session = null;
    }
    if (this.pc) {
      this.pc.close();
      this.pc = null;
    }
    this.video.srcObject = null;
  }

  async startHLS() {
    this.mode = "hls";
    const url = `/media/${this.path}/index.m3u8`;
    if (this.video.canPlayType("application/vnd.apple.mpegurl")) {
      this.video.src = url; // Safari, iOS: HLS in the element itself
    } else {
      await loadScript("/vendor/hls.light.min.js");
      const Hls = window.Hls;
      if (!Hls || !Hls.isSupported()) {
        this.onState("this browser can play neither WebRTC nor HLS");
        return;
      }
      this.hls = new Hls({ lowLatencyMode: true, liveSyncDurationCount: 1 });
      this.hls.on(Hls.Events.ERROR, (_event, data) => {
        if (data.fatal && !this.closed) {
          this.onState("video lost; reconnecting");
          this.scheduleRestart();
        }
      });
      this.hls.loadSource(url);
      this.hls.attachMedia(this.video);
    }
    try {
      await firstFrame(this.video, 15000);
      this.onState("live (HLS)");
    } catch {
      if (!this.closed) this.scheduleRestart();
    }
  }

  scheduleRestart() {
    if (this.retry || this.closed) return;
    this.retry = setTimeout(() => {
      this.retry = null;
      this.teardown();
      this.start();
    }, 1000);
  }

  teardown() {
    this.stopWebRTC();
    if (this.hls) {
      this.hls.destroy();
      this.hls = null;
    }
    this.video.removeAttribute("src");
  }

  close() {
    this.closed = true;
    clearTimeout(this.retry);
    clearInterval(this.watchdog);
    this.teardown();
  }
}

function gathered(pc, timeoutMs) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      if (pc.iceGatheringState === "complete") resolve();
    };
    pc.addEventListener("icegatheringstatechange", done);
    setTimeout(resolve, timeoutMs); // host candidates come at once; no STUN to wait for
  });
}

function firstFrame(video, timeoutMs) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("no picture")), timeoutMs);
    const ready = () => {
      clearTimeout(timer);
      resolve();
    };
    video.play().catch(() => {});
    if ("requestVideoFrameCallback" in video) video.requestVideoFrameCallback(ready);
    else video.addEventListener("loadeddata", ready, { once: true });
  });
}

const loaded = new Map();
function loadScript(src) {
  if (!loaded.has(src)) {
    loaded.set(src, new Promise((resolve, reject) => {
      const script = document.createElement("script");
      script.src = src;
      script.onload = resolve;
      script.onerror = () => reject(new Error(`cannot load ${src}`));
      document.head.append(script);
    }));
  }
  return loaded.get(src);
}
