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

  it("routes a user registered on another node to that node's address, once, in owner mode only", () => {
    const remote = byName('cluster_location_remote');
    // What mod_dialplan_xml compares with, once it expanded this node's variables.
    const expression = last(remote).expression.replace('${local_ip_v4}', '10.99.0.1').replace('$${internal_sip_port}', '5060');
    const remoteRow = new RegExp(expression);
    for (const row of ['10.99.0.2', '10.99.0.2:5070', '10.99.0.1:5070']) expect(remoteRow.test(row), row).toBe(true);
    // This node's own row (with or without its port) and no row at all go on to Local_Extension.
    for (const row of ['10.99.0.1', '10.99.0.1:5060', '', 'sofia/internal/x']) expect(remoteRow.test(row), row).toBe(false);
    expect(remote.condition.some((c) => c.field === '${sip_h_X-FSB-Routed}' && c.expression === '^$')).toBe(true);
    const mode = remote.condition.find((c) => c.field === '${cluster_routing}')!;
    expect(['owner', ''].every((v) => new RegExp(mode.expression).test(v))).toBe(true);
    expect(new RegExp(mode.expression).test('direct')).toBe(false);
    const names = actions(remote).map((a) => a.application);
    expect(names.indexOf('export')).toBeLessThan(names.indexOf('bridge'));
    expect(actions(remote).find((a) => a.application === 'bridge')?.data).toBe('sofia/internal/${destination_number}@${cluster_location}');
    expect(actions(remote).at(-1)).toEqual({ application: 'respond', data: '480 Temporarily Unavailable' });
  });

  it('leaves local and unknown users to Local_Extension: only the lookup and the remote branch', () => {
    expect(extensions().map((e) => e.name)).toEqual(['cluster_location_lookup', 'cluster_location_remote']);
  });

  it('every branch is guarded by the same number pattern as the lookup', () => {
    const pattern = extensions()[0].condition[0].expression;
    for (const ext of extensions()) expect(ext.condition[0]).toMatchObject({ field: 'destination_number', expression: pattern });
  });
});
