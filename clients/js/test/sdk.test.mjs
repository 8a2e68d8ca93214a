// The SDK against the real release server (and, for what a server cannot be made to do on
// cue, a fake socket). Run: node --experimental-websocket --test clients/js/test/
import { test } from "node:test";
import assert from "node:assert/strict";

import { PartyFlowClient, PubSubClient, stateChecksum, backoffDelay, TERMINAL_CLOSE_CODES } from "../partyflow.js";
import { startServer, until, next } from "./server.mjs";

test("the checksum is PROTOCOL.md's example", () => {
  const teams = [{ id: "team_2", score: 12 }, { id: "team_1", score: 14 }];
  assert.equal(stateChecksum("ROUND_ACTIVE", 148, "host_3f9a1c2b7d4e", teams), "66a3bd38");
});

test("backoff grows, is capped and jittered", () => {
  const opts = { initialDelayMs: 100, maxDelayMs: 1000, jitter: 0.5 };
  assert.equal(backoffDelay(0, opts, () => 1), 100);
  assert.equal(backoffDelay(0, opts, () => 0), 50);
  assert.equal(backoffDelay(3, opts, () => 1), 800);
  assert.equal(backoffDelay(10, opts, () => 1), 1000);
});

/** A WebSocket stand-in: records what the client sends, delivers what the test says. */
class FakeSocket {
  static last = null;
  constructor(url, protocols) {
    this.url = url;
    this.protocols = protocols;
    this.sent = [];
    this.readyState = 1;
    FakeSocket.last = this;
  }
  send(text) {
    this.sent.push(JSON.parse(text));
  }
  close(code = 1005) {
    this.readyState = 3;
    this.onclose?.({ code, reason: "" });
  }
  deliver(message) {
    this.onmessage?.({ data: JSON.stringify(message) });
  }
}

test("ACK requests are answered, duplicates dropped, terminal closes end it", async () => {
  const client = new PartyFlowClient({ baseUrl: "http://x", WebSocket: FakeSocket, heartbeatIntervalMs: 0, reconnect: { initialDelayMs: 1 } });
  const connected = client.connect({ roomId: "R", token: "T" });
  const socket = FakeSocket.last;
  // The token travels in Sec-WebSocket-Protocol, not in the URL.
  assert.match(socket.url, /^ws:\/\/x\/ws\?roomId=R&version=1\.0$/);
  assert.deepEqual(socket.protocols, ["partyflow.v1", "partyflow.token.T"]);
  socket.deliver({ type: "CONNECTED", payload: { actorId: "p1", role: "player", state: "ROUND_STARTING", stateVersion: 5, lastSequenceId: 15 } });
  await connected;
  const seen = [];
  client.on("ROUND_STARTED", (p, m) => seen.push(m.sequenceId));
  const started = { type: "ROUND_STARTED", sequenceId: 16, requiresAck: true, ackId: "ack_16", payload: { state: "ROUND_ACTIVE", stateVersion: 6 } };
  socket.deliver(started);
  socket.deliver(started); // the server's resend of an unacknowledged event
  assert.deepEqual(seen, [16]);
  assert.deepEqual(socket.sent.filter((m) => m.type === "ACK").map((m) => m.payload.ackId), ["ack_16", "ack_16"]);
  assert.equal(client.state, "ROUND_ACTIVE");
  // An abnormal close reconnects; a replaced connection (4002) does not.
  const statuses = [];
  client.on("connection", (c) => statuses.push(c.status));
  socket.close(1006);
  await until(() => FakeSocket.last !== socket, 1000, "a reconnection");
  FakeSocket.last.close(4002);
  assert.deepEqual(statuses, ["reconnecting", "reconnecting", "closed"]);
  assert.ok(TERMINAL_CLOSE_CODES.has(4002));
});

