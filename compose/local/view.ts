/**
 * The demo's terminal view: per node its peers, the BLF lamp per user, its location
 * table and the events per second each transport brought in; the scenario's last
 * steps below. Plain ANSI (home + clear), redrawn by the caller about once a second.
 */
import type { LocalCluster } from './cluster.js';
import { lampsOf } from './scenario.js';

const TRANSPORTS = ['multicast', 'nats'] as const;

function sumMetric(text: string, name: string, label: string): number {
  let total = 0;
  for (const line of text.split('\n')) if (line.startsWith(`${name}{`) && line.includes(label)) total += Number(line.slice(line.lastIndexOf(' ') + 1));
  return total;
}

export class ClusterView {
  private readonly previous = new Map<string, { at: number; value: number }>();
  private readonly steps: string[] = [];

  constructor(
    private readonly cluster: LocalCluster,
    private readonly title: string,
  ) {}

  step(line: string): void {
    this.steps.push(`${new Date().toISOString().slice(11, 19)}  ${line}`);
    if (this.steps.length > 8) this.steps.shift();
  }

  /** events/s since the last call for this key. */
  private rate(key: string, value: number): string {
    const now = Date.now();
    const last = this.previous.get(key);
    this.previous.set(key, { at: now, value });
    if (!last || now === last.at) return '   -';
    return ((value - last.value) / ((now - last.at) / 1000)).toFixed(1).padStart(5);
  }

  async render(): Promise<string> {
    const lines: string[] = [this.title, ''];
    for (const node of this.cluster.nodes.values()) {
      const running = node.bridgeRunning;
      const [peers, metrics, ready] = running ? await Promise.all([node.peers(), node.metricsText(), node.ready()]) : [[], '', false];
      const header = `${node.id.padEnd(5)} ${node.spec.switchname} ${node.spec.ip.padEnd(12)} bridge: ${running ? (ready ? 'ready' : 'starting') : 'DOWN'}`;
      lines.push(header);
      const peerText = peers.map((p) => `${p.name} ${p.up ? 'up' : 'DOWN'}`).join(', ') || 'none';
      lines.push(`  peers     ${peerText}`);
      const rates = TRANSPORTS.map((t) => `${t} ${running ? this.rate(`${node.id}/${t}`, sumMetric(metrics, 'fsb_events_in_total', `transport="${t}"`)) : '    -'}/s`).join('   ');
      lines.push(`  in        ${rates}   (out ${running ? this.rate(`${node.id}/out`, sumMetric(metrics, 'fsb_events_out_total', 'transport=')) : '    -'}/s)`);
      const lamps = [...lampsOf(node)].map(([user, lamp]) => `${user} ${lamp === 'busy' ? '[BUSY]' : lamp === 'ringing' ? '[RING]' : '[ -- ]'}`).join('  ');
      lines.push(`  lamps     ${lamps || 'no remote calls yet'}`);
      const rows = node.locationRows().map((r) => `${r.user}@${r.realm} -> ${r.data} (${r.hostname})`);
      lines.push(`  location  ${rows.length ? rows[0] : 'empty'}`);
      for (const row of rows.slice(1)) lines.push(`            ${row}`);
      lines.push('');
    }
    lines.push('scenario:');
    for (const step of this.steps) lines.push(`  ${step}`);
    return lines.join('\n');
  }
}
