// A TCP proxy in front of natter's WebSocket port that plays a middlebox which
// breaks WebSockets: while refusing, a request asking for `Upgrade` is answered
// 403 and closed; every other request (GET /sse, POST /send) is piped through
// untouched. `allowUpgrades()` lets upgrades through from then on.
// Free of playwright, like natter-process.mjs.

import net from 'node:net';

const MAX_HEAD = 16 * 1024;

export async function startUpgradeProxy(cleanup, targetPort) {
  let refusing = true;
  const sockets = new Set();
  const counts = { refused: 0, passed: 0 };
  const track = (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => socket.destroy());
  };
  const server = net.createServer((client) => {
    track(client);
    let head = Buffer.alloc(0);
    const onData = (chunk) => {
      head = Buffer.concat([head, chunk]);
      const end = head.indexOf('\r\n\r\n');
      if (end < 0 && head.length < MAX_HEAD) return;
      client.off('data', onData);
      client.pause();
      const text = head.subarray(0, end < 0 ? head.length : end).toString('latin1');
      if (refusing && /^upgrade:/im.test(text)) {
        counts.refused += 1;
        client.end('HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n');
        return;
      }
      counts.passed += 1;
      const upstream = net.connect(targetPort, '127.0.0.1');
      track(upstream);
      upstream.write(head);
      client.pipe(upstream);
      upstream.pipe(client);
      client.on('close', () => upstream.destroy());
      upstream.on('close', () => client.destroy());
      client.resume();
    };
    client.on('data', onData);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const proxy = {
    port: server.address().port,
    counts,
    allowUpgrades() {
      refusing = false;
    },
    close() {
      for (const socket of sockets) socket.destroy();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
  cleanup.add(() => proxy.close());
  return proxy;
}
