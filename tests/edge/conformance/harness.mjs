// The edge workers inside real Pyodide: Node + npm `pyodide` + the PyPI `workers-runtime-sdk` wheel +
// the workers' real bundles (entry.py and what it imports, as wrangler uploads them).
//
// One process serves a whole test session: Pyodide is loaded once, then JSON commands arrive one per
// line on stdin and each answer is one JSON line on stdout (everything else goes to stderr):
//   boot      {pyodide, wheel, bundles: {gateway, push}, restore_rounds}   load Pyodide, the SDK and both entries,
//             then serve from an isolate restored from a memory snapshot of that (see boot)
//   reset     {env, kv: [names], ratelimits: {NAME: {limit, period}}}
//             a fresh isolate: new bindings, and the entries' cached dependencies dropped
//   fetch     {worker, method, url, headers: [[n, v]], body_b64}  one request through Default.fetch;
//             ctx.waitUntil work is awaited before answering, so KV effects are visible
//   kv_put    {ns, key, value, ttl}     kv_dump {}
//   bench     {worker, requests: [...], rounds, warmup, origin}   per-request CPU and wall times
// The bindings are fakes named like Cloudflare's own classes (KvNamespace, Ratelimit,
// DurableObjectNamespace, DurableObjectStorage) so that the SDK wraps them as it wraps real ones; the
// Durable Object namespace runs the gateway's real RateLimiterObject class.
import fs from "node:fs";
import path from "node:path";
import readline from "node:readline";
import { pathToFileURL } from "node:url";

const protocolOut = (message) => process.stdout.write(JSON.stringify(message) + "\n");
console.log = console.error; // only protocol lines on stdout

class KvNamespace {
  constructor() { this.entries = new Map(); }
  live(key) {
    const entry = this.entries.get(key);
    if (entry && entry.expiration !== null && entry.expiration * 1000 <= Date.now()) {
      this.entries.delete(key);
      return undefined;
    }
    return entry;
  }
  async get(key) {
    if (Array.isArray(key)) { // a bulk read: a Map of every key, null where missing
      if (key.length < 1 || key.length > 100) throw new Error("KV GET_BULK failed: 400 between 1 and 100 keys");
      return new Map(key.map((name) => [name, this.live(name)?.value ?? null]));
    }
    const entry = this.live(key);
    return entry === undefined ? null : entry.value;
  }
  async put(key, value, options) {
    const ttl = options ? options.expirationTtl : undefined;
    if (ttl !== undefined && (!Number.isInteger(ttl) || ttl < 60)) {
      throw new Error(`KV PUT failed: 400 Invalid expiration_ttl of ${ttl}. Expiration TTL must be at least 60.`);
    }
    const expiration = ttl === undefined ? null : Math.floor(Date.now() / 1000) + ttl;
    this.entries.set(key, { value: String(value), expiration });
  }
  async delete(key) { this.entries.delete(key); }
  async list(options = {}) {
    const prefix = options.prefix ?? "";
    const limit = options.limit ?? 1000;
    const names = [...this.entries.keys()].filter((k) => k.startsWith(prefix) && this.live(k)).sort();
    const start = options.cursor ? names.indexOf(options.cursor) + 1 : 0;
    const page = names.slice(start, start + limit);
    const complete = start + limit >= names.length;
    return {
      keys: page.map((name) => ({ name, expiration: this.entries.get(name).expiration ?? undefined })),
      list_complete: complete,
      cursor: complete ? undefined : page[page.length - 1],
    };
  }
}

// The Rate Limiting binding: limit({key}) -> {success}; a fixed window per key from its first hit
// stands in for Cloudflare's counting.
class Ratelimit {
  constructor({ limit, period }) { this.quota = limit; this.periodMs = period * 1000; this.windows = new Map(); }
  async limit({ key }) {
    const now = Date.now();
    let [started, count] = this.windows.get(key) ?? [now, 0];
    if (now >= started + this.periodMs) [started, count] = [now, 0];
    if (count >= this.quota) return { success: false };
    this.windows.set(key, [started, count + 1]);
    return { success: true };
  }
}

class DurableObjectStorage {
  constructor() { this.values = new Map(); }
  async get(key) { return this.values.get(key); }
  async put(key, value) { this.values.set(key, value); }
}

class DurableObjectNamespace {
  constructor(create) { this.create = create; this.objects = new Map(); }
  getByName(name) {
    if (!this.objects.has(name)) this.objects.set(name, this.create(name));
    return this.objects.get(name);
  }
}

let py;
let callMethod; // how workerd calls a method of an entrypoint instance (see boot)
const entries = {};
let env;
let logLines = [];

// The two modules the Workers runtime provides to the SDK, reduced to what the SDK touches.
const entrypointHelper = {
  cloudflareWorkersModule: {},
  doAnImport: async () => ({}),
  patch_env_helper: (x) => x,
  patchWaitUntil: (x) => x,
};

