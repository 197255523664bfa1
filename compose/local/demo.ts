/**
 * `npm run demo`: starts the local hub-and-satellites cluster (compose/local/cluster.ts),
 * plays the scripted scenario (scenario.ts) and shows the cluster live, redrawn every
 * second, until Ctrl-C. `npm run demo -- --once` plays the scenario without the live
 * view and exits 0 when every node ends in the expected state, 1 naming each failed check.
 *
 * Options: --once, --layout auto|netns|single (single: no namespaces, NATS only),
 * --pause <ms> between steps (default 2000, 0 with --once).
 */
import { LocalCluster } from './cluster.js';
import { checkFinalState, playScenario } from './scenario.js';
import { ClusterView } from './view.js';

interface DemoArgs {
  once: boolean;
  layout: 'auto' | 'netns' | 'single';
  pauseMs: number;
}

function parseArgs(argv: string[]): DemoArgs {
  const args: DemoArgs = { once: false, layout: 'auto', pauseMs: -1 };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--once') args.once = true;
    else if (arg === '--layout' && ['auto', 'netns', 'single'].includes(argv[i + 1])) args.layout = argv[++i] as DemoArgs['layout'];
    else if (arg === '--pause' && /^\d+$/.test(argv[i + 1] ?? '')) args.pauseMs = Number(argv[++i]);
    else throw new Error(`unknown argument ${JSON.stringify(arg)}; usage: demo [--once] [--layout auto|netns|single] [--pause ms]`);
  }
  if (args.pauseMs < 0) args.pauseMs = args.once ? 0 : 2_000;
  return args;
}

const say = (line: string) => process.stdout.write(line + '\n');

async function main(): Promise<number> {
  const args = parseArgs(process.argv.slice(2));
  say('fs-event-bridge demo: starting a hub and two satellites (simulated FreeSWITCH + bridge each) and a 3-server NATS cluster...');
  const startedAt = Date.now();
  const cluster = await LocalCluster.start({ layout: args.layout, logLevel: 'warn', onNotice: (m) => say(`NOTE: ${m}`) });
  const transports = [cluster.multicast && 'multicast', cluster.nats && 'NATS'].filter(Boolean).join(' + ');
  say(`cluster up in ${((Date.now() - startedAt) / 1000).toFixed(1)} s: ${cluster.layout === 'netns' ? 'one network namespace per node on one LAN' : 'all nodes on this host\'s loopback'}, ${transports}`);
  for (const node of cluster.nodes.values()) say(`board of ${node.id} (${node.spec.switchname}): ${node.boardUrl}`);

  let stopping = false;
  let redraw: NodeJS.Timeout | null = null;
  const stop = async (code: number): Promise<number> => {
    if (stopping) return code;
    stopping = true;
    if (redraw) clearInterval(redraw);
    say('stopping the cluster...');
    await cluster.dispose();
    say('stopped.');
    return code;
  };
  const interrupted = new Promise<number>((resolve) => {
    const onSignal = () => void stop(0).then(resolve);
    process.once('SIGINT', onSignal);
    process.once('SIGTERM', onSignal);
  });

  const view = new ClusterView(cluster, `fs-event-bridge demo (${cluster.layout}, ${transports})  Ctrl-C to stop`);
  const live = !args.once && process.stdout.isTTY;
  const log = (line: string) => {
    view.step(line);
    if (!live) say(`- ${line}`);
  };
  if (live) {
    const draw = () =>
      void view.render().then(
        (screen) => !stopping && process.stdout.write(`\x1b[H\x1b[2J${screen}\n`),
        () => undefined,
      );
    draw();
    redraw = setInterval(draw, 1_000);
  }

  const played = playScenario(cluster, { pauseMs: args.pauseMs, log }).then(
    () => null,
    (err: Error) => err,
  );
  const outcome = await Promise.race([played, interrupted.then(() => 'interrupted' as const)]);
  if (outcome === 'interrupted') return interrupted;
  if (outcome) log(`scenario stopped: ${outcome.message}`);
  const checks = await checkFinalState(cluster);
  const failed = checks.filter((c) => !c.ok);

  if (args.once) {
    say('');
    say(await view.render());
    say('');
    for (const check of checks) say(`${check.ok ? 'ok  ' : 'FAIL'}  ${check.name}: ${check.detail}`);
    if (outcome) say(`FAIL  scenario: ${outcome.message}`);
    const ok = failed.length === 0 && !outcome;
    say(ok ? `every node ended in the expected state (${((Date.now() - startedAt) / 1000).toFixed(1)} s)` : `${failed.length + (outcome ? 1 : 0)} check(s) failed`);
    return stop(ok ? 0 : 1);
  }
  log(failed.length === 0 && !outcome ? 'scenario done: every node is in the expected state. Ctrl-C to stop.' : `scenario done with ${failed.length} failed check(s): ${failed.map((c) => c.name).join('; ')}`);
  return interrupted;
}

main().then(
  (code) => process.exit(code),
  (err: Error) => {
    process.stderr.write(`demo: ${err.message}\n`);
    process.exit(1);
  },
);
