// A Node `ws` relay of the same shape as partyflow's /relay: rooms as sets of sockets, every
// message to every member, sender included. Usage: node server.js PORT
const { WebSocketServer } = require('ws');
const port = Number(process.argv[2] || 9400);
const rooms = new Map();
const wss = new WebSocketServer({ host: '127.0.0.1', port, perMessageDeflate: false });
wss.on('connection', (ws, req) => {
  const room = new URL(req.url, 'http://x').searchParams.get('room');
  if (!room) return ws.close(1008);
  if (!rooms.has(room)) rooms.set(room, new Set());
  const members = rooms.get(room);
  members.add(ws);
  ws.on('message', (data, isBinary) => { for (const m of members) m.send(data, { binary: isBinary }); });
  ws.on('close', () => { members.delete(ws); if (members.size === 0) rooms.delete(room); });
});
console.log(`reference relay (node ws) listening on ${port}`);