// Pyodide with the SDK installed (unpacked into site-packages: loadPackage leaves JS state that a
// memory snapshot cannot hold) and imported, as a worker's isolate has it before the worker's code.
async function loadRuntime(loadPyodide, pyodide, wheel, options) {
  const runtime = await loadPyodide({
    indexURL: pyodide + path.sep,
    stdout: (line) => logLines.push(line),
    stderr: (line) => process.stderr.write(line + "\n"),
    ...options,
  });
  if (options._loadSnapshot) return runtime;
  runtime.FS.writeFile("/tmp/sdk.whl", fs.readFileSync(wheel));
  runtime.runPython("import site, zipfile; zipfile.ZipFile('/tmp/sdk.whl').extractall(site.getsitepackages()[0])");
  runtime.FS.mkdirTree("/runtime");
  runtime.FS.writeFile("/runtime/_cloudflare_compat_flags.py", "def __getattr__(name):\n    return False\n");
  runtime.registerJsModule("_pyodide_entrypoint_helper", entrypointHelper);
  runtime.runPython("import sys; sys.path.insert(0, '/runtime'); import workers");
  return runtime;
}

function importEntry(runtime, worker, dir) {
  copyTree(runtime, dir, `/bundles/${worker}`);
  // Each bundle's entry.py is imported from its own bundle root, as its own worker would.
  runtime.runPython(`
import importlib.util, sys
sys.path.insert(0, "/bundles/${worker}")
spec = importlib.util.spec_from_file_location("${worker}_entry", "/bundles/${worker}/entry.py")
module = importlib.util.module_from_spec(spec)
sys.modules["${worker}_entry"] = module
spec.loader.exec_module(module)
sys.path.remove("/bundles/${worker}")`);
}

// A memory snapshot of an isolate, as workerd takes a dedicated snapshot at deploy (the default for
// our compatibility date): the only JS values it may hold are ones reached by a path from globalThis,
// and the entrypoint helper, which the runtime supplies again on restore.
function snapshotOf(runtime) {
  return runtime.makeMemorySnapshot({
    serializer: (value) => {
      if (value === entrypointHelper) return { entrypointHelper: true };
      throw new Error("a top-level variable holds a JS value a snapshot cannot keep: " + String(value).slice(0, 200));
    },
  });
}

function restore(loadPyodide, pyodide, wheel, snapshot) {
  return loadRuntime(loadPyodide, pyodide, wheel, {
    _loadSnapshot: snapshot,
    _snapshotDeserializer: () => entrypointHelper,
  });
}

// boot: import each entry from source into a fresh isolate (timed), take a snapshot of it, and serve
// from an isolate restored from that snapshot, as production does. Also timed: restoring a snapshot
// taken before any entry was imported, so the difference is what the entries add to a cold start.
async function boot({ pyodide, wheel, bundles, restore_rounds: restoreRounds = 0 }) {
  const { loadPyodide } = await import(pathToFileURL(path.join(pyodide, "pyodide.mjs")).href);
  const started = performance.now();
  const building = await loadRuntime(loadPyodide, pyodide, wheel, { _makeSnapshot: true });
  const loaded = performance.now();
  const importMs = {};
  for (const [worker, dir] of Object.entries(bundles)) {
    const t0 = performance.now();
    importEntry(building, worker, dir);
    importMs[worker] = performance.now() - t0;
  }
  const withEntries = snapshotOf(building);
  // Timing rounds (the benchmark asks for them; the tests do not): the comparison snapshot is taken
  // only then, since it costs a whole extra Pyodide load.
  const restoreMs = { sdk_only: [], with_entries: [] };
  if (restoreRounds > 0) {
    const sdkOnly = snapshotOf(await loadRuntime(loadPyodide, pyodide, wheel, { _makeSnapshot: true }));
    for (let round = 0; round < restoreRounds; round++) {
      for (const [name, snapshot] of [["sdk_only", sdkOnly], ["with_entries", withEntries]]) {
        const t0 = performance.now();
        await restore(loadPyodide, pyodide, wheel, snapshot);
        restoreMs[name].push(performance.now() - t0);
      }
    }
  }
  py = await restore(loadPyodide, pyodide, wheel, withEntries);
  // py is now an isolate restored from the snapshot with the entries imported.
  for (const worker of Object.keys(bundles)) entries[worker] = py.runPython(`import sys; sys.modules["${worker}_entry"]`);
  // workerd calls an entrypoint's methods through its introspection module's wrapper_func: arguments
  // through the SDK's python_from_rpc (a JS Request becomes a workers.Request), fetch with a relaxed
  // call, and the result through python_to_rpc (a workers.Response, or a JS Response as it is).
  callMethod = py.runPython(`
from inspect import isawaitable
from pyodide.code import relaxed_call
from workers.rpc import python_from_rpc, python_to_rpc

async def wrapper_func(relaxed, inst, prop, *args):
    method = getattr(inst, prop)
    py_args = [python_from_rpc(arg) for arg in args]
    result = relaxed_call(method, *py_args) if relaxed else method(*py_args)
    if isawaitable(result):
        return python_to_rpc(await result)
    return python_to_rpc(result)

wrapper_func`);
  return { pyodide_load_ms: loaded - started, import_ms: importMs, snapshot_restore_ms: restoreMs };
}

