// The same echo server as wakeup-echo.c, in Node (net, TCP_NODELAY): what a Node process spends
// when traffic wakes it and it does next to nothing. For bench/wakeup.ts; prints its port, exits
// after the first connection closes.
import net from 'node:net';

const server = net.createServer({ noDelay: true }, (socket) => {
  server.close();
  socket.on('data', (chunk) => socket.write(chunk));
  socket.on('end', () => socket.end());
  socket.on('error', () => socket.destroy());
});
server.listen(0, '127.0.0.1', () => process.stdout.write(`${server.address().port}\n`));
