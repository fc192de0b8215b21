// Reference peer for natter-loadtest: a Socket.IO 4 chat server with rooms,
// written the way Socket.IO's own docs write one. Owns nothing but this:
//   "join" {room}        -> socket.join(room), answer "joined" {room}
//   "msg"  {room, text}  -> io.to(room).emit("msg", {room, user, text}) (the
//                           sender too, as natter does) if the sender is in it
// Websocket transport only (no long-polling), default options otherwise.
// Port from argv[2] or PORT (0 = any free port); prints one ready line with
// the URL natter-loadtest connects to.
'use strict';
const http = require('http');
const { Server } = require('socket.io');

const port = Number(process.argv[2] ?? process.env.PORT ?? 8091);
const httpServer = http.createServer();
const io = new Server(httpServer, { transports: ['websocket'] });

io.on('connection', (socket) => {
  socket.on('join', (m) => {
    if (!m || typeof m.room !== 'string') return;
    socket.join(m.room);
    socket.emit('joined', { room: m.room });
  });
  socket.on('msg', (m) => {
    if (!m || typeof m.room !== 'string' || !socket.rooms.has(m.room)) return;
    io.to(m.room).emit('msg', { room: m.room, user: socket.id, text: m.text });
  });
});

httpServer.listen(port, '127.0.0.1', () => {
  const url = `ws://127.0.0.1:${httpServer.address().port}/socket.io/?EIO=4&transport=websocket`;
  console.log(`socketio listening ${url}`);
});

const stop = () => process.exit(0);
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
