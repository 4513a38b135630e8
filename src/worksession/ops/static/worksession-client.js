// worksession-client.js: the reference client for the worksession WebSocket protocol.
//
// One ES module, no dependencies, no build step; it uses only the standard `WebSocket`,
// `setTimeout` and `JSON`, so the same file runs in browsers and in React Native.
// Served by the service at /client/worksession-client.js; the wire contract it speaks is
// /asyncapi (the README's "For mobile developers" section says why it behaves as it does).
//
// What it does for an app:
//   - connects with a token (as `?token=`: browsers cannot set headers on a WebSocket);
//   - reconnects after a drop with exponential backoff and jitter, never after 1000
//     (the session ended), 4403 (wrong endpoint) or 4409 (replaced by a newer socket), and
//     after 4401 only with a new token from `getToken`;
//   - resumes from the last `seq` it applied, as its first frame after `connected`;
//   - delivers the session's events to `onEvent` in `seq` order, each exactly once
//     (duplicates dropped, frames ahead of a gap held until the gap is filled by a resume);
//   - answers the token's expiry with `auth_refresh` before `exp`, through `getToken`;
//   - matches replies to requests by `request_id`: `send(frame)` returns a promise.
//
// Usage:
//   import { WorksessionClient } from "/client/worksession-client.js";
//   const client = new WorksessionClient({
//     url: "wss://example.com/ws/work/seeker/",
//     getToken: async () => (await fetch("/my/token")).text(),
//     onEvent: (event) => render(event),
//   });
//   client.connect();
//   const ack = await client.send({ type: "chat_message", session_id, message: "Hi" });

