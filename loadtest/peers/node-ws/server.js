// Reference peer for natter-loadtest: the seed tutorial's chat server.
// Owns nothing but this: parse each message as JSON, broadcast {user, text}
// to every open client including the sender. Port from argv[2] or PORT
// (0 = any free port); prints one ready line with the URL.
'use strict';
const { WebSocketServer, WebSocket } = require('ws');

const port = Number(process.argv[2] ?? process.env.PORT ?? 8090);
const wss = new WebSocketServer({ host: '127.0.0.1', port });

wss.on('connection', (ws) => {
  ws.on('message', (data) => {
    let msg;
    try {
      msg = JSON.parse(data);
    } catch {
      return;
    }
    const out = JSON.stringify({ user: msg.user, text: msg.text });
    for (const client of wss.clients) {
      if (client.readyState === WebSocket.OPEN) client.send(out);
    }
  });
});

wss.on('listening', () => {
  console.log(`node-ws listening ws://127.0.0.1:${wss.address().port}/`);
});

const stop = () => process.exit(0);
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
