// The reference web client: plain JavaScript on the SDK (partyflow.js), no build step. The
// seat (room, token, last sequence id) is kept in sessionStorage so that a reload resumes it.
import { PartyFlowClient } from "/partyflow.js";

const $ = (id) => document.getElementById(id);
const client = new PartyFlowClient({ baseUrl: location.origin });
const SEAT_KEY = "partyflow.seat";
/** Sequence ids of the room events this page applied, in order (for tests and debugging). */
window.partyflowEvents = [];

const view = { word: null, remaining: null, summary: "", players: new Map(), notice: "" };

function show(section) {
  $("home").hidden = section !== "home";
  $("room").hidden = section !== "room";
}

function banner(text) {
  $("banner").textContent = text;
  $("banner").hidden = !text;
}

function saveSeat(seat) {
  sessionStorage.setItem(SEAT_KEY, JSON.stringify(seat));
}

function loadSeat() {
  try {
    return JSON.parse(sessionStorage.getItem(SEAT_KEY));
  } catch {
    return null;
  }
}

function text(tag, content, className) {
  const el = document.createElement(tag);
  el.textContent = content;
  if (className) el.className = className;
  return el;
}

// ---- Home: create or join ------------------------------------------------------------------

async function loadWordPacks() {
  try {
    const { wordPacks } = await client.wordPacks();
    for (const pack of wordPacks) {
      const option = text("option", `${pack.name} (${pack.wordCount})`);
      option.value = pack.id;
      $("word-packs").append(option);
    }
  } catch (err) {
    $("home-error").textContent = `cannot load word packs: ${err.message}`;
  }
}

$("create-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = new FormData(event.target);
  try {
    const room = await client.createRoom({
      hostName: form.get("hostName").trim(),
      numTeams: Number(form.get("numTeams")),
      rounds: Number(form.get("rounds")),
      roundDurationSec: Number(form.get("roundDurationSec")),
      wordPackId: form.get("wordPackId") || undefined,
    });
    await enter({ roomId: room.roomId, token: room.hostToken });
  } catch (err) {
    $("home-error").textContent = err.message;
  }
});

$("join-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = new FormData(event.target);
  const roomId = form.get("roomId").trim().toUpperCase();
  try {
    const seat = await client.joinRoom(roomId, form.get("playerName").trim());
    await enter({ roomId, token: seat.token });
  } catch (err) {
    $("home-error").textContent = err.message;
  }
});

async function enter(seat) {
  saveSeat(seat);
  show("room");
  $("room-id").textContent = seat.roomId;
  const link = `${location.origin}/#join=${encodeURIComponent(seat.roomId)}`;
  $("join-link").href = link;
  $("join-link").textContent = link;
  await client.connect(seat);
}

// ---- The room --------------------------------------------------------------------------------

const isHost = () => client.role === "host" || (client.actorId && client.actorId === client.hostId);

function render() {
  const state = client.state ?? "—";
  $("state").textContent = state;
  $("role").textContent = client.role === "spectator" ? "You are watching: you will play from the next game." : isHost() ? "You are the host." : "";
  const host = isHost();
  $("host-controls").hidden = !host;
  $("start-game").hidden = !(state === "LOBBY" || state === "READY_TO_START");
  $("start-game").textContent = state === "LOBBY" ? "Set up teams" : "Start the game";
  $("cancel-setup").hidden = !(state === "TEAM_SETUP" || state === "READY_TO_START");
  $("pause").hidden = state !== "ROUND_ACTIVE";
  $("resume").hidden = state !== "ROUND_PAUSED";
  $("restart").hidden = state !== "FINAL_RESULTS";
  $("leave").hidden = host || state === "ROOM_CLOSED";
  $("word-card").hidden = !(host && state === "ROUND_ACTIVE" && view.word);
  $("word").textContent = view.word?.wordText ?? "";
  $("timer").textContent = state === "ROUND_ACTIVE" || state === "ROUND_PAUSED" || state === "ROUND_STARTING" ? (view.remaining ?? "") : "";
  renderTeams(state);
  $("summary").textContent = view.summary;
  $("players").replaceChildren(...[...view.players.values()].map((p) => text("li", `${p.name}${p.connected === false ? " (away)" : ""}`)));
}

function renderTeams(state) {
  const choosing = client.role === "player" && (state === "TEAM_SETUP" || state === "READY_TO_START");
  const teams = client.teams.map((team) => {
    const box = document.createElement("div");
    box.className = "team";
    box.append(text("h3", team.name ?? team.id));
    const names = (team.players ?? []).map((id) => view.players.get(id)?.name ?? id).join(", ");
    box.append(text("p", names || "nobody yet", "muted"));
    if (choosing) {
      const join = text("button", `Join ${team.name ?? team.id}`);
      join.dataset.testid = `team-${team.id}`;
      join.addEventListener("click", () => client.send("JOIN_TEAM", { teamId: team.id }));
      box.append(join);
    }
    return box;
  });
  $("teams").replaceChildren(...teams);
  $("scores").replaceChildren(...client.teams.map((t) => text("p", `${t.name ?? t.id}: ${t.score ?? 0}`)));
}

function rememberParticipants(participants) {
  for (const p of participants ?? []) view.players.set(p.id ?? p.playerId, { name: p.name ?? p.playerName ?? p.id, connected: p.connected });
}

client.on("connection", ({ status, code }) => {
  $("connection").textContent = status === "open" ? "open" : status === "closed" ? "closed" : "reconnecting";
  if (status === "reconnecting") banner("Connection lost: reconnecting…");
  else if (status === "open") banner(view.notice);
  else if (status === "closed" && code !== undefined) {
    banner(code === 4002 ? "This seat was opened in another tab." : "Disconnected.");
    if (code === 1000) sessionStorage.removeItem(SEAT_KEY);
  }
});

