// The playground: a seeker and a provider in one page, each on its own reference client.
// Everything the panes show comes from the frames their clients deliver, so the page is
// also a worked example of using worksession-client.js.
import { WorksessionClient } from "/client/worksession-client.js";

const params = new URLSearchParams(location.search);
// ?ttl=20 gives short-lived tokens, to watch auth_refresh keep the sockets open.
const TOKEN_TTL_S = Number(params.get("ttl")) || 900;
const WS_BASE = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}`;
const MAX_FRAME_ROWS = 500;
const TICKS = { sending: "\u{1F552}", sent: "\u2713", delivered: "\u2713\u2713", read: "\u2713\u2713" };
const STATUS_RANK = { sending: 0, sent: 1, delivered: 2, read: 3 };

// --- the map: 360 px square, 2.5 m per px, centred on Bengaluru -------------------------
const METRES_PER_PX = 2.5;
const ORIGIN = { lat: 12.9716, lng: 77.5946 };
const M_PER_DEG_LAT = 111320;
const M_PER_DEG_LNG = M_PER_DEG_LAT * Math.cos((ORIGIN.lat * Math.PI) / 180);
const positions = { seeker: { x: 110, y: 200 }, provider: { x: 300, y: 70 } };

function toLatLng({ x, y }) {
  return {
    lat: ORIGIN.lat + ((180 - y) * METRES_PER_PX) / M_PER_DEG_LAT,
    lng: ORIGIN.lng + ((x - 180) * METRES_PER_PX) / M_PER_DEG_LNG,
  };
}

const panes = {};
window.playground = { panes, positions };

function $(root, selector) {
  return root.querySelector(selector);
}

async function post(path, body) {
  const response = await fetch(path, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  const answer = await response.json();
  if (!response.ok) throw new Error(`${path}: ${response.status} ${JSON.stringify(answer)}`);
  return answer;
}

class Pane {
  constructor(role, userId) {
    this.role = role;
    this.peer = role === "seeker" ? "provider" : "seeker";
    this.userId = userId;
    this.sessionId = null;
    this.ended = false;
    /** chat messages by client_msg_id or message_id: {li, status} */
    this.messages = new Map();
    this.lastTypingSent = 0;
    const slot = document.getElementById(`${role}-pane`);
    slot.replaceChildren(document.getElementById("pane-template").content.cloneNode(true));
    this.el = slot.querySelector(".pane");
    this.el.dataset.role = role;
    $(this.el, ".who").textContent = role === "seeker" ? "Seeker" : "Provider";
    $(this.el, ".user-id").textContent = userId;
    $(this.el, ".share-mediums").textContent = role === "seeker" ? "Select mediums" : "Share mediums";
    if (role === "seeker") $(this.el, ".complete").remove();
    this.#wire();
    this.client = new WorksessionClient({
      url: `${WS_BASE}/ws/work/${role}/`,
      getToken: async () => (await post("/playground/api/tokens", { user_id: userId, role, ttl_s: TOKEN_TTL_S })).token,
      onEvent: (event) => this.onEvent(event),
      onFrame: (direction, frame, note) => this.logFrame(direction, frame, note),
      onState: (state, detail) => this.onState(state, detail),
    });
  }

  #wire() {
    $(this.el, ".chat-form").addEventListener("submit", (event) => {
      event.preventDefault();
      this.sendChat();
    });
    $(this.el, ".chat-input").addEventListener("input", () => this.typing());
    $(this.el, ".share-mediums").addEventListener("click", () => this.shareMediums());
    $(this.el, ".drop").addEventListener("click", () => this.client.drop(3000));
    $(this.el, ".cancel").addEventListener("click", () =>
      this.request({ type: "cancel_connection", session_id: this.sessionId }));
    const complete = $(this.el, ".complete");
    if (complete) complete.addEventListener("click", () =>
      this.request({ type: "complete_session", session_id: this.sessionId }));
  }

  async request(frame) {
    try {
      const reply = await this.client.send(frame);
      if (reply && reply.type === "error") this.showError(reply);
      return reply;
    } catch (error) {
      $(this.el, ".last-error").textContent = error.message;
      return null;
    }
  }

  showError(frame) {
    $(this.el, ".last-error").textContent = `${frame.code}: ${frame.message}`;
  }

  // --- what the client delivers ----------------------------------------------------------

  onEvent(event) {
    if (typeof event.seq === "number") $(this.el, ".seq").textContent = String(event.seq);
    const handler = this[`on_${event.type}`];
    if (handler) handler.call(this, event);
  }

  on_connected(event) {
    for (const offer of event.pending_work) this.on_work_request(offer);
    const live = event.session;
    if (!live) return;
    this.setSession(live.session_id, live.connection_state);
    this.setPresence(live.peer_online);
    if (live.distance_formatted) this.showDistance(live.distance_formatted);
  }

  on_error(event) {
    this.showError(event);
  }

  on_work_request(offer) {
    const offers = $(this.el, ".offers");
    if (offers.querySelector(`[data-work-id="${offer.work_id}"]`)) return;
    const card = document.createElement("div");
    card.className = "offer";
    card.dataset.workId = String(offer.work_id);
    card.textContent = `Work ${offer.work_id}: ${offer.details.task ?? JSON.stringify(offer.details)}`;
    for (const [label, accepted] of [["Accept", true], ["Decline", false]]) {
      const button = document.createElement("button");
      button.type = "button";
      button.className = accepted ? "accept" : "decline";
      button.textContent = label;
      button.addEventListener("click", () =>
        this.request({ type: "work_response", work_id: offer.work_id, accepted }));
      card.append(button);
    }
    offers.append(card);
  }

  dropOffer(event, note) {
    const card = $(this.el, `.offers [data-work-id="${event.work_id}"]`);
    if (card) card.remove();
    if (note) $(this.el, ".session-state").textContent = note;
  }

  on_work_unavailable(event) { this.dropOffer(event, `work ${event.work_id} is no longer available`); }
  on_work_declined(event) { this.dropOffer(event, `declined work ${event.work_id}`); }
  on_work_rejected(event) { this.dropOffer(event, `work ${event.work_id} was declined`); }
  on_work_expired(event) { this.dropOffer(event, `work ${event.work_id} expired`); }
  on_work_withdrawn(event) { this.dropOffer(event, `work ${event.work_id} withdrawn`); }

  on_work_accepted(event) {
    this.dropOffer(event);
    this.setSession(event.session_id, event.connection_state);
    // A new session counts its peer as online (the contract); peer_presence says when not.
    this.setPresence(true);
    // Both sides report where they are as soon as there is a session.
    this.sendLocation();
  }

  on_mediums_selected(event) { this.setSession(event.session_id, event.connection_state); this.showOwnMediums(event); }
  on_mediums_shared(event) { this.showOwnMediums(event); }
  on_seeker_mediums_selected(event) { this.showPeerMediums(event); this.setSession(event.session_id, "active"); }
  on_provider_mediums_shared(event) { this.showPeerMediums(event); }

  on_distance_update(event) { this.showDistance(event.distance_formatted); }

  on_provider_nearby(event) {
    $(this.el, ".proximity").textContent = `Provider nearby (${Math.round(event.distance_meters)} m)`;
  }

  on_provider_arrived(event) {
    $(this.el, ".proximity").textContent = `Provider arrived (${Math.round(event.distance_meters)} m)`;
  }

  on_chat_ready() {
    $(this.el, ".session-state").dataset.chat = "ready";
  }

  on_chat_message_ack(event) {
    const key = event.client_msg_id ?? event.message_id;
    const known = this.messages.get(key);
    const entry = known ?? this.addMessage(key, event.message, "mine");
    this.messages.set(event.message_id, entry);
    this.setStatus(entry, "sent");
    entry.li.dataset.messageId = event.message_id;
  }

  on_chat_message(event) {
    if (!this.messages.has(event.message_id)) {
      this.messages.set(event.message_id, this.addMessage(event.message_id, event.message, "theirs"));
    }
    // This pane is always on screen: the message is delivered and read at once.
    this.client.send({ type: "message_read", message_id: event.message_id }).catch(() => {});
  }

  on_message_status_update(event) {
    const entry = this.messages.get(event.message_id);
    if (entry && entry.li.classList.contains("mine")) this.setStatus(entry, event.status);
  }

  on_typing_indicator(event) {
    $(this.el, ".typing").textContent = event.is_typing
      ? `${event.sender_type === "seeker" ? "Seeker" : "Provider"} is typing\u2026` : "";
  }

  on_peer_presence(event) { this.setPresence(event.online); }

  on_connection_cancelled(event) { this.end(`cancelled by ${event.cancelled_by}`); }
  on_session_completed() { this.end("completed"); }

  // --- showing it -------------------------------------------------------------------------

  setSession(sessionId, state) {
    this.sessionId = sessionId;
    const label = $(this.el, ".session-state");
    label.textContent = `session ${sessionId.slice(0, 8)}\u2026 ${state}`;
    label.dataset.state = state;
    this.enable(true);
  }

  end(how) {
    this.ended = true;
    const label = $(this.el, ".session-state");
    label.textContent = `session ${how}`;
    label.dataset.state = "ended";
    this.enable(false);
  }

  enable(on) {
    const live = on && !this.ended && this.client.state === "open";
    for (const selector of [".chat-input", ".chat-send", ".share-mediums", ".cancel", ".complete"]) {
      const element = $(this.el, selector);
      if (element) element.disabled = !live || !this.sessionId;
    }
    $(this.el, ".drop").disabled = this.ended || this.client.state === "closed";
  }

  setPresence(online) {
    const badge = $(this.el, ".presence");
    badge.dataset.online = String(online);
    badge.textContent = `${this.peer} ${online ? "online" : "offline"}`;
  }

  showDistance(text) {
    $(this.el, ".distance").textContent = text;
    document.getElementById("map-distance").textContent = `Server says: ${text}`;
  }

  showOwnMediums(event) {
    $(this.el, ".peer-mediums").dataset.own = JSON.stringify(event.mediums);
  }

  showPeerMediums(event) {
    const shown = Object.entries(event.mediums).map(([medium, number]) => `${medium} ${number}`).join(", ");
    $(this.el, ".peer-mediums").textContent = `${this.peer === "seeker" ? "Seeker" : "Provider"}'s mediums: ${shown || "none"}`;
  }

  addMessage(key, text, side) {
    const li = document.createElement("li");
    li.className = `msg ${side}`;
    li.append(document.createTextNode(text));
    const entry = { li, status: side === "mine" ? "sending" : "received" };
    if (side === "mine") {
      const ticks = document.createElement("span");
      ticks.className = "ticks";
      li.append(ticks);
      li.dataset.status = "sending";
      ticks.textContent = TICKS.sending;
    }
    const log = $(this.el, ".chat-log");
    log.append(li);
    log.scrollTop = log.scrollHeight;
    this.messages.set(key, entry);
    return entry;
  }

  setStatus(entry, status) {
    // Status never moves back (a replayed ack must not undo a read).
    if ((STATUS_RANK[status] ?? 0) <= (STATUS_RANK[entry.status] ?? -1)) return;
    entry.status = status;
    entry.li.dataset.status = status;
    entry.li.querySelector(".ticks").textContent = TICKS[status];
  }

  onState(state, detail) {
    const badge = $(this.el, ".conn");
    badge.dataset.state = state;
    const extra = state === "waiting" ? ` (retry in ${(detail.delayMs / 1000).toFixed(1)} s)`
      : state === "closed" ? ` (${detail.code})` : "";
    badge.textContent = state + extra;
    if (state !== "open") {
      const code = detail.code != null ? `, close ${detail.code}` : "";
      this.logFrame("note", { type: `${state}${code}` });
    }
    this.enable(Boolean(this.sessionId));
  }

  logFrame(direction, frame, note) {
    const row = document.createElement("tr");
    row.dataset.dir = direction;
    if (typeof frame.seq === "number") row.dataset.seq = String(frame.seq);
    row.dataset.type = frame.type ?? "";
    const arrow = direction === "in" ? "\u2190" : direction === "out" ? "\u2192" : "\u00b7";
    const text = note ? `${note}` : direction === "note" ? "" : JSON.stringify(frame);
    for (const value of [arrow, frame.seq ?? "", frame.type ?? "", text]) {
      const cell = document.createElement("td");
      cell.textContent = String(value);
      row.append(cell);
    }
    row.lastChild.title = text;
    const body = $(this.el, ".frames tbody");
    body.append(row);
    while (body.rows.length > MAX_FRAME_ROWS) body.deleteRow(0);
    body.scrollTop = body.scrollHeight;
  }

  // --- what the user does -----------------------------------------------------------------

  sendChat() {
    const input = $(this.el, ".chat-input");
    const text = input.value.trim();
    if (!text || !this.sessionId) return;
    input.value = "";
    const clientMsgId = `c-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 6)}`;
    this.addMessage(clientMsgId, text, "mine");
    this.client.send({ type: "typing_indicator", session_id: this.sessionId, is_typing: false }).catch(() => {});
    this.lastTypingSent = 0;
    this.request({ type: "chat_message", session_id: this.sessionId, message: text, client_msg_id: clientMsgId });
  }

  typing() {
    if (!this.sessionId || Date.now() - this.lastTypingSent < 3000) return;
    this.lastTypingSent = Date.now();
    this.client.send({ type: "typing_indicator", session_id: this.sessionId, is_typing: true }).catch(() => {});
  }

  shareMediums() {
    const number = $(this.el, ".number").value;
    const mediums = {};
    for (const box of this.el.querySelectorAll(".mediums input[type=checkbox]:checked")) mediums[box.value] = number;
    const type = this.role === "seeker" ? "medium_selection" : "medium_share";
    this.request({ type, session_id: this.sessionId, mediums });
  }

  sendLocation() {
    if (!this.sessionId || this.ended || this.client.state !== "open") return;
    const { lat, lng } = toLatLng(positions[this.role]);
    this.client.send({ type: "location_update", session_id: this.sessionId, lat, lng, accuracy: 5 }).catch(() => {});
  }
}