/**
 * @typedef {"seeker" | "provider"} Role
 *
 * @typedef {object} SessionSnapshot
 * @property {string} session_id
 * @property {number} work_id
 * @property {"waiting" | "active"} connection_state
 * @property {Role} your_role
 * @property {string | null} chat_room_id
 * @property {Record<string, Record<string, string>>} mediums
 * @property {number | null} distance_meters
 * @property {string | null} distance_formatted
 * @property {number} last_seq
 * @property {boolean} peer_online
 *
 * Frames without `seq` (not part of a session's history):
 * @typedef {{type: "connected", user_type: Role, server_time: string, session: SessionSnapshot | null, pending_work: object[], open_orders: object[]}} Connected
 * @typedef {{type: "error", code: string, message: string, retry_after_ms?: number, request_id?: string, details?: object[]}} ErrorFrame
 * @typedef {{type: "pong", server_time: string, request_id?: string}} Pong
 * @typedef {{type: "resumed", session_id: string, last_seq: number, request_id?: string}} Resumed
 * @typedef {{type: "auth_refreshed", exp: string, request_id?: string}} AuthRefreshed
 * @typedef {{type: "work_request", work_id: number, details: object, seeker_location: {lat: number, lng: number} | null, created_at: string, expires_at: string}} WorkRequest
 * @typedef {{type: "work_unavailable" | "work_rejected" | "work_expired", work_id: number}} WorkGone
 * @typedef {{type: "work_declined" | "work_withdrawn", work_id: number, request_id?: string}} WorkClosed
 * @typedef {{type: "distance_update", session_id: string, distance_meters: number, distance_formatted: string, updated_at: string}} DistanceUpdate
 * @typedef {{type: "typing_indicator", session_id: string, sender_type: Role, is_typing: boolean}} TypingIndicator
 * @typedef {{type: "peer_presence", session_id: string, online: boolean}} PeerPresence
 *
 * The session's history, each with its `seq` (1, 2, 3, ... per session):
 * @typedef {{type: "work_accepted", work_id: number, session_id: string, connection_state: "waiting", seq: number, request_id?: string}} WorkAccepted
 * @typedef {{type: "mediums_selected" | "seeker_mediums_selected" | "mediums_shared" | "provider_mediums_shared", session_id: string, mediums: Record<string, string>, connection_state?: "active", seq: number, request_id?: string}} MediumsEvent
 * @typedef {{type: "provider_nearby" | "provider_arrived", session_id: string, distance_meters: number, seq: number}} ProximityEvent
 * @typedef {{type: "chat_ready", session_id: string, chat_room_id: string, seq?: number, request_id?: string}} ChatReady
 * @typedef {{type: "chat_message_ack", session_id: string, message_id: string, client_msg_id: string | null, status: "sent", sender_type: Role, message: string, created_at: string, seq: number, request_id?: string}} ChatMessageAck
 * @typedef {{type: "chat_message", session_id: string, message_id: string, sender_type: Role, message: string, created_at: string, seq: number}} ChatMessage
 * @typedef {{type: "message_status_update", session_id: string, message_id: string, status: "delivered" | "read", at: string, seq: number}} MessageStatusUpdate
 * @typedef {{type: "connection_cancelled", session_id: string, cancelled_by: Role | "system", seq: number, request_id?: string}} ConnectionCancelled
 * @typedef {{type: "session_completed", session_id: string, seq: number, request_id?: string}} SessionCompleted
 *
 * @typedef {Connected | ErrorFrame | Pong | Resumed | AuthRefreshed | WorkRequest | WorkGone | WorkClosed | DistanceUpdate | TypingIndicator | PeerPresence | WorkAccepted | MediumsEvent | ProximityEvent | ChatReady | ChatMessageAck | ChatMessage | MessageStatusUpdate | ConnectionCancelled | SessionCompleted} WorksessionEvent
 *
 * @typedef {"idle" | "connecting" | "open" | "waiting" | "closed"} ClientState
 *   waiting: between attempts (backoff); closed: for good (see `closeCode`).
 *
 * @typedef {object} ClientOptions
 * @property {string} url  The socket endpoint, e.g. "wss://host/ws/work/seeker/".
 * @property {string} [token]  The first token; without it `getToken` is asked.
 * @property {() => Promise<string> | string} [getToken]  A fresh token: before `exp`
 *   (sent as `auth_refresh`) and after a 4401 close. Without it the socket ends at `exp`.
 * @property {(event: WorksessionEvent) => void} [onEvent]  Every frame for the app: the
 *   session's events in `seq` order, exactly once; frames without `seq` as they come.
 * @property {(state: ClientState, detail: {code?: number, attempt?: number, delayMs?: number}) => void} [onState]
 * @property {(direction: "in" | "out" | "note", frame: object, note?: string) => void} [onFrame]
 *   Every raw frame in and out (tokens masked), for a debugging view; "note": what the
 *   ordering did with a frame that is not passed on (a duplicate, one held for a gap).
 * @property {(error: Error) => void} [onError]  What goes wrong out of the server's sight:
 *   a 4401 after which `getToken` handed out the refused token again (the client stops),
 *   `new WebSocket()` throwing (a failed attempt: the client backs off and tries again),
 *   an exception from `onEvent` (the next events are still delivered). Default:
 *   `console.error`.
 * @property {string} [sessionId]  A session the app already knows (persisted), and
 * @property {number} [lastSeq]  the highest seq of it the app applied.
 * @property {number} [backoffInitialMs]  First reconnect delay (default 500).
 * @property {number} [backoffMaxMs]  Longest reconnect delay (default 30000).
 * @property {number} [requestTimeoutMs]  How long `send` waits for its reply (default 10000).
 * @property {number} [refreshMarginMs]  Refresh this long before `exp` (default 60000, at
 *   most half the token's remaining life).
 * @property {typeof WebSocket} [WebSocket]  An implementation (default: the global one).
 */

// Closes after which reconnecting by itself would be wrong (README, "Close codes").
const FINAL_CLOSES = new Set([1000, 4403, 4409]);
const CLOSE_UNAUTHENTICATED = 4401;
// A close code of our own for `drop()`: 4000-4999 are for applications (RFC 6455 7.4.2).
const CLOSE_DROPPED = 4000;
// Frames the server never answers (receipts and fixes are fire-and-forget by contract).
const NO_REPLY = new Set(["location_update", "typing_indicator", "message_delivered", "message_read"]);
// A connection counts as a success (the backoff starts over) once its resume is answered
// or it stayed open this long: not at `connected`, which a failing server still sends.
const STABLE_AFTER_MS = 10000;
// Frames held ahead of a gap, at most: past that, drop them and resume from lastSeq.
const MAX_AHEAD = 1000;
// setTimeout reads its delay as a 32-bit signed integer: a longer one fires at once.
const MAX_TIMER_MS = 2 ** 31 - 1;

