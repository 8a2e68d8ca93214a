// PartyFlow client SDK: the room API, the game channel with reconnection, backfill, ACKs and
// checksum repair, and a /pubsub client. An ES module without dependencies or build step; it
// runs in browsers and in Node >= 20 (pass a WebSocket implementation where there is no global
// one, e.g. `node --experimental-websocket` on Node 20).

/** The protocol version this SDK speaks. */
export const PROTOCOL_VERSION = "1.0";

/** The subprotocols of the game channel (`/ws`) and of `/pubsub` (PROTOCOL.md §2). */
export const GAME_SUBPROTOCOL = "partyflow.v1";
export const PUBSUB_SUBPROTOCOL = "partyflow.pubsub.v1";

// Characters an HTTP token may hold: such a token travels in Sec-WebSocket-Protocol, out of the
// URL (which proxies and load balancers write to their access logs).
const HEADER_TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

/**
 * Where a WebSocket carries `token`: `[query, protocols]` for `new WebSocket(url + query,
 * protocols)`. The token goes as `partyflow.token.<token>` beside the endpoint's subprotocol;
 * only a token with other characters falls back to `?token=` (after `sep`).
 */
function tokenPlacement(protocol, token, sep) {
  if (!token) return ["", [protocol]];
  if (HEADER_TOKEN.test(token)) return ["", [protocol, `partyflow.token.${token}`]];
  return [`${sep}token=${encodeURIComponent(token)}`, [protocol]];
}

/**
 * Close codes after which reconnecting cannot help: the room closed or the actor left (1000),
 * a protocol violation or bad data (1002, 1003, 1007, 1009), a version the server does not
 * serve (4001), a newer connection of the same actor (4002).
 */
export const TERMINAL_CLOSE_CODES = new Set([1000, 1002, 1003, 1007, 1009, 4001, 4002]);

/**
 * The room-state checksum of PROTOCOL.md §11.2: 32-bit FNV-1a over
 * `STATE|stateVersion|hostId|team_1:score,...` (teams in id order), as 8 hex digits.
 */
export function stateChecksum(state, stateVersion, hostId, teams) {
  const scores = [...teams].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0)).map((t) => `${t.id}:${t.score}`).join(",");
  const bytes = new TextEncoder().encode(`${state}|${stateVersion}|${hostId}|${scores}`);
  let hash = 0x811c9dc5;
  for (const b of bytes) {
    hash ^= b;
    hash = Math.imul(hash, 0x01000193) >>> 0;
  }
  return hash.toString(16).padStart(8, "0");
}

/** A minimal event emitter: `on(type, fn)`, `off(type, fn)`, `"*"` for every event. */
class Emitter {
  #handlers = new Map();

