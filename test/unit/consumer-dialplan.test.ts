import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { XMLParser, XMLValidator } from 'fast-xml-parser';
import { describe, expect, it } from 'vitest';

const FILE = fileURLToPath(new URL('../../config/dialplan/cluster_location.xml', import.meta.url));

interface Action {
  application: string;
  data: string;
  inline?: string;
}
interface Condition {
  field: string;
  expression: string;
  action?: Action[];
}
interface Extension {
  name: string;
  continue?: string;
  condition: Condition[];
}

function extensions(): Extension[] {
  const xml = readFileSync(FILE, 'utf8');
  expect(XMLValidator.validate(xml)).toBe(true);
  const parser = new XMLParser({ ignoreAttributes: false, attributeNamePrefix: '', isArray: (name) => ['extension', 'condition', 'action'].includes(name) });
  return parser.parse(xml).include.extension as Extension[];
}

function byName(name: string): Extension {
  const ext = extensions().find((e) => e.name === name);
  expect(ext, name).toBeDefined();
  return ext!;
}

const actions = (ext: Extension) => ext.condition.flatMap((c) => c.action ?? []);
const last = (ext: Extension) => ext.condition[ext.condition.length - 1];

describe('example cluster dialplan', () => {
  it("looks the callee up with mod_db's select, inline, and lets the next extensions run", () => {
    const lookup = extensions()[0];
    expect(lookup.name).toBe('cluster_location_lookup');
    expect(lookup.continue).toBe('true');
    const set = actions(lookup).find((a) => a.application === 'set')!;
    expect(set.data).toBe('cluster_location=${db(select/${domain_name}/LOCATION_${destination_number})}');
    expect(set.inline).toBe('true');
  });

  it('bridges locally when the row names this node', () => {
    const local = byName('cluster_location_local');
    expect(last(local)).toMatchObject({ field: '${cluster_location}', expression: '^${local_ip_v4}$' });
    expect(actions(local).find((a) => a.application === 'bridge')?.data).toBe('user/${destination_number}@${domain_name}');
  });

  it("routes to the other node's address, once", () => {
    const remote = byName('cluster_location_remote');
    expect(new RegExp(last(remote).expression).test('10.99.0.2')).toBe(true);
    expect(new RegExp(last(remote).expression).test('10.99.0.2:5070')).toBe(true);
    expect(new RegExp(last(remote).expression).test('')).toBe(false);
    expect(remote.condition.some((c) => c.field === '${sip_h_X-FSB-Routed}' && c.expression === '^$')).toBe(true);
    const names = actions(remote).map((a) => a.application);
    expect(names.indexOf('export')).toBeLessThan(names.indexOf('bridge'));
    expect(actions(remote).find((a) => a.application === 'bridge')?.data).toBe('sofia/internal/${destination_number}@${cluster_location}');
  });

  it('falls back to voicemail or 480 when mod_db answers empty', () => {
    const voicemail = byName('cluster_location_missing_voicemail');
    const missing = byName('cluster_location_missing');
    for (const ext of [voicemail, missing]) expect(ext.condition.some((c) => c.field === '${cluster_location}' && c.expression === '^$')).toBe(true);
    expect(actions(voicemail).map((a) => a.application)).toContain('voicemail');
    expect(actions(missing)).toEqual([{ application: 'respond', data: '480 Temporarily Unavailable' }]);
    // Voicemail is tried before the bare 480 (the dialplan runs the first matching extension).
    const order = extensions().map((e) => e.name);
    expect(order.indexOf('cluster_location_missing_voicemail')).toBeLessThan(order.indexOf('cluster_location_missing'));
  });

  it('every branch is guarded by the same number pattern as the lookup', () => {
    const pattern = extensions()[0].condition[0].expression;
    for (const ext of extensions()) expect(ext.condition[0]).toMatchObject({ field: 'destination_number', expression: pattern });
  });
});
