import { FORMATS, PARAMS, envName } from './schema.js';

const SECTION_TITLES: Record<string, string> = {
  settings: '<settings>: node identity',
  esl: '<esl>: the local FreeSWITCH event socket',
  inject: '<inject>: remote events into the local FreeSWITCH',
  bindings: '<bindings>: which events each transport carries',
  multicast: '<multicast>: native mod_event_multicast datagrams',
  nats: '<nats>: NATS and JetStream',
  dedup: '<dedup>: cross-transport duplicate suppression',
  'consumer:blf': '<consumer name="blf">: BLF lamps for remote calls',
  'consumer:location': '<consumer name="location">: registration location table',
  metrics: '<metrics>: Prometheus and health endpoints',
};

/** docs/config-reference.md, generated from the schema (`fs-event-bridge config-reference`). */
export function renderConfigReference(): string {
  let out = '# Configuration reference\n\n';
  out += 'Generated from `bridge/config/schema.ts` by `fs-event-bridge config-reference`; a test keeps this file in sync.\n\n';
  out += 'File: `event_bridge.conf.xml`, FreeSWITCH style: `<configuration name="event_bridge.conf">` with one element per section holding `<param name=".." value=".."/>`; consumers sit in `<consumers><consumer name="blf">`. ';
  out += 'Every param can be overridden by the environment variable shown. Durations take `ms`, `s`, `m`, `h`, `d` (a bare number is milliseconds); sizes take `KB`, `MB`, `GB` (1024-based); booleans take FreeSWITCH\'s words (yes/no, true/false, on/off). Every number has a range and every text a format, checked by `validate` and `run` alike; a text param whose default is not empty cannot be set empty.\n\n';
  out += 'A legacy `event_multicast.conf.xml` is read unchanged: `address`, `port`, `bindings`, `ttl`, `loopback`, `psk` (and `source_address`) fill the `<multicast>` section and `<bindings> multicast`; NATS and the consumers stay off, everything else takes the defaults below.\n';
  for (const section of Object.keys(SECTION_TITLES)) {
    out += `\n## ${SECTION_TITLES[section]}\n\n`;
    for (const spec of PARAMS.filter((p) => p.section === section)) {
      out += `### \`${spec.name}\`\n\n${spec.description}\n\n`;
      const rows: [string, string][] = [
        ['type', spec.type + (spec.values ? ` (${spec.values.join(' \\| ')})` : '')],
        ['default', spec.default === '' ? '(empty)' : `\`${spec.default}\``],
      ];
      if (spec.unit) rows.push(['unit', spec.unit]);
      if (spec.min !== undefined || spec.max !== undefined) rows.push(['range', `${spec.zeroDisables ? '0 (off), or ' : ''}${spec.min ?? ''} … ${spec.max ?? ''}`]);
      if (spec.format) rows.push(['format', FORMATS[spec.format].description + (spec.type === 'list' ? ', per entry' : spec.type === 'map' ? ', per value' : '')]);
      if (spec.example) rows.push(['example', `\`${spec.example}\``]);
      rows.push(['applies', spec.appliesTo ?? 'always']);
      rows.push(['environment', `\`${envName(spec)}\``]);
      out += '| | |\n| --- | --- |\n' + rows.map(([k, v]) => `| ${k} | ${v} |`).join('\n') + '\n\n';
    }
  }
  return out;
}