  /** Calls `fn(payload, message)` for every event of `type` (`"*"`: every event). */
  on(type, fn) {
    if (!this.#handlers.has(type)) this.#handlers.set(type, new Set());
    this.#handlers.get(type).add(fn);
    return () => this.off(type, fn);
  }

  off(type, fn) {
    this.#handlers.get(type)?.delete(fn);
  }

  emit(type, ...args) {
    for (const key of [type, "*"]) {
      for (const fn of this.#handlers.get(key) ?? []) {
        try {
          fn(...args);
        } catch (err) {
          // A listener's bug must not break the protocol: report it, carry on.
          queueMicrotask(() => {
            throw err;
          });
        }
      }
    }
  }
}

/** An HTTP error of the room API: `status`, `code` and `message` from its JSON body. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(`${status} ${code}: ${message}`);
    this.status = status;
    this.code = code;
  }
}

function trimSlash(url) {
  return url.replace(/\/+$/, "");
}

/** Delays of a capped exponential backoff with jitter: attempt 0, 1, 2, ... */
export function backoffDelay(attempt, { initialDelayMs = 250, maxDelayMs = 5000, jitter = 0.5 } = {}, random = Math.random) {
  const base = Math.min(maxDelayMs, initialDelayMs * 2 ** attempt);
  return Math.round(base * (1 - jitter + jitter * random()));
}

/**
 * The PartyFlow game client. Room API calls are plain methods; `connect()` opens the game
 * channel and keeps it open: after a drop it reconnects with backoff, sends `RECONNECT
 * {lastSeqId}`, applies the missed events in order (or the snapshot), and never delivers an
 * event twice.
 *
 * Events: every server message type (`client.on("ROUND_STARTED", (payload, message) => …)`),
 * `"*"` for all, `"connection"` ({status: "connecting"|"open"|"reconnecting"|"closed", code?,
 * reason?}), `"state"` (the state name changed), `"snapshot"` (a full game state was applied).
 */
export class PartyFlowClient extends Emitter {
  /**
   * @param {object} options
   * @param {string} options.baseUrl the server, e.g. `http://127.0.0.1:8080`
   * @param {Function} [options.WebSocket] a WebSocket constructor (default: the global one)
   * @param {Function} [options.fetch] a fetch function (default: the global one)
   * @param {object} [options.reconnect] `{initialDelayMs, maxDelayMs, jitter, maxAttempts}`
   * @param {number} [options.heartbeatIntervalMs] how often to compare state with the server
   */
  constructor({ baseUrl, WebSocket: ws = globalThis.WebSocket, fetch: f = globalThis.fetch, reconnect = {}, heartbeatIntervalMs = 5000 } = {}) {
    super();
    this.baseUrl = trimSlash(baseUrl ?? globalThis.location?.origin ?? "");
    this.WebSocket = ws;
    // Called unbound: a browser's fetch refuses another `this`.
    this.fetch = (...args) => f(...args);
    this.reconnectOptions = { initialDelayMs: 250, maxDelayMs: 5000, jitter: 0.5, maxAttempts: Infinity, ...reconnect };
    this.heartbeatIntervalMs = heartbeatIntervalMs;
    /** `connecting`, `open`, `reconnecting` or `closed`. */
    this.status = "closed";
    /** The last sequence id processed. */
    this.lastSeqId = 0;
    /** The room's state name, its version, and the last full game state received. */
    this.state = null;
    this.stateVersion = 0;
    this.gameState = null;
    this.hostId = null;
    /** Teams as last known: [{id, score, ...}]. */
    this.teams = [];
    this.actorId = null;
    this.role = null;
    this.roomId = null;
    this.token = null;
    this.socket = null;
    this.attempt = 0;
    this.hadSession = false;
    this.closedByUser = false;
    this.heartbeatTimer = null;
    this.retryTimer = null;
    /** Live events held while a reconnection's reply is awaited (applied after it). */
    this.held = null;
    // In a browser, the network going away is known before any socket times out: drop the
    // connection at once and retry as soon as the network is back.
    globalThis.addEventListener?.("offline", () => {
      const socket = this.socket;
      if (!socket) return;
      // Its events are ignored from now on: a close handshake cannot finish offline.
      this.socket = null;
      socket.close(4000, "offline");
      this.#closed(1006, "offline");
    });
    globalThis.addEventListener?.("online", () => {
      if (this.status === "reconnecting" && this.retryTimer) {
        clearTimeout(this.retryTimer);
        this.retryTimer = null;
        this.#open("reconnecting");
      }
    });
  }

  // ---- The room API --------------------------------------------------------------------

  async #api(method, path, body) {
    const response = await this.fetch(`${this.baseUrl}${path}`, {
      method,
      headers: body === undefined ? {} : { "Content-Type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const json = await response.json().catch(() => ({}));
    if (!response.ok) throw new ApiError(response.status, json.error?.code ?? "HTTP_ERROR", json.error?.message ?? response.statusText);
    return json;
  }

  /** Creates a room: `{hostName, maxPlayers?, numTeams?, rounds?, roundDurationSec?, wordPackId?}`. */
  createRoom(settings, roomId) {
    return this.#api("POST", roomId ? `/rooms?roomId=${encodeURIComponent(roomId)}` : "/rooms", settings);
  }

  /** Takes a seat: `{playerId, token, role, wsUrl}`. */
  joinRoom(roomId, playerName) {
    return this.#api("POST", `/rooms/${encodeURIComponent(roomId)}/players`, { playerName });
  }

  /** `{roomId, state, playerCount, maxPlayers, connectedCount, degradedConnections}`. */
  roomSummary(roomId) {
    return this.#api("GET", `/rooms/${encodeURIComponent(roomId)}`);
  }

  /** `{wordPacks: [{id, name, wordCount}]}`. */
  wordPacks() {
    return this.#api("GET", "/word-packs");
  }

  // ---- The game channel ------------------------------------------------------------------

  /**
   * Opens the game channel of `roomId` with `token` and resolves with the `CONNECTED` payload.
   * Pass `lastSeqId` (e.g. kept across a page reload) to resume a session: the SDK then sends
   * `RECONNECT` and receives what it missed.
   */
  connect({ roomId, token, lastSeqId }) {
    this.roomId = roomId;
    this.token = token;
    this.closedByUser = false;
    if (lastSeqId !== undefined) {
      this.lastSeqId = lastSeqId;
      this.hadSession = true;
    }
    return new Promise((resolve, reject) => {
      const off = this.on("connection", (c) => {
        if (c.status === "open") {
          off();
          resolve(this.connected);
        } else if (c.status === "closed") {
          off();
          reject(new Error(`closed: ${c.code} ${c.reason ?? ""}`));
        }
      });
      this.#open("connecting");
    });
  }

  #wsUrl() {
    const base = this.baseUrl.replace(/^http/, "ws");
    return `${base}/ws?roomId=${encodeURIComponent(this.roomId)}&version=${PROTOCOL_VERSION}`;
  }

  #setStatus(status, extra = {}) {
    this.status = status;
    this.emit("connection", { status, ...extra });
  }

