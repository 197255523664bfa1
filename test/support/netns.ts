import { spawn, execFileSync, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

/**
 * Network namespaces for tests that need real multicast without touching the host's
 * interfaces (multicast never goes near eth0).
 *
 * Sockets belong to the namespace of the process that opens them and Node cannot
 * setns(), so whatever must live in a namespace runs as a child started with
 * `ip netns exec`. Children run the TypeScript sources directly: `nodeInNetns` starts
 * node with a tiny module loader (written to a temp dir at first use) that maps the
 * `.js` import specifiers to the `.ts` files and strips types with the TypeScript
 * compiler the project already depends on (transpileModule, per file, no type check,
 * cached across children). That needs no build step and cannot race with other test
 * files writing dist/.
 *
 * Every namespace is deleted by its `cleanup()`, and any left over at process exit
 * (failed test, thrown hook) by an exit handler. Names carry the pid so parallel test
 * files never collide.
 */

const created = new Set<string>();
let counter = 0;

function ip(...args: string[]): void {
  execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'] });
}

function deleteNetns(name: string): void {
  created.delete(name);
  try {
    ip('netns', 'del', name);
  } catch {
    // already gone
  }
}

process.once('exit', () => {
  for (const name of [...created]) deleteNetns(name);
});

function uniqueName(tag: string): string {
  counter++;
  // Namespace names are file names under /run/netns: keep them short and unique per process.
  return `fsb-${tag}-${process.pid}-${counter}`;
}

function addNetns(tag: string): string {
  const name = uniqueName(tag);
  ip('netns', 'add', name);
  created.add(name);
  ip('-n', name, 'link', 'set', 'lo', 'up');
  return name;
}

export interface Netns {
  readonly name: string;
  cleanup(): void;
}

/** One namespace whose loopback carries multicast (route 224.0.0.0/4 via lo). Send from 127.0.0.1. */
export function createNetns(tag: string): Netns {
  const name = addNetns(tag);
  ip('-n', name, 'link', 'set', 'lo', 'multicast', 'on');
  ip('-n', name, 'route', 'add', '224.0.0.0/4', 'dev', 'lo');
  return { name, cleanup: () => deleteNetns(name) };
}

export interface LinkedNetns {
  /** The namespace at the far end of the link. */
  readonly name: string;
  /** Our end's address: send from it (the multicast interface), with loopback off. */
  readonly localIp: string;
  /** The far end's address: join the group on it there. */
  readonly peerIp: string;
  cleanup(): void;
}

/**
 * A namespace linked to the caller's own by a veth pair, `group` routed over it on our
 * side and 224.0.0.0/4 on the far side: a sender here with loopback off reaches a
 * receiver there the way a bridge reaches the LAN, without hearing its own datagrams.
 * The caller must already be in a namespace of its own (the bench runner's): our end of
 * the link is created where the caller runs, and never in the host's namespace.
 */
export function createLinkedNetns(tag: string, group: string, subnet = 150 + (process.pid % 50)): LinkedNetns {
  // A namespace of our own holds lo and the links made here; the host's has its NICs.
  const foreign = readdirSync('/sys/class/net').filter((dev) => dev !== 'lo' && !dev.startsWith('fsb'));
  if (foreign.length > 0) throw new Error(`createLinkedNetns: run it inside a namespace of its own, not beside ${foreign.join(', ')}`);
  const name = addNetns(tag);
  // Interface names: at most 15 bytes, unique in the caller's namespace.
  const local = `fsb${process.pid % 100000}v${counter}`;
  const localIp = `10.${subnet}.${counter % 250}.1`;
  const peerIp = `10.${subnet}.${counter % 250}.2`;
  try {
    ip('link', 'add', local, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', name);
    ip('addr', 'add', `${localIp}/24`, 'dev', local);
    ip('link', 'set', local, 'up', 'multicast', 'on');
    ip('route', 'add', `${group}/32`, 'dev', local);
    ip('-n', name, 'addr', 'add', `${peerIp}/24`, 'dev', 'eth0');
    ip('-n', name, 'link', 'set', 'eth0', 'up', 'multicast', 'on');
    ip('-n', name, 'route', 'add', '224.0.0.0/4', 'dev', 'eth0');
  } catch (error) {
    deleteNetns(name);
    throw error;
  }
  // Deleting the namespace deletes its veth end, and with it ours.
  return { name, localIp, peerIp, cleanup: () => deleteNetns(name) };
}

export interface LanHost {
  /** Namespace of this host. */
  readonly netns: string;
  /** Its address on the LAN (use it as the multicast interface). */
  readonly ip: string;
}

export interface Lan {
  readonly hosts: readonly LanHost[];
  cleanup(): void;
}

/**
 * Several "hosts" on one LAN, like the capture setup: each host namespace has an
 * `eth0` veth whose peer sits on a Linux bridge inside a hub namespace (nothing is
 * created in the root namespace). Hosts get 10.<subnet>.0.<1..n>/24 and a multicast
 * route via eth0. Snooping is off so the bridge floods the group without a querier.
 */
export function createLan(tag: string, count: number, subnet = 200 + (process.pid % 50)): Lan {
  const hub = addNetns(`${tag}hub`);
  const hosts: LanHost[] = [];
  const names = [hub];
  const cleanup = () => names.forEach(deleteNetns);
  try {
    ip('-n', hub, 'link', 'add', 'br0', 'type', 'bridge', 'mcast_snooping', '0');
    ip('-n', hub, 'link', 'set', 'br0', 'up');
    for (let i = 1; i <= count; i++) {
      const host = addNetns(`${tag}${i}`);
      names.push(host);
      const address = `10.${subnet}.0.${i}`;
      ip('-n', hub, 'link', 'add', `p${i}`, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', host);
      ip('-n', hub, 'link', 'set', `p${i}`, 'master', 'br0', 'up');
      ip('-n', host, 'addr', 'add', `${address}/24`, 'dev', 'eth0');
      ip('-n', host, 'link', 'set', 'eth0', 'up', 'multicast', 'on');
      ip('-n', host, 'route', 'add', '224.0.0.0/4', 'dev', 'eth0');
      hosts.push({ netns: host, ip: address });
    }
  } catch (error) {
    cleanup();
    throw error;
  }
  return { hosts, cleanup };
}

/** Spawn `cmd args` inside a namespace. */
export function runInNetns(netns: string, cmd: string, args: readonly string[], options: SpawnOptions = {}): ChildProcess {
  return spawn('ip', ['netns', 'exec', netns, cmd, ...args], { stdio: ['pipe', 'pipe', 'inherit'], ...options });
}

let loaderUrl: string | null = null;

/**
 * Transpiled files, shared by every child of every test process (keyed by path, mtime
 * and size, so an edited file is transpiled again). Loading the TypeScript compiler
 * costs a child 0.5 s of CPU, and on a loaded 2-core machine that was over 10 s of
 * wall time, which made children miss their ready timeouts; with the cache a child
 * loads TypeScript only for a file no earlier child has seen.
 */
const TRANSPILE_CACHE = join(tmpdir(), `fsb-ts-cache-${process.getuid?.() ?? 0}`);
/** Bumped whenever the loader's output for the same source would change. */
const TRANSPILE_VERSION = 'esnext-es2022-1';

/** Loader that lets plain node run this repository's .ts files (see the file comment). */
export function typescriptLoader(): string {
  if (loaderUrl) return loaderUrl;
  const dir = mkdtempSync(join(tmpdir(), 'fsb-ts-loader-'));
  mkdirSync(TRANSPILE_CACHE, { recursive: true });
  const typescript = pathToFileURL(createRequire(import.meta.url).resolve('typescript')).href;
  const hooks = join(dir, 'hooks.mjs');
  writeFileSync(
    hooks,
    `import { readFile, writeFile, rename } from 'node:fs/promises';
import { existsSync, statSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
const CACHE = ${JSON.stringify(TRANSPILE_CACHE)};
let ts = null;
export async function resolve(specifier, context, next) {
  if (specifier.startsWith('.') && specifier.endsWith('.js') && context.parentURL?.startsWith('file:')) {
    const url = new URL(specifier.slice(0, -3) + '.ts', context.parentURL);
    if (existsSync(fileURLToPath(url))) return { url: url.href, format: 'module', shortCircuit: true };
  }
  return next(specifier, context);
}
export async function load(url, context, next) {
  if (!url.endsWith('.ts')) return next(url, context);
  const fileName = fileURLToPath(url);
  const stat = statSync(fileName);
  const key = createHash('sha1').update(${JSON.stringify(TRANSPILE_VERSION)} + '\\0' + fileName + '\\0' + stat.mtimeMs + '\\0' + stat.size).digest('hex');
  const cached = join(CACHE, key + '.js');
  try {
    return { format: 'module', source: await readFile(cached, 'utf8'), shortCircuit: true };
  } catch {
    // not transpiled yet
  }
  ts ??= (await import(${JSON.stringify(typescript)})).default;
  const { outputText } = ts.transpileModule(await readFile(fileName, 'utf8'), {
    fileName,
    compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022 },
  });
  // Written whole, then renamed: a child reading concurrently sees the old state or the whole file.
  const partial = cached + '.' + process.pid + '.tmp';
  await writeFile(partial, outputText);
  await rename(partial, cached);
  return { format: 'module', source: outputText, shortCircuit: true };
}
`,
  );
  const register = join(dir, 'register.mjs');
  writeFileSync(register, `import { register } from 'node:module';\nregister(${JSON.stringify(pathToFileURL(hooks).href)});\n`);
  process.once('exit', () => rmSync(dir, { recursive: true, force: true }));
  loaderUrl = pathToFileURL(register).href;
  return loaderUrl;
}

/** Run a TypeScript file of this repository with node inside a namespace (Blowfish enabled). */
export function nodeInNetns(netns: string, script: string, args: readonly string[] = [], options: SpawnOptions = {}): ChildProcess {
  return runInNetns(netns, process.execPath, ['--openssl-legacy-provider', '--import', typescriptLoader(), script, ...args], options);
}

/**
 * Drives a child that speaks JSON lines (commands on stdin, reports on stdout):
 * `waitFor` resolves with the first report matching a predicate, including ones that
 * arrived before the call.
 */
export class JsonLineProcess<Report extends { type: string } = { type: string; [key: string]: unknown }> {
  readonly reports: Report[] = [];
  private readonly waiters: { match: (r: Report) => boolean; from: number; resolve: (r: Report) => void }[] = [];
  private buffered = '';
  private readonly exited: Promise<number | null>;

  constructor(readonly child: ChildProcess) {
    child.stdout!.setEncoding('utf8');
    child.stdout!.on('data', (chunk: string) => {
      this.buffered += chunk;
      let eol: number;
      while ((eol = this.buffered.indexOf('\n')) >= 0) {
        const line = this.buffered.slice(0, eol);
        this.buffered = this.buffered.slice(eol + 1);
        if (line.trim() !== '') this.push(JSON.parse(line) as Report);
      }
    });
    this.exited = new Promise((resolve) => child.once('exit', (code) => resolve(code)));
  }

  send(command: object): void {
    this.child.stdin!.write(JSON.stringify(command) + '\n');
  }

  /** First report matching `match` at or after index `from` (default: any so far). */
  waitFor(match: (r: Report) => boolean, timeoutMs = 10_000, from = 0): Promise<Report> {
    const found = this.reports.slice(from).find(match);
    if (found) return Promise.resolve(found);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no matching report within ${timeoutMs} ms; last: ${JSON.stringify(this.reports.at(-1))}`)), timeoutMs);
      this.waiters.push({ match, from, resolve: (r) => (clearTimeout(timer), resolve(r)) });
    });
  }

  /** Send a command and wait for the next report of `type`. */
  async request(command: object, type: string, timeoutMs = 10_000): Promise<Report> {
    const from = this.reports.length;
    this.send(command);
    return this.waitFor((r) => r.type === type, timeoutMs, from);
  }

  /** Close stdin (the child exits on its own) and wait; kill after a grace period. */
  async stop(graceMs = 3_000): Promise<void> {
    this.child.stdin!.end();
    const timer = setTimeout(() => this.child.kill('SIGKILL'), graceMs);
    await this.exited;
    clearTimeout(timer);
  }

  private push(report: Report): void {
    const index = this.reports.push(report) - 1;
    for (let i = this.waiters.length - 1; i >= 0; i--) {
      const waiter = this.waiters[i];
      if (index >= waiter.from && waiter.match(report)) {
        this.waiters.splice(i, 1);
        waiter.resolve(report);
      }
    }
  }
}
