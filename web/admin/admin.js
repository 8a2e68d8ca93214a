// The admin page: lists the server's rooms through the admin API (`/api/rooms`, with the server
// API's key as a bearer token, kept in sessionStorage for this tab only), refreshes them, opens
// a room, closes it and kicks its players. No framework, nothing loaded from elsewhere.

const KEY_ITEM = "partyflow.adminKey";
const REFRESH_MS = 3000;
const $ = (id) => document.getElementById(id);

let key = sessionStorage.getItem(KEY_ITEM);
let selected = null;
let cursor = null;
let timer = null;

class Unauthorized extends Error {}

async function call(method, path, body) {
  const response = await fetch(path, {
    method,
    headers: { Authorization: `Bearer ${key}`, ...(body ? { "Content-Type": "application/json" } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const data = await response.json().catch(() => ({}));
  if (response.status === 401) throw new Unauthorized(data.error?.message ?? "wrong key");
  if (!response.ok) throw new Error(data.error?.message ?? `HTTP ${response.status}`);
  return data;
}

function status(text) {
  $("status").textContent = text;
}

function cell(text) {
  const td = document.createElement("td");
  td.textContent = text;
  return td;
}

async function loadRooms() {
  const params = new URLSearchParams();
  if ($("kind").value) params.set("kind", $("kind").value);
  if ($("state").value.trim()) params.set("state", $("state").value.trim());
  if (cursor) params.set("cursor", cursor);
  try {
    const page = await call("GET", `/api/rooms?${params}`);
    const body = $("rooms");
    body.replaceChildren();
    for (const room of page.rooms) {
      const tr = document.createElement("tr");
      tr.dataset.testid = "room-row";
      tr.dataset.roomId = room.id;
      tr.dataset.kind = room.kind;
      tr.tabIndex = 0;
      if (selected && selected.id === room.id && selected.kind === room.kind) tr.classList.add("selected");
      tr.append(cell(room.id), cell(room.kind), cell(room.state), cell(room.members), cell(room.connected), cell(`${room.instance} / ${room.shard}`));
      tr.addEventListener("click", () => openRoom(room.id, room.kind));
      tr.addEventListener("keydown", (e) => { if (e.key === "Enter") openRoom(room.id, room.kind); });
      body.append(tr);
    }
    $("more").hidden = !page.next;
    $("more").dataset.next = page.next ?? "";
    const away = page.unreachable?.length ? ` · unreachable: ${page.unreachable.join(", ")}` : "";
    $("summary").textContent = `${page.rooms.length} room(s) on this page${away}`;
    status(`updated ${new Date().toLocaleTimeString()}`);
  } catch (e) {
    handle(e, "summary");
  }
}

function handle(e, where) {
  if (e instanceof Unauthorized) return logout(e.message);
  $(where).textContent = e.message;
}

async function openRoom(id, kind) {
  selected = { id, kind };
  $("detail-error").textContent = "";
  $("confirm-close").hidden = true;
  try {
    const room = await call("GET", `/api/rooms/${encodeURIComponent(id)}`);
    $("detail").hidden = false;
    $("detail-title").textContent = `${room.kind} room ${room.id}`;
    $("detail-meta").textContent = `${room.state} · ${room.instance} / shard ${room.shard}`;
    $("close-room").hidden = room.kind !== "game";
    const list = $("members");
    list.replaceChildren();
    for (const member of room.members ?? []) {
      const li = document.createElement("li");
      const name = document.createElement("span");
      name.textContent = room.kind === "game" ? `${member.name} (${member.role})` : `${member.user} · ${member.conn}`;
      li.append(name);
      if (room.kind === "game") {
        const state = document.createElement("span");
        state.className = `badge ${member.connected ? "on" : "off"}`;
        state.textContent = member.connected ? (member.degraded ? "connected, degraded" : "connected") : "offline";
        li.append(state);
      }
      if (member.role !== "host") {
        const kick = document.createElement("button");
        kick.type = "button";
        kick.className = "danger";
        kick.dataset.testid = "kick";
        kick.textContent = "Kick";
        kick.addEventListener("click", () => kickMember(room, member));
        li.append(kick);
      }
      list.append(li);
    }
  } catch (e) {
    handle(e, "detail-error");
  }
}

async function kickMember(room, member) {
  const body = room.kind === "game" ? { playerId: member.id } : { user: member.user };
  body.ban = $("ban").checked;
  try {
    await call("POST", `/api/rooms/${encodeURIComponent(room.id)}/kick`, body);
    status(`kicked ${member.name ?? member.user}`);
    await openRoom(room.id, room.kind);
    await loadRooms();
  } catch (e) {
    handle(e, "detail-error");
  }
}

async function closeRoom() {
  if (!selected) return;
  try {
    await call("POST", `/api/rooms/${encodeURIComponent(selected.id)}/close`, { reason: "closed from the admin page" });
    status(`closed ${selected.id}`);
    selected = null;
    $("detail").hidden = true;
    await loadRooms();
  } catch (e) {
    handle(e, "detail-error");
  }
}

function showRooms() {
  $("login").hidden = true;
  $("rooms-view").hidden = false;
  cursor = null;
  loadRooms();
  clearInterval(timer);
  timer = setInterval(loadRooms, REFRESH_MS);
}

function logout(message) {
  sessionStorage.removeItem(KEY_ITEM);
  key = null;
  clearInterval(timer);
  $("rooms-view").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message ?? "";
}

$("login").addEventListener("submit", async (e) => {
  e.preventDefault();
  key = $("key").value.trim();
  try {
    await call("GET", "/api/rooms?limit=1");
    sessionStorage.setItem(KEY_ITEM, key);
    $("key").value = "";
    $("login-error").textContent = "";
    showRooms();
  } catch (err) {
    key = null;
    $("login-error").textContent = err instanceof Unauthorized ? "That key is not the server's --api-key." : err.message;
  }
});
$("refresh").addEventListener("click", loadRooms);
$("kind").addEventListener("change", () => { cursor = null; loadRooms(); });
$("state").addEventListener("change", () => { cursor = null; loadRooms(); });
$("more").addEventListener("click", () => { cursor = $("more").dataset.next || null; loadRooms(); });
$("logout").addEventListener("click", () => logout());
$("close-room").addEventListener("click", () => { $("confirm-close").hidden = false; });
$("confirm-close").addEventListener("click", closeRoom);

if (key) showRooms();