export class WorksessionClient {
  /** @param {ClientOptions} options */
  constructor(options) {
    this.options = options;
    this.url = options.url;
    this.token = options.token ?? null;
    this.WebSocketImpl = options.WebSocket ?? globalThis.WebSocket;
    /** @type {ClientState} */
    this.state = "idle";
    /** The code of the last close, and why the client stopped when it did. */
    this.closeCode = null;
    /** The session whose history this client is ordering, and the last seq applied. */
    this.sessionId = options.sessionId ?? null;
    this.lastSeq = options.lastSeq ?? 0;
    /** @type {Map<number, WorksessionEvent>} frames ahead of a gap, by seq */
    this.ahead = new Map();
    this.resumePending = false;
    /** @type {string | null} the token the server refused with 4401 */
    this.rejectedToken = null;
    /** @type {Map<string, {resolve: (f: any) => void, reject: (e: Error) => void, timer: any}>} */
    this.pending = new Map();
    this.attempt = 0;
    this.socket = null;
    this.stopped = false;
    /** Bumped by connect() and close(): an attempt from an older epoch opens nothing. */
    this.epoch = 0;
    this.reconnectTimer = null;
    this.refreshTimer = null;
    this.stableTimer = null;
    this.clockSkewMs = 0;
    this.nextId = 1;
    this.idPrefix = Math.random().toString(36).slice(2, 8);
  }

  /** Open the socket (and keep it open until `close()` or a final close code). */
  connect() {
    // Connecting, open or waiting to reconnect: there is a connection already.
    if (!this.stopped && this.state !== "idle") return;
    this.stopped = false;
    this.epoch += 1;
    this.attempt = 0;
    this.#open();
  }

  /** Close for good: code 1000, no reconnect. */
  close() {
    this.stopped = true;
    this.epoch += 1;
    this.#clearTimers();
    this.#failPending(new Error("client closed"));
    const socket = this.socket;
    // Its close event comes later and is ignored: this is the close that counts.
    this.socket = null;
    this.resumePending = false;
    if (socket) socket.close(1000, "client closed");
    this.#setState("closed", { code: 1000 });
  }

  /**
   * Drop the socket as a lost network would (the client reconnects and resumes), and stay
   * away at least `offlineMs`. For trying the recovery out, as the playground does.
   */
  drop(offlineMs = 0) {
    this.offlineUntil = Date.now() + offlineMs;
    if (this.socket) this.socket.close(CLOSE_DROPPED, "dropped");
  }