  #open(status) {
    this.#setStatus(status);
    const [query, protocols] = tokenPlacement(GAME_SUBPROTOCOL, this.token, "&");
    const socket = new this.WebSocket(this.#wsUrl() + query, protocols);
    this.socket = socket;
    socket.onmessage = (event) => {
      if (socket !== this.socket) return;
      let message;
      try {
        message = JSON.parse(typeof event.data === "string" ? event.data : new TextDecoder().decode(event.data));
      } catch {
        return;
      }
      this.#receive(message);
    };
    socket.onclose = (event) => {
      if (socket !== this.socket) return;
      this.#closed(event.code, event.reason);
    };
    socket.onerror = () => {};
  }

  #closed(code, reason) {
    clearInterval(this.heartbeatTimer);
    this.heartbeatTimer = null;
    this.socket = null;
    this.held = null;
    const attempts = this.reconnectOptions.maxAttempts;
    if (this.closedByUser || TERMINAL_CLOSE_CODES.has(code) || this.attempt >= attempts) {
      this.#setStatus("closed", { code, reason });
      return;
    }
    const delay = backoffDelay(this.attempt, this.reconnectOptions);
    this.attempt += 1;
    this.#setStatus("reconnecting", { code, reason, delayMs: delay });
    this.retryTimer = setTimeout(() => this.#open("reconnecting"), delay);
  }

  /** Sends a command: `client.send("WORD_SWIPED", {wordId, action: "guessed"})`. */
  send(type, payload = {}) {
    if (!this.socket || this.socket.readyState !== 1) return false;
    this.socket.send(JSON.stringify({ type, roomId: this.roomId, actorId: this.actorId ?? undefined, timestamp: Date.now(), version: PROTOCOL_VERSION, payload }));
    return true;
  }

  /** Closes the channel for good (no reconnection). */
  close() {
    this.closedByUser = true;
    clearTimeout(this.retryTimer);
    clearInterval(this.heartbeatTimer);
    if (this.socket) this.socket.close(1000);
    else this.#setStatus("closed", { code: 1000 });
  }

  /** The checksum of this client's view of the room (what `HEARTBEAT` sends). */
  checksum() {
    return stateChecksum(this.state, this.stateVersion, this.hostId, this.teams);
  }

  /** Compares this client's view with the room's now; a differing room answers with a snapshot. */
  heartbeat() {
    return this.send("HEARTBEAT", { stateVersion: this.stateVersion, stateChecksum: this.checksum() });
  }

  #receive(message) {
    const { type, payload = {} } = message;
    switch (type) {
      case "CONNECTED":
        return this.#onConnected(payload, message);
      case "RECONNECTED":
      case "STATE_SNAPSHOT":
      case "RECONNECT_FAILED":
        return this.#onReply(type, payload, message);
      default:
        break;
    }
    if (message.requiresAck && message.ackId) this.send("ACK", { ackId: message.ackId });
    if (this.held && message.sequenceId !== undefined) {
      this.held.push(message);
      return;
    }
    this.#apply(message);
  }

