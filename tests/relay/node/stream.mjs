// The official Node SDK's streaming client against the relay: argv = wss URL, proxy key.
// Sends 1 s of silence in 100 ms frames, closes (Terminate), prints what it saw as JSON.
import { AssemblyAI } from "assemblyai";

const [url, apiKey] = process.argv.slice(2);
// In SDK 4.41 the transcriber's WebSocket URL is `websocketBaseUrl` (wss:// only);
// `streamingBaseUrl` is the base the factory's createTemporaryToken uses.
const client = new AssemblyAI({ apiKey });
const rt = client.streaming.transcriber({
  websocketBaseUrl: url,
  sampleRate: 16000,
  speechModel: "u3-rt-pro",
});
const seen = { begin: null, termination: null, close: null, errors: [] };
rt.on("open", (event) => { seen.begin = event.id; });
rt.on("close", (code, reason) => { seen.close = [code, reason]; });
rt.on("error", (error) => { seen.errors.push(String(error)); });
rt.on("turn", () => {});
await rt.connect();
const frame = new Uint8Array(3200);
for (let i = 0; i < 10; i++) {
  rt.sendAudio(frame);
  await new Promise((resolve) => setTimeout(resolve, 100));
}
// close(true) sends Terminate and resolves on Termination (or its timeout); it drops the
// listeners first, so no "close" event follows a graceful close.
const started = Date.now();
await rt.close(true);
seen.closeMs = Date.now() - started;
console.log(JSON.stringify(seen));