// --- the map's markers ----------------------------------------------------------------------

function drawMap() {
  for (const role of ["seeker", "provider"]) {
    const { x, y } = positions[role];
    document.getElementById(`marker-${role}`).setAttribute("transform", `translate(${x} ${y})`);
  }
  const line = document.getElementById("map-line");
  line.setAttribute("x1", positions.seeker.x);
  line.setAttribute("y1", positions.seeker.y);
  line.setAttribute("x2", positions.provider.x);
  line.setAttribute("y2", positions.provider.y);
  const ring = document.getElementById("arrival-ring");
  ring.setAttribute("cx", positions.seeker.x);
  ring.setAttribute("cy", positions.seeker.y);
}

function makeDraggable(svg) {
  for (const marker of svg.querySelectorAll(".marker")) {
    const role = marker.dataset.role;
    let lastSent = 0;
    const moveTo = (event) => {
      const point = svg.createSVGPoint();
      point.x = event.clientX;
      point.y = event.clientY;
      const local = point.matrixTransform(svg.getScreenCTM().inverse());
      positions[role] = { x: Math.min(350, Math.max(10, local.x)), y: Math.min(350, Math.max(10, local.y)) };
      drawMap();
    };
    marker.addEventListener("pointerdown", (event) => {
      marker.setPointerCapture(event.pointerId);
      marker.dataset.dragging = "true";
    });
    marker.addEventListener("pointermove", (event) => {
      if (marker.dataset.dragging !== "true") return;
      moveTo(event);
      // A fix every 400 ms while dragging: the distance follows the hand.
      if (Date.now() - lastSent > 400 && panes[role]) {
        lastSent = Date.now();
        panes[role].sendLocation();
      }
    });
    marker.addEventListener("pointerup", (event) => {
      moveTo(event);
      marker.dataset.dragging = "false";
      if (panes[role]) panes[role].sendLocation();
    });
  }
}