  /**
   * Send a frame. Frames that get an answer (an ack or an `error`) are given a
   * `request_id` (unless they carry one) and the promise resolves with that answer, an
   * `error` frame included: check `reply.type`. Fire-and-forget frames (`location_update`,
   * `typing_indicator`, receipts) resolve with `null` once written. A `chat_message`
   * without `client_msg_id` gets one, so that sending it again after a drop is safe.
   * Rejects if the socket is not open, closes before the answer, or no answer comes in
   * `requestTimeoutMs`.
   * @param {object & {type: string}} frame
   * @returns {Promise<WorksessionEvent | null>}
   */
  send(frame) {
    if (!this.socket || this.state !== "open") {
      return Promise.reject(new Error("not connected"));
    }
    const out = { ...frame };
    if (out.type === "chat_message" && out.client_msg_id == null) out.client_msg_id = this.#newId("m");
    if (NO_REPLY.has(out.type) && out.request_id == null) {
      this.#write(out);
      return Promise.resolve(null);
    }
    if (out.request_id == null) out.request_id = this.#newId("r");
    const requestId = out.request_id;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(requestId);
        reject(new Error(`no answer to ${out.type} within ${this.#option("requestTimeoutMs", 10000)} ms`));
      }, this.#option("requestTimeoutMs", 10000));
      this.pending.set(requestId, { resolve, reject, timer });
      this.#write(out);
    });
  }

  // --- the socket ------------------------------------------------------------------------

  async #open() {
    if (this.stopped) return;
    const epoch = this.epoch;
    this.#setState("connecting", { attempt: this.attempt });
    if (this.token == null && this.options.getToken) {
      let token;
      try {
        token = await this.options.getToken();
      } catch (error) {
        if (epoch === this.epoch && !this.stopped) this.#scheduleReconnect(undefined);
        return;
      }
      // close(), or close() and connect(), while getToken ran: that attempt is gone.
      if (epoch !== this.epoch || this.stopped) return;
      this.token = token;
    }
    if (this.stopped) return;
    if (this.token != null && this.token === this.rejectedToken) {
      // Reconnecting with it would only earn another 4401, forever.
      this.stopped = true;
      this.#setState("closed", { code: CLOSE_UNAUTHENTICATED });
      this.#reportError(new Error("getToken returned the token the server refused (4401): stopped"));
      return;
    }
    const separator = this.url.includes("?") ? "&" : "?";
    let socket;
    try {
      socket = new this.WebSocketImpl(`${this.url}${separator}token=${encodeURIComponent(this.token ?? "")}`);
    } catch (error) {
      // A malformed URL, a blocked port: an attempt that failed, not one still going.
      this.#reportError(asError(error));
      this.#scheduleReconnect(undefined);
      return;
    }
    this.socket = socket;
    socket.onmessage = (message) => {
      if (socket === this.socket) this.#receive(message.data);
    };
    socket.onclose = (close) => {
      if (socket === this.socket) this.#closed(close.code);
    };
    // Every error is followed by a close; the close decides what happens next.
    socket.onerror = () => {};
  }

  #closed(code) {
    this.socket = null;
    this.closeCode = code;
    this.resumePending = false;
    this.#clearTimers();
    this.#failPending(new Error(`connection closed (${code})`));
    if (this.stopped) return;
    if (FINAL_CLOSES.has(code)) {
      this.stopped = true;
      this.#setState("closed", { code });
      return;
    }
    if (code === CLOSE_UNAUTHENTICATED) {
      if (!this.options.getToken) {
        this.stopped = true;
        this.#setState("closed", { code });
        return;
      }
      // The token is spent: the next attempt asks for a new one.
      this.rejectedToken = this.token;
      this.token = null;
    }
    this.#scheduleReconnect(code);
  }

  #scheduleReconnect(code) {
    // Exponential backoff with "equal jitter": half the delay fixed, half random, so a
    // fleet of phones that lost the same server does not come back in one wave.
    const initial = this.#option("backoffInitialMs", 500);
    const ceiling = Math.min(this.#option("backoffMaxMs", 30000), initial * 2 ** this.attempt);
    let delayMs = ceiling / 2 + Math.random() * (ceiling / 2);
    if (this.offlineUntil) delayMs = Math.max(delayMs, this.offlineUntil - Date.now());
    this.attempt += 1;
    this.#setState("waiting", { code, attempt: this.attempt, delayMs: Math.round(delayMs) });
    this.reconnectTimer = setTimeout(() => this.#open(), delayMs);
  }

  #receive(data) {
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      return; // the server sends JSON only
    }
    this.#trace("in", frame);
    if (frame.type === "connected") {
      this.#onConnected(frame);
      return;
    }
    if (frame.request_id != null && this.pending.has(frame.request_id)) {
      const waiting = this.pending.get(frame.request_id);
      this.pending.delete(frame.request_id);
      clearTimeout(waiting.timer);
      waiting.resolve(frame);
    }
    // A resume that failed (the session's history expired) must not block the next one.
    if (frame.type === "resumed" || (frame.type === "error" && frame.request_id === this.resumeRequestId)) {
      this.resumePending = false;
    }
    if (frame.type === "resumed") {
      this.#connectionWorks();
      this.#resumedAt(frame);
    }
    if (frame.type === "auth_refreshed") this.#scheduleRefresh();
    if (typeof frame.seq === "number") {
      this.#ordered(frame);
    } else {
      this.#emit(frame);
    }
  }

  #onConnected(frame) {
    // A server that closes right after `connected` (1011, 1008) must still see the
    // backoff grow: the attempts count from zero again only once this one proves good.
    this.stableTimer = setTimeout(() => this.#connectionWorks(), STABLE_AFTER_MS);
    this.offlineUntil = 0;
    this.clockSkewMs = Date.parse(frame.server_time) - Date.now() || 0;
    const live = frame.session;
    if (live && live.session_id !== this.sessionId) {
      // A session this client has not seen (or a new one after the old ended): its
      // whole history is replayed from the start.
      this.#follow(live.session_id);
    }
    this.#setState("open", {});
    // The resume goes first: the server holds the session's live events until the first
    // frame (up to 2 s), so the replay comes before them and seq rises by exactly one.
    // A session that ended while we were away is resumed too, to read how it ended.
    if (this.sessionId) this.#requestResume();
    this.#scheduleRefresh();
    this.#emit(frame);
  }

  #connectionWorks() {
    clearTimeout(this.stableTimer);
    this.attempt = 0;
  }

  #follow(sessionId) {
    this.sessionId = sessionId;
    this.lastSeq = 0;
    this.ahead.clear();
  }

  #requestResume() {
    if (this.resumePending) return;
    this.resumePending = true;
    this.resumeRequestId = this.#newId("resume");
    this.#write({ type: "resume", session_id: this.sessionId, last_seq: this.lastSeq, request_id: this.resumeRequestId });
  }

  /**
   * `resumed.last_seq` is the end of the server's log. Below ours (restored from a backup,
   * failed over, or a persisted lastSeq that was wrong), the server numbers its next events
   * from there: without lowering lastSeq they would all be dropped as duplicates. What is
   * held ahead is beyond that log's end, so none of it will ever be filled: dropped.
   * @param {Resumed} frame
   */
  #resumedAt(frame) {
    if (frame.session_id !== this.sessionId || typeof frame.last_seq !== "number") return;
    if (frame.last_seq >= this.lastSeq) return;
    this.#trace("note", frame, `the server's log ends at seq ${frame.last_seq}, below ${this.lastSeq}: going on from there`);
    this.lastSeq = frame.last_seq;
    this.ahead.clear();
  }

  #ordered(frame) {
    if (frame.session_id && frame.session_id !== this.sessionId) {
      if (frame.type !== "work_accepted") return; // history of a session we left behind
      this.#follow(frame.session_id);
    }
    if (frame.seq <= this.lastSeq || this.ahead.has(frame.seq)) {
      this.#trace("note", frame, "duplicate, dropped");
      return;
    }
    if (frame.seq > this.lastSeq + 1) {
      if (this.ahead.size >= MAX_AHEAD) {
        // Too much past a gap to hold: drop it all and have a resume bring it again.
        this.ahead.clear();
        this.#trace("note", frame, `dropped with ${MAX_AHEAD} held frames: resuming from seq ${this.lastSeq}`);
        this.resumePending = false;
        this.#requestResume();
        return;
      }
      this.ahead.set(frame.seq, frame);
      this.#trace("note", frame, `held: waiting for seq ${this.lastSeq + 1}`);
      this.#requestResume();
      return;
    }
    this.#apply(frame);
    while (this.ahead.has(this.lastSeq + 1)) {
      const next = this.ahead.get(this.lastSeq + 1);
      this.ahead.delete(this.lastSeq + 1);
      this.#apply(next);
    }
  }

  #apply(frame) {
    this.lastSeq = frame.seq;
    this.#emit(frame);
  }

  // --- tokens ----------------------------------------------------------------------------

  #scheduleRefresh() {
    clearTimeout(this.refreshTimer);
    if (!this.options.getToken || !this.token) return;
    const exp = tokenExpiry(this.token);
    if (exp == null) return;
    const remaining = exp - (Date.now() + this.clockSkewMs);
    const margin = Math.min(this.#option("refreshMarginMs", 60000), remaining / 2);
    const delayMs = Math.max(0, remaining - margin);
    if (delayMs > MAX_TIMER_MS) {
      // A token that lives longer than ~24.8 days: wait as long as a timer can, then
      // look again (rather than refresh at once, and again, and again).
      this.refreshTimer = setTimeout(() => this.#scheduleRefresh(), MAX_TIMER_MS);
      return;
    }
    this.refreshTimer = setTimeout(() => this.#refresh(), delayMs);
  }

  async #refresh() {
    let token;
    try {
      token = await this.options.getToken();
    } catch {
      // Closed meanwhile: nothing to retry. Dropped: `connected` schedules the next one.
      if (this.stopped || this.state !== "open") return;
      this.refreshTimer = setTimeout(() => this.#refresh(), 5000);
      return;
    }
    // A token that arrives while the socket is down is the one the next connect uses.
    this.token = token;
    if (this.state !== "open") return;
    // auth_refreshed reschedules the next refresh; an error leaves the socket to close
    // with 4401 at exp, after which a new token is asked for anyway.
    this.send({ type: "auth_refresh", token }).catch(() => {});
  }

  // --- helpers ---------------------------------------------------------------------------

  #write(frame) {
    this.#trace("out", frame);
    this.socket.send(JSON.stringify(frame));
  }

  #emit(frame) {
    if (!this.options.onEvent) return;
    try {
      this.options.onEvent(frame);
    } catch (error) {
      // The app's bug must not stop the drain: the events after this one still come.
      this.#reportError(asError(error));
    }
  }

  /** @param {Error} error */
  #reportError(error) {
    try {
      if (this.options.onError) this.options.onError(error);
      else console.error(error);
    } catch (failure) {
      console.error(failure);
    }
  }

  #trace(direction, frame, note) {
    if (!this.options.onFrame) return;
    // A token is a password for its lifetime: never hand it to a log.
    const shown = typeof frame.token === "string" ? { ...frame, token: "***" } : frame;
    this.options.onFrame(direction, shown, note);
  }

  #setState(state, detail) {
    this.state = state;
    if (this.options.onState) this.options.onState(state, detail);
  }

  #option(name, fallback) {
    return this.options[name] ?? fallback;
  }

  #newId(prefix) {
    return `${prefix}-${this.idPrefix}-${this.nextId++}`;
  }

  #clearTimers() {
    clearTimeout(this.reconnectTimer);
    clearTimeout(this.refreshTimer);
    clearTimeout(this.stableTimer);
  }

  #failPending(error) {
    for (const { reject, timer } of this.pending.values()) {
      clearTimeout(timer);
      reject(error);
    }
    this.pending.clear();
  }
}

/**
 * @param {unknown} error
 * @returns {Error}
 */
function asError(error) {
  return error instanceof Error ? error : new Error(String(error));
}

/**
 * The `exp` of a JWT in milliseconds, read without verifying it (the server verifies; the
 * client only needs to know when to refresh). Null if the token has none.
 * @param {string} token
 * @returns {number | null}
 */
export function tokenExpiry(token) {
  try {
    const payload = JSON.parse(base64UrlDecode(token.split(".")[1]));
    return typeof payload.exp === "number" ? payload.exp * 1000 : null;
  } catch {
    return null;
  }
}

const ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

// React Native before 0.74 has no atob: decode base64url by hand (the payload is ASCII JSON).
function base64UrlDecode(text) {
  let bits = 0;
  let value = 0;
  let out = "";
  for (const char of text.replace(/=+$/, "")) {
    const index = ALPHABET.indexOf(char === "+" ? "-" : char === "/" ? "_" : char);
    if (index < 0) throw new Error("not base64url");
    value = (value << 6) | index;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += String.fromCharCode((value >> bits) & 0xff);
    }
  }
  return decodeURIComponent(escape(out));
}