  #onConnected(payload, message) {
    this.connected = payload;
    this.actorId = payload.actorId;
    this.role = payload.role;
    this.attempt = 0;
    const resume = this.hadSession;
    this.hadSession = true;
    this.#applySnapshot(payload.snapshot ?? payload.gameState, payload.state, payload.stateVersion);
    if (resume) {
      // Live events from now on are held until the reply's missed events are applied.
      this.held = [];
      this.send("RECONNECT", { lastSeqId: this.lastSeqId });
    } else {
      this.lastSeqId = Math.max(this.lastSeqId, payload.lastSequenceId ?? 0);
    }
    this.emit("CONNECTED", payload, message);
    clearInterval(this.heartbeatTimer);
    if (this.heartbeatIntervalMs > 0) this.heartbeatTimer = setInterval(() => this.heartbeat(), this.heartbeatIntervalMs);
    this.#setStatus("open");
  }

  #onReply(type, payload, message) {
    if (payload.gameState || payload.currentState) this.#applySnapshot(payload.gameState, payload.currentState, payload.stateVersion);
    for (const missed of payload.missedEvents ?? []) this.#apply(missed);
    if (type !== "STATE_SNAPSHOT" || this.held) {
      // The reply to RECONNECT: everything from CONNECTED's last id on comes live.
      this.lastSeqId = Math.max(this.lastSeqId, this.connected?.lastSequenceId ?? 0);
    }
    const held = this.held ?? [];
    this.held = null;
    this.emit(type, payload, message);
    for (const live of held) this.#apply(live);
  }

  #applySnapshot(gameState, state, stateVersion) {
    if (gameState) {
      this.gameState = gameState;
      if (gameState.hostId) this.hostId = gameState.hostId;
      if (Array.isArray(gameState.teams)) this.teams = gameState.teams.map((t) => ({ ...t }));
    }
    this.#setState(state, stateVersion);
    this.emit("snapshot", this.gameState);
  }

  #setState(state, stateVersion) {
    if (stateVersion !== undefined) this.stateVersion = stateVersion;
    if (state && state !== this.state) {
      this.state = state;
      this.emit("state", state);
    }
  }

  /** Applies one room event, once: sequence ids at or below the last processed are duplicates. */
  #apply(message) {
    const { type, payload = {} } = message;
    if (message.sequenceId !== undefined) {
      if (message.sequenceId <= this.lastSeqId) return;
      this.lastSeqId = message.sequenceId;
    }
    this.#track(type, payload);
    this.#setState(payload.state, payload.stateVersion);
    this.emit(type, payload, message);
  }

  /** Keeps what the checksum covers (host and team scores) up to date from events. */
  #track(type, payload) {
    if (Array.isArray(payload.teams)) this.teams = payload.teams.map((t) => ({ ...t }));
    if (type === "HOST_PROMOTED" || type === "ROOM_CREATED") this.hostId = payload.hostId ?? this.hostId;
    if (type === "WORD_RESULT" && payload.teamId) {
      const team = this.teams.find((t) => t.id === payload.teamId);
      if (team) team.score = payload.newScore;
    }
    for (const entry of payload.leaderboard ?? payload.finalScores ?? []) {
      const team = this.teams.find((t) => t.id === entry.teamId);
      if (team) team.score = entry.score;
    }
  }
}

/**
 * A `/pubsub` client (PROTOCOL.md §13): join, leave, publish, direct and presence as promises
 * resolved by the reply that carries the request's id (rejected with the `error` one); after a
 * drop it reconnects with backoff and joins its rooms again.
 *
 * Events: every event received (`client.on("chat", (data, message) => …)`), `"*"`,
 * `"connection"` as on {@link PartyFlowClient}.
 */
export class PubSubClient extends Emitter {
  /**
   * @param {object} options
   * @param {string} options.url the server, e.g. `http://127.0.0.1:8080` (or `ws://…`)
   * @param {string|Function} [options.token] a JWT, or a function returning one (called at each connection)
   * @param {Function} [options.WebSocket]
   * @param {object} [options.reconnect] `{initialDelayMs, maxDelayMs, jitter, maxAttempts}`
   * @param {number} [options.timeoutMs] how long a request waits for its reply
   */
  constructor({ url, token, WebSocket: ws = globalThis.WebSocket, reconnect = {}, timeoutMs = 10000 }) {
    super();
    this.url = trimSlash(url).replace(/^http/, "ws");
    this.token = token;
    this.WebSocket = ws;
    this.reconnectOptions = { initialDelayMs: 250, maxDelayMs: 5000, jitter: 0.5, maxAttempts: Infinity, ...reconnect };
    this.timeoutMs = timeoutMs;
    this.status = "closed";
    this.user = null;
    this.conn = null;
    /** Rooms joined, re-joined after a reconnection. */
    this.rooms = new Set();
    this.pending = new Map();
    this.nextId = 1;
    this.attempt = 0;
    this.socket = null;
    this.closedByUser = false;
  }