client.on("*", (payload, message) => {
  if (message?.sequenceId !== undefined) window.partyflowEvents.push(message.sequenceId);
  const seat = loadSeat();
  if (seat) saveSeat({ ...seat, lastSeqId: client.lastSeqId });
});

client.on("snapshot", (gameState) => {
  rememberParticipants(gameState?.participants);
  view.word = gameState?.currentWord ?? view.word;
  render();
});
client.on("state", render);
client.on("PLAYER_JOINED", (p) => {
  view.players.set(p.playerId, { name: p.playerName, connected: true });
  render();
});
client.on("PLAYER_LEFT", (p) => {
  view.players.delete(p.playerId);
  render();
});
client.on("PLAYER_CONNECTION_LOST", (p) => {
  view.players.set(p.playerId, { name: p.playerName, connected: false });
  render();
});
client.on("PLAYER_RECONNECTED", (p) => {
  view.players.set(p.playerId, { name: p.playerName, connected: true });
  render();
});
for (const type of ["TEAM_SETUP_STARTED", "PLAYER_ASSIGNED_TEAM", "TEAMS_BALANCED", "TEAMS_UNBALANCED", "SETUP_CANCELLED", "WORD_RESULT", "GAME_RESTARTED"]) {
  client.on(type, render);
}
client.on("COUNTDOWN_TICK", (p) => {
  view.remaining = `Starting in ${p.count}…`;
  view.summary = "";
  render();
});
client.on("ROUND_STARTED", (p) => {
  view.remaining = `${p.roundDurationSec} s`;
  render();
});
client.on("WORD_REVEALED", (p) => {
  view.word = p;
  render();
});
client.on("TIMER_TICK", (p) => {
  view.remaining = `${p.remainingSeconds} s`;
  render();
});
client.on("GAME_PAUSED", (p) => {
  view.notice = p.message ?? "Paused";
  banner(view.notice);
  render();
});
client.on("GAME_RESUMED", () => {
  view.notice = "";
  banner("");
  render();
});
client.on("HOST_PROMOTED", (p) => {
  view.notice = `${p.hostName} is the host now.`;
  banner(view.notice);
  render();
});
client.on("PACK_EXHAUSTED", () => {
  view.word = null;
  render();
});
client.on("ROUND_ENDED", (p) => {
  view.word = null;
  view.summary = `Round ${p.roundNumber}: ${p.wordsGuessed} guessed, ${p.wordsSkipped} skipped.`;
  render();
});
client.on("SCORE_SUMMARY", (p) => {
  view.summary += ` Next round in ${p.nextRoundIn} s.`;
  render();
});
client.on("GAME_ENDED", (p) => {
  view.summary = `Game over: ${p.winnerTeamId ? `${client.teams.find((t) => t.id === p.winnerTeamId)?.name ?? p.winnerTeamId} wins` : "a draw"}.`;
  render();
});
client.on("ROOM_CLOSED", () => {
  view.summary = "The room is closed.";
  sessionStorage.removeItem(SEAT_KEY);
  render();
});
client.on("ERROR", (p) => banner(`${p.code}: ${p.message}`));
client.on("CONNECTION_WARNING", () => banner("Your connection is unreliable."));
client.on("RECONNECT_FAILED", (p) => banner(p.message ?? "Reconnected: watching until the next turn."));

// ---- Host controls -------------------------------------------------------------------------------

function swipe(action) {
  if (!view.word) return;
  client.send("WORD_SWIPED", { wordId: view.word.wordId, action });
  view.word = null;
  render();
}

$("start-game").addEventListener("click", () => client.send(client.state === "LOBBY" ? "START_TEAM_SETUP" : "HOST_CONFIRM_START", {}));
$("cancel-setup").addEventListener("click", () => client.send("HOST_CANCEL_SETUP"));
$("pause").addEventListener("click", () => client.send("HOST_PAUSE"));
$("resume").addEventListener("click", () => client.send("HOST_RESUME"));
$("restart").addEventListener("click", () => client.send("HOST_RESTART"));
$("close-room").addEventListener("click", () => client.send("ROOM_CLOSE"));
$("leave").addEventListener("click", () => client.send("LEAVE_ROOM"));
$("correct").addEventListener("click", () => swipe("guessed"));
$("skip").addEventListener("click", () => swipe("skipped"));
$("word").addEventListener("keydown", (event) => {
  if (event.key === "ArrowRight") swipe("guessed");
  if (event.key === "ArrowLeft") swipe("skipped");
});
// Swipes on touch screens: right is correct, left is skip.
let swipeStart = null;
$("word-card").addEventListener("pointerdown", (event) => (swipeStart = event.clientX));
$("word-card").addEventListener("pointerup", (event) => {
  if (swipeStart === null) return;
  const dx = event.clientX - swipeStart;
  swipeStart = null;
  if (Math.abs(dx) > 60) swipe(dx > 0 ? "guessed" : "skipped");
});

// ---- Start ---------------------------------------------------------------------------------------

const seat = loadSeat();
const joinCode = new URLSearchParams(location.hash.slice(1)).get("join");
if (seat) {
  enter(seat).catch((err) => {
    sessionStorage.removeItem(SEAT_KEY);
    show("home");
    $("home-error").textContent = `could not rejoin: ${err.message}`;
  });
} else {
  show("home");
  if (joinCode) $("join-form").elements.roomId.value = joinCode;
  loadWordPacks();
}