test("a game played to the end; a dropped player's backfill equals a never-dropped peer's events; the checksum repairs a diverged view", async (t) => {
  const server = await startServer(["--shards", "2", "--min-round-duration", "1s", "--countdown", "1", "--score-review", "1s"]);
  t.after(() => server.stop());
  const host = new PartyFlowClient({ baseUrl: server.url, heartbeatIntervalMs: 0 });
  const room = await host.createRoom({ hostName: "Hana", rounds: 1, roundDurationSec: 3, numTeams: 2 });
  assert.match(room.roomId, /^[A-Z0-9]{6}$/);
  const players = [];
  for (const name of ["Ann", "Bob"]) {
    const client = new PartyFlowClient({ baseUrl: server.url, heartbeatIntervalMs: 0, reconnect: { initialDelayMs: 200, jitter: 0 } });
    const seat = await client.joinRoom(room.roomId, name);
    players.push({ client, seat, seq: [] });
  }
  await host.connect({ roomId: room.roomId, token: room.hostToken });
  // The server took the token from Sec-WebSocket-Protocol and answered with the protocol alone.
  assert.equal(host.socket.protocol, "partyflow.v1");
  assert.equal(host.hostId, room.hostId, "the snapshot in CONNECTED was applied");
  for (const p of players) {
    await p.client.connect({ roomId: room.roomId, token: p.seat.token });
    p.client.on("*", (payload, message) => {
      if (message?.sequenceId !== undefined) p.seq.push(`${message.sequenceId} ${message.type}`);
    });
  }
  const [ann, bob] = players;
  // Lobby → teams → countdown → the round.
  host.send("START_TEAM_SETUP", { numTeams: 2 });
  await next(ann.client, "TEAM_SETUP_STARTED");
  ann.client.send("JOIN_TEAM", { teamId: "team_1" });
  bob.client.send("JOIN_TEAM", { teamId: "team_2" });
  await until(() => host.state === "READY_TO_START", 5000, "READY_TO_START");
  // A diverged view is repaired by the snapshot the heartbeat brings back.
  ann.client.teams[0].score += 5;
  const snapshot = next(ann.client, "STATE_SNAPSHOT");
  ann.client.heartbeat();
  const repaired = await snapshot;
  assert.equal(ann.client.checksum(), repaired.stateChecksum);
  host.send("HOST_CONFIRM_START");
  const word = await next(host, "WORD_REVEALED");
  // Bob's network drops; the host plays a word while he is away.
  bob.client.socket.close(4000, "network drop");
  host.send("WORD_SWIPED", { wordId: word.wordId, action: "guessed" });
  const reconnected = await next(bob.client, "RECONNECTED");
  assert.ok(reconnected.missedEvents.length >= 1, "the swipe's result came back in the backfill");
  assert.ok(reconnected.missedEvents.every((e) => e.type !== "WORD_REVEALED"), "no host-only event in a player's backfill");
  // To the end of the game: every event the never-dropped peer saw, Bob saw once, in order.
  await until(() => host.state === "FINAL_RESULTS" && players.every((p) => p.client.state === "FINAL_RESULTS"), 30000, "the end of the game");
  const from = Math.max(...players.map((p) => Number(p.seq[0].split(" ")[0])));
  const since = (p) => p.seq.filter((s) => Number(s.split(" ")[0]) >= from);
  assert.deepEqual(since(bob), since(ann));
  assert.equal(new Set(bob.seq).size, bob.seq.length, "nothing twice");
  assert.equal(ann.client.checksum(), bob.client.checksum());
  // Every ACK was answered: no connection counted as degraded.
  const summary = await host.roomSummary(room.roomId);
  assert.equal(summary.degradedConnections, 0);
  for (const c of [host, ann.client, bob.client]) c.close();
});

test("pubsub: requests answered by id, directs, and rooms re-joined after a drop", async (t) => {
  const server = await startServer(["--shards", "2"]);
  t.after(() => server.stop());
  const a = new PubSubClient({ url: server.url, reconnect: { initialDelayMs: 50, jitter: 0 } });
  const b = new PubSubClient({ url: server.url });
  const [me, other] = [await a.connect(), await b.connect()];
  assert.ok(me.conn && other.user);
  assert.equal(a.socket.protocol, "partyflow.pubsub.v1");
  assert.equal(await a.join("lobby"), 1);
  assert.equal(await b.join("lobby"), 2);
  const chat = next(a, "chat");
  b.publish("lobby", "chat", { text: "hi" });
  assert.deepEqual(await chat, { text: "hi" });
  assert.equal((await a.presence("lobby")).length, 2);
  await assert.rejects(a.leave("nowhere"), (e) => e.code === "NOT_IN_ROOM");
  const dm = next(b, "dm");
  a.sendTo(other.user, "dm", 42);
  assert.equal(await dm, 42);
  // A dropped connection comes back and is in its rooms again.
  a.socket.close(4000);
  await until(() => a.status === "open" && a.conn !== me.conn, 5000, "the reconnection");
  for (let tries = 0; !(await b.presence("lobby")).some((m) => m.conn === a.conn); tries++) {
    assert.ok(tries < 100, "a never joined the lobby again");
    await new Promise((r) => setTimeout(r, 20));
  }
  let heard = null;
  a.on("news", (data) => (heard = data));
  await until(() => {
    b.publish("lobby", "news", "after");
    return heard === "after";
  }, 5000, "a publish after the re-join");
  a.close();
  b.close();
});
