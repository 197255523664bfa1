/**
 * compose/ cannot be run here (no Docker). What can be checked is checked: the compose
 * file parses, every service is wired as the topology needs (bridge in its
 * FreeSWITCH's network namespace, health checks on /ready, NATS routes), every file it
 * mounts or builds from exists, every bridge config passes `fs-event-bridge validate`
 * and agrees with the compose file, and the Dockerfile has the promised shape.
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { loadConfigFile } from '../../bridge/config/load.js';
import { validateConfig } from '../../bridge/cli/program.js';
import { RELAUNCH_ENV } from '../../bridge/transports/multicast/blowfish.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const COMPOSE_DIR = join(ROOT, 'compose');
const NODES = ['hub', 'sat1', 'sat2'];
const NATS = ['nats1', 'nats2', 'nats3'];

interface Service {
  image?: string;
  build?: { context: string; dockerfile: string };
  hostname?: string;
  command?: string[];
  network_mode?: string;
  networks?: Record<string, { ipv4_address?: string }>;
  volumes?: string[];
  depends_on?: Record<string, { condition: string }>;
  healthcheck?: { test: string[] };
}

const compose = parse(readFileSync(join(COMPOSE_DIR, 'docker-compose.yml'), 'utf8'), { merge: true }) as { services: Record<string, Service>; volumes: Record<string, unknown> };
const services = compose.services;

/** Host side of a bind mount, resolved against the compose directory; null for named volumes. */
function bindSource(volume: string): string | null {
  const source = volume.split(':')[0];
  return source.startsWith('.') || source.startsWith('/') ? resolve(COMPOSE_DIR, source) : null;
}

describe('compose/docker-compose.yml', () => {
  it('has a 3-node NATS JetStream cluster, a FreeSWITCH and a bridge per node', () => {
    expect(Object.keys(services).sort()).toEqual([...NATS, ...NODES.flatMap((n) => [`fs-${n}`, `bridge-${n}`])].sort());
    for (const name of NATS) {
      const command = services[name].command!;
      expect(command).toContain('-js');
      expect(command[command.indexOf('--cluster_name') + 1]).toBe('fsb');
      const routes = command[command.indexOf('--routes') + 1].split(',');
      expect(routes.sort()).toEqual(NATS.filter((n) => n !== name).map((n) => `nats://${n}:6222`));
      expect(services[name].healthcheck!.test.join(' ')).toContain('/healthz');
    }
  });

  it('runs each bridge in its FreeSWITCH container network namespace, health-checked on /ready, with its own config', () => {
    for (const node of NODES) {
      const bridge = services[`bridge-${node}`];
      expect(bridge.network_mode).toBe(`service:fs-${node}`);
      expect(bridge.networks).toBeUndefined();
      expect(bridge.healthcheck!.test.join(' ')).toContain('http://127.0.0.1:9464/ready');
      expect(Object.keys(bridge.depends_on!).sort()).toEqual([`fs-${node}`, ...NATS].sort());
      expect(bridge.volumes).toContain(`./config/${node}/event_bridge.conf.xml:/etc/fs-event-bridge/event_bridge.conf.xml:ro`);
      // The location consumer writes the same call_limit.db FreeSWITCH's mod_db reads.
      const dbVolume = `${node}-db:/var/lib/freeswitch/db`;
      expect(bridge.volumes).toContain(dbVolume);
      expect(services[`fs-${node}`].volumes).toContain(dbVolume);
      expect(Object.keys(compose.volumes)).toContain(`${node}-db`);
    }
  });

  it('references only files that exist (bind mounts, build context, Dockerfile)', () => {
    for (const [name, service] of Object.entries(services)) {
      for (const volume of service.volumes ?? []) {
        const source = bindSource(volume);
        if (source) expect(existsSync(source), `${name}: ${volume}`).toBe(true);
      }
      if (service.build) {
        const context = resolve(COMPOSE_DIR, service.build.context);
        expect(existsSync(join(context, 'package.json')), `${name} build context`).toBe(true);
        expect(existsSync(join(context, service.build.dockerfile)), `${name} Dockerfile`).toBe(true);
      }
    }
  });

  it('has bridge configs that pass `fs-event-bridge validate` and match the compose wiring', () => {
    for (const node of NODES) {
      const file = join(COMPOSE_DIR, 'config', node, 'event_bridge.conf.xml');
      // In-process: the command's own function (a CLI process per node added only start-up time,
      // 30 s on a busy machine; test/unit/cli.test.ts runs the real binary).
      const result = validateConfig(file);
      expect(result.stdout).toContain(`valid event_bridge.conf (node fs-${node}, transports multicast + nats)`);
      const { config } = loadConfigFile(file, {});
      const fs = services[`fs-${node}`];
      // node-name is FreeSWITCH's switchname, which defaults to the container hostname.
      expect(config.node.name).toBe(fs.hostname);
      expect(config.node.ipv4).toBe(fs.networks!.lan.ipv4_address);
      expect(config.multicast.interface).toBe(fs.networks!.lan.ipv4_address);
      expect(config.esl.host).toBe('127.0.0.1');
      expect(config.nats.servers).toEqual(NATS.map((n) => `nats://${n}:4222`));
      expect(config.nats.stream.replicas).toBe(3);
      expect(config.metrics.port).toBe(9464);
      expect(config.consumers.location.dbPath).toBe('/var/lib/freeswitch/db/call_limit.db');
    }
  });
});

describe('compose/Dockerfile', () => {
  const dockerfile = readFileSync(join(COMPOSE_DIR, 'Dockerfile'), 'utf8');
  const instructions = dockerfile.split('\n').filter((l) => /^[A-Z]+ /.test(l));

  it('is multi-stage on Node 20 LTS, installs production dependencies only and runs as a non-root user', () => {
    const froms = instructions.filter((l) => l.startsWith('FROM '));
    expect(froms.length).toBeGreaterThanOrEqual(2);
    for (const from of froms) expect(from).toMatch(/^FROM node:20[-.\w]* AS \w+$/);
    expect(dockerfile).toMatch(/RUN npm ci --omit=dev/);
    expect(dockerfile).toMatch(/COPY --from=build /);
    const user = instructions.filter((l) => l.startsWith('USER ')).at(-1);
    expect(user).toBeDefined();
    expect(user).not.toMatch(/USER (root|0)\b/);
  });

  it('runs the bridge with the mounted config, and copies only paths that exist', () => {
    // One process: the flags the CLI would otherwise relaunch itself with are given up front.
    expect(dockerfile).toContain('ENTRYPOINT ["node", "--openssl-legacy-provider", "--max-semi-space-size=8", "dist/bridge/cli/main.js"]');
    expect(dockerfile).toContain('CMD ["run", "--config", "/etc/fs-event-bridge/event_bridge.conf.xml"]');
    for (const [name, value] of Object.entries(RELAUNCH_ENV)) expect(instructions).toContain(`ENV ${name}=${value}`);
    for (const line of instructions.filter((l) => l.startsWith('COPY ') && !l.includes('--from'))) {
      const sources = line.split(/\s+/).slice(1, -1);
      for (const source of sources) expect(existsSync(join(ROOT, source)), line).toBe(true);
    }
    expect(existsSync(join(dirname(COMPOSE_DIR), 'package-lock.json'))).toBe(true);
  });
});