function copyTree(runtime, source, target) {
  runtime.FS.mkdirTree(target);
  for (const item of fs.readdirSync(source, { withFileTypes: true })) {
    const from = path.join(source, item.name);
    if (item.isDirectory()) copyTree(runtime, from, `${target}/${item.name}`);
    else runtime.FS.writeFile(`${target}/${item.name}`, fs.readFileSync(from));
  }
}

function reset({ env: vars, kv, ratelimits }) {
  env = { ...vars };
  for (const name of kv) env[name] = new KvNamespace();
  for (const [name, quota] of Object.entries(ratelimits)) env[name] = new Ratelimit(quota);
  env.RATE_LIMITER = new DurableObjectNamespace((name) => {
    const instance = entries.gateway.RateLimiterObject({ storage: new DurableObjectStorage(), id: { name } }, env);
    return { hit: (limit, windowMs) => callMethod(false, instance, "hit", limit, windowMs) };
  });
  // A new isolate: the composition roots build their dependencies again from this env.
  for (const entry of Object.values(entries)) entry.Default.deps = undefined; // Python None
  return {};
}

async function fetchOnce({ worker, method, url, headers, body_b64 }) {
  const pending = [];
  const ctx = { waitUntil: (promise) => pending.push(promise), passThroughOnException: () => {} };
  const init = { method, headers };
  if (body_b64 !== null && body_b64 !== undefined) init.body = Buffer.from(body_b64, "base64");
  const instance = entries[worker].Default(ctx, env);
  const response = await callMethod(true, instance, "fetch", new Request(url, init));
  const bytes = Buffer.from(await response.arrayBuffer());
  await Promise.allSettled(pending);
  instance.destroy();
  const answerHeaders = [];
  for (const [name, value] of response.headers) if (name !== "set-cookie") answerHeaders.push([name, value]);
  for (const cookie of response.headers.getSetCookie()) answerHeaders.push(["set-cookie", cookie]);
  return { status: response.status, headers: answerHeaders, body_b64: bytes.toString("base64") };
}

async function fetchCommand(message) {
  logLines = [];
  const reply = await fetchOnce(message);
  reply.logs = logLines;
  return reply;
}

function kvPut({ ns, key, value, ttl }) {
  return env[ns].put(key, value, ttl === null ? undefined : { expirationTtl: ttl }).then(() => ({}));
}

function kvDump() {
  const dump = {};
  for (const [name, binding] of Object.entries(env)) {
    if (!(binding instanceof KvNamespace)) continue;
    dump[name] = {};
    for (const key of [...binding.entries.keys()].sort()) {
      const entry = binding.live(key);
      if (entry) dump[name][key] = entry.value;
    }
  }
  return dump;
}

// Per-request CPU and wall time for the benchmark: each request runs `warmup` + `rounds` times. With
// `origin`, outbound fetches to that URL prefix are answered in-process, so only the edge is measured.
async function bench({ worker, requests, rounds, warmup, origin }) {
  const realFetch = globalThis.fetch;
  if (origin) {
    globalThis.fetch = async (url, init) =>
      String(url).startsWith(origin.prefix)
        ? new Response(origin.body, { status: origin.status, headers: origin.headers })
        : realFetch(url, init);
  }
  try {
    const results = [];
    for (const request of requests) {
      const cpu = [];
      const wall = [];
      for (let round = 0; round < warmup + rounds; round++) {
        const cpuStart = process.cpuUsage();
        const wallStart = performance.now();
        const reply = await fetchOnce({ worker, ...request });
        const used = process.cpuUsage(cpuStart);
        const elapsed = performance.now() - wallStart;
        if (reply.status !== request.expect) throw new Error(`${request.url}: status ${reply.status}`);
        if (round >= warmup) {
          wall.push(elapsed);
          cpu.push((used.user + used.system) / 1000);
        }
      }
      results.push({ cpu_ms: cpu, wall_ms: wall });
    }
    return { results };
  } finally {
    globalThis.fetch = realFetch;
    logLines = [];
  }
}

const commands = { boot, reset, fetch: fetchCommand, kv_put: kvPut, kv_dump: kvDump, bench };
const lines = readline.createInterface({ input: process.stdin });
for await (const line of lines) {
  const message = JSON.parse(line);
  try {
    protocolOut({ ok: true, result: await commands[message.op](message) });
  } catch (error) {
    protocolOut({ ok: false, error: String(error && error.stack ? error.stack : error).slice(0, 4000) });
  }
}