  /** Connects; resolves with `{user, conn}` once the server announced the connection. */
  connect() {
    this.closedByUser = false;
    return new Promise((resolve, reject) => {
      const off = this.on("connection", (c) => {
        if (c.status === "open") {
          off();
          resolve({ user: this.user, conn: this.conn });
        } else if (c.status === "closed") {
          off();
          reject(new Error(`closed: ${c.code} ${c.reason ?? ""}`));
        }
      });
      this.#open("connecting");
    });
  }

  #setStatus(status, extra = {}) {
    this.status = status;
    this.emit("connection", { status, ...extra });
  }

  #open(status) {
    this.#setStatus(status);
    const token = typeof this.token === "function" ? this.token() : this.token;
    const [query, protocols] = tokenPlacement(PUBSUB_SUBPROTOCOL, token, "?");
    const socket = new this.WebSocket(`${this.url}/pubsub${query}`, protocols);
    this.socket = socket;
    socket.onmessage = (event) => {
      if (socket !== this.socket) return;
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        return;
      }
      this.#receive(message);
    };
    socket.onclose = (event) => {
      if (socket !== this.socket) return;
      this.socket = null;
      for (const { reject, timer } of this.pending.values()) {
        clearTimeout(timer);
        reject(new Error("connection closed"));
      }
      this.pending.clear();
      if (this.closedByUser || TERMINAL_CLOSE_CODES.has(event.code) || event.code === 4003 || this.attempt >= this.reconnectOptions.maxAttempts) {
        this.#setStatus("closed", { code: event.code, reason: event.reason });
        return;
      }
      const delay = backoffDelay(this.attempt, this.reconnectOptions);
      this.attempt += 1;
      this.#setStatus("reconnecting", { code: event.code, reason: event.reason, delayMs: delay });
      this.retryTimer = setTimeout(() => this.#open("reconnecting"), delay);
    };
    socket.onerror = () => {};
  }

  async #receive(message) {
    if (message.event === "connected") {
      this.user = message.data.user;
      this.conn = message.data.conn;
      this.attempt = 0;
      this.#setStatus("open");
      // Rooms of the previous connection, joined again (their replies are not awaited here).
      for (const room of this.rooms) this.#request({ event: "join", room }).catch(() => {});
      return;
    }
    const waiting = message.id !== undefined ? this.pending.get(message.id) : undefined;
    if (waiting) {
      this.pending.delete(message.id);
      clearTimeout(waiting.timer);
      if (message.event === "error") waiting.reject(Object.assign(new Error(message.data.message), { code: message.data.code }));
      else waiting.resolve(message);
      return;
    }
    this.emit(message.event, message.data, message);
  }

  #request(message) {
    if (!this.socket || this.socket.readyState !== 1) return Promise.reject(new Error("not connected"));
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error(`no reply to ${message.event} within ${this.timeoutMs} ms`));
      }, this.timeoutMs);
      this.pending.set(id, { resolve, reject, timer });
      this.socket.send(JSON.stringify({ ...message, id }));
    });
  }

  /** Joins `room`; resolves with the member count. */
  async join(room) {
    const reply = await this.#request({ event: "join", room });
    this.rooms.add(room);
    return reply.data.members;
  }

  /** Leaves `room`. */
  async leave(room) {
    this.rooms.delete(room);
    await this.#request({ event: "leave", room });
  }

  /** `room`'s members: [{user, conn, meta?}]. */
  async presence(room) {
    return (await this.#request({ event: "presence", room })).data.members;
  }

  /** Publishes `event` with `data` to `room` (the sender receives it too, as every member). */
  publish(room, event, data) {
    return this.#send({ event, room, data });
  }

  /** Sends `event` with `data` to every connection of `user`. */
  sendTo(user, event, data) {
    return this.#send({ event, to: user, data });
  }

  #send(message) {
    if (!this.socket || this.socket.readyState !== 1) return false;
    this.socket.send(JSON.stringify(message));
    return true;
  }

  /** Closes for good. */
  close() {
    this.closedByUser = true;
    clearTimeout(this.retryTimer);
    if (this.socket) this.socket.close(1000);
    else this.#setStatus("closed", { code: 1000 });
  }
}
