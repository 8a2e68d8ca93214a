// Starts the real release server for the SDK tests: `partyflow` from the cargo target folder
// (CARGO_TARGET_DIR or ../../target), on a free loopback port, stopped by `stop()`.
import { spawn } from "node:child_process";
import { resolve, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { existsSync } from "node:fs";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "../../..");

export function binary() {
  const target = process.env.CARGO_TARGET_DIR ? resolve(root, process.env.CARGO_TARGET_DIR) : resolve(root, "target");
  const path = resolve(target, "release/partyflow");
  if (!existsSync(path)) throw new Error(`${path} is missing: cargo build --release first`);
  return path;
}

/** Starts a server with `args`; resolves with `{url, stop}`. */
export function startServer(args = []) {
  const child = spawn(binary(), ["--listen", "127.0.0.1:0", "--log", "info", ...args], { stdio: ["ignore", "ignore", "pipe"] });
  return new Promise((resolvePromise, reject) => {
    let log = "";
    const timer = setTimeout(() => reject(new Error(`server did not start: ${log}`)), 20000);
    child.stderr.setEncoding("utf8");
    child.stderr.on("data", (chunk) => {
      log += chunk;
      const match = /partyflow listening on ([0-9.:]+)/.exec(log);
      if (match && timer) {
        clearTimeout(timer);
        resolvePromise({
          url: `http://${match[1]}`,
          stop: () => new Promise((done) => {
            child.once("exit", done);
            child.kill("SIGKILL");
          }),
        });
      }
    });
    child.once("exit", (code) => reject(new Error(`server exited with ${code}: ${log}`)));
  });
}

/** Resolves once `predicate()` holds (checked every 10 ms), or rejects after `ms`. */
export function until(predicate, ms = 10000, what = "condition") {
  return new Promise((resolvePromise, reject) => {
    const started = Date.now();
    const tick = () => {
      if (predicate()) return resolvePromise();
      if (Date.now() - started > ms) return reject(new Error(`timed out waiting for ${what}`));
      setTimeout(tick, 10);
    };
    tick();
  });
}

/** Resolves with the payload of the next `type` event of `client`. */
export function next(client, type, ms = 10000) {
  return new Promise((resolvePromise, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ${type} within ${ms} ms`)), ms);
    const off = client.on(type, (payload) => {
      clearTimeout(timer);
      off();
      resolvePromise(payload);
    });
  });
}
