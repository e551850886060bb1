// A small HTTP app for the sample mesh: answers with who it is and who called it.
import http from 'node:http';

const port = Number(process.argv[process.argv.indexOf('--port') + 1] || 8080);
const server = http.createServer((req, res) => {
  const body = JSON.stringify({
    pod: `${process.env.POD_NAMESPACE}/${process.env.POD_NAME}`,
    podIP: process.env.POD_IP,
    node: process.env.NODE_NAME,
    client: `${req.socket.remoteAddress}:${req.socket.remotePort}`,
    method: req.method,
    path: req.url,
  });
  res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) + 1 });
  res.end(body + '\n');
});
server.listen(port, '0.0.0.0', () => console.log(`echo listening on :${port}`));
process.on('SIGTERM', () => server.close(() => process.exit(0)));