// --- setting up -----------------------------------------------------------------------------

async function setup() {
  const button = document.getElementById("setup");
  const status = document.getElementById("setup-status");
  button.disabled = true;
  for (const pane of Object.values(panes)) pane.client.close();
  const run = Math.random().toString(36).slice(2, 8);
  for (const role of ["seeker", "provider"]) {
    panes[role] = new Pane(role, `${role}-${run}`);
  }
  const opened = Object.values(panes).map((pane) => new Promise((resolve) => {
    const previous = pane.client.options.onState;
    pane.client.options.onState = (state, detail) => {
      previous(state, detail);
      if (state === "open") resolve();
    };
  }));
  for (const pane of Object.values(panes)) pane.client.connect();
  await Promise.all(opened);
  try {
    const order = await post("/playground/api/orders", {
      seeker_id: panes.seeker.userId,
      provider_id: panes.provider.userId,
      details: { task: "Fix a leaking kitchen tap" },
      seeker_location: toLatLng(positions.seeker),
    });
    status.textContent = `Work ${order.work_id} offered to ${panes.provider.userId}.`;
    status.dataset.workId = String(order.work_id);
  } catch (error) {
    status.textContent = error.message;
  }
  button.disabled = false;
}

drawMap();
makeDraggable(document.getElementById("map"));
document.getElementById("setup").addEventListener("click", setup);
