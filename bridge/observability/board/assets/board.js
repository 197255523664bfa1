/**
 * The cluster board page. One EventSource carries everything: a snapshot when it
 * connects, then changes (lamps at once, registrations coalesced, peers, status,
 * traffic and drops once a second). Nothing here polls: the only timer re-renders
 * relative times ("3 s ago") from what already arrived. Text from the cluster (user
 * names, node names) only ever goes into textContent, never into markup.
 */
import { SERIES, TrafficChart } from './chart.js';

const $ = (id) => document.getElementById(id);

const state = {
  /** server clock minus ours, from the status frames (the page may run on another machine). */
  offset: 0,
  lamps: new Map(),
  registrations: { rows: [], total: 0 },
  peers: [],
  rowLimit: 500,
  filter: '',
  /** Lamp changes as they were drawn: ms from the event reaching the bridge to the tile on screen. */
  lampLatencies: [],
};
window.fsbBoard = state;

const serverNow = () => Date.now() + state.offset;

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === 'dataset') Object.assign(node.dataset, value);
    else if (key === 'className') node.className = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return node;
}

function duration(ms) {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${s % 60} s`;
  const h = Math.floor(m / 60);
  return h < 48 ? `${h} h ${m % 60} min` : `${Math.floor(h / 24)} d`;
}

function clock(ms) {
  return new Date(ms - state.offset).toLocaleTimeString([], { hour12: false });
}

function setState(id, text, level) {
  const node = $(id);
  node.hidden = text === null;
  if (text === null) return;
  node.textContent = text;
  node.className = `state${level ? ` ${level}` : ''}`;
}

// Lamps

const LAMP_ORDER = { busy: 0, ringing: 1, idle: 2 };

function lampText(lamp) {
  return `on ${lamp.node} · since ${clock(lamp.since)} (${duration(serverNow() - lamp.since)})`;
}

function renderLamps() {
  const list = $('lamps');
  const lamps = [...state.lamps.values()].sort((a, b) => a.user.localeCompare(b.user));
  $('lamps-empty').hidden = lamps.length > 0;
  const existing = new Map([...list.children].map((li) => [li.dataset.user, li]));
  let previous = null;
  for (const lamp of lamps) {
    let li = existing.get(lamp.user);
    existing.delete(lamp.user);
    if (!li) {
      li = el('li', { className: 'lamp', tabindex: '0', dataset: { user: lamp.user } }, el('div', { className: 'user' }), el('div', { className: 'state-text' }), el('div', { className: 'where' }));
    }
    li.dataset.state = lamp.state;
    li.dataset.node = lamp.node;
    li.dataset.since = String(lamp.since);
    // A line may break before the realm, not inside the name.
    const at = lamp.user.indexOf('@');
    if (at > 0) li.children[0].replaceChildren(lamp.user.slice(0, at), el('wbr'), lamp.user.slice(at));
    else li.children[0].textContent = lamp.user;
    li.children[1].textContent = lamp.state;
    li.children[2].textContent = lampText(lamp);
    li.setAttribute('aria-label', `${lamp.user}: ${lamp.state}, ${lampText(lamp)}`);
    if (li.previousElementSibling !== previous || li.parentNode !== list) {
      if (previous) previous.after(li);
      else list.prepend(li);
    }
    previous = li;
  }
  for (const li of existing.values()) li.remove();
  list.dataset.busy = String(lamps.filter((l) => LAMP_ORDER[l.state] === 0).length);
}

function onLamps(lamps, live) {
  for (const lamp of lamps) state.lamps.set(lamp.user, lamp);
  renderLamps();
  if (!live) return;
  // Measured after the tiles changed, on this machine's clock (meaningful when the browser runs on the bridge's host,
  // as in the tests); never shown.
  requestAnimationFrame(() => {
    const drawn = Date.now();
    for (const lamp of lamps) state.lampLatencies.push(drawn - lamp.since);
    if (state.lampLatencies.length > 1000) state.lampLatencies.splice(0, state.lampLatencies.length - 1000);
  });
}

// Registrations

function peerByName(name) {
  return state.peers.find((p) => p.name === name);
}

function renderRegistrations() {
  const body = $('registrations').tBodies[0];
  const { rows, total } = state.registrations;
  body.replaceChildren(
    ...rows.map((r) => {
      const legacy = peerByName(r.node)?.legacy === true;
      const who = el('td', {}, `${r.user}@${r.realm}`);
      const node = el('td', {}, r.node);
      if (legacy) node.append(el('span', { className: 'badge', title: 'heard only over multicast from a mod_event_multicast node' }, 'legacy multicast'));
      const tr = el('tr', { dataset: { user: r.user, node: r.node, legacy: String(legacy) } }, who, node, el('td', {}, r.address), el('td', {}, r.transport ?? '—'), el('td', { className: 'expires', dataset: { expiresAt: String(r.expiresAt ?? '') } }, expiresText(r.expiresAt)));
      return tr;
    }),
  );
  labelCells($('registrations'));
  const shown = rows.length;
  $('registrations-count').textContent = state.filter ? `${total} matching${shown < total ? `, first ${shown} shown` : ''}` : `${total}${shown < total ? `, first ${shown} shown: filter to see others` : ''}`;
}

/** Column names on each cell, for the one-card-per-row layout of a phone screen. */
function labelCells(table) {
  const names = [...table.tHead.rows[0].cells].map((th) => th.textContent);
  for (const row of table.tBodies[0].rows) [...row.cells].forEach((td, i) => td.setAttribute('data-label', names[i] ?? ''));
}

function expiresText(expiresAt) {
  return expiresAt === null ? 'never' : duration(expiresAt - serverNow());
}

// Peers

function renderPeers() {
  const body = $('peers').tBodies[0];
  $('peers-empty').hidden = state.peers.length > 0;
  $('peers').hidden = state.peers.length === 0;
  body.replaceChildren(
    ...state.peers.map((p) => {
      const age = p.heartbeatAgeMs === null ? 'never' : `${duration(p.heartbeatAgeMs)} ago`;
      const gaps = p.legacy ? (p.gapsUpperBound > 0 ? `unknown (≤ ${p.gapsUpperBound} by Event-Sequence)` : 'unknown') : String(p.gapsLost);
      const name = el('td', {}, p.name);
      if (p.legacy) name.append(el('span', { className: 'badge' }, 'legacy'));
      return el(
        'tr',
        { className: p.up ? 'up' : 'down', dataset: { peer: p.name, up: String(p.up) } },
        name,
        el('td', { className: 'peer-state' }, p.up ? 'up' : 'DOWN'),
        el('td', {}, age),
        el('td', {}, p.transports.join(', ') || '—'),
        el('td', { className: 'num' }, String(p.eventsPerSecond)),
        el('td', { className: 'num' }, gaps),
        el('td', { className: 'num' }, String(p.dropped)),
      );
    }),
  );
  labelCells($('peers'));
}

// Drops

function renderDrops(drops) {
  const body = $('drops').tBodies[0];
  $('drops-empty').hidden = drops.length > 0;
  $('drops').hidden = drops.length === 0;
  body.replaceChildren(
    ...drops.map((d) => el('tr', { className: d.lastMinute > 0 ? 'drop-live' : '' }, el('td', {}, d.component), el('td', {}, d.cause), el('td', { className: 'num' }, String(d.total)), el('td', { className: 'num' }, String(d.lastMinute)))),
  );
  labelCells($('drops'));
}

// Status

const offsets = [];

function onStatus(status) {
  // The sample that travelled fastest is the closest to the true offset.
  offsets.push(status.now - Date.now());
  if (offsets.length > 30) offsets.shift();
  state.offset = Math.max(...offsets);
  const esl = status.esl;
  if (esl !== undefined) setState('esl', `ESL ${esl}`, esl === 'connected' ? '' : 'bad');
  const nats = status.nats;
  setState('nats', nats === undefined || nats === 'off' ? null : `NATS ${nats}`, nats === 'connected' ? '' : 'bad');
}

// Traffic

const chart = new TrafficChart($('traffic'), 10 * 60_000);

function renderLegend() {
  $('legend').replaceChildren(
    ...SERIES.map((s) => {
      const swatch = el('i');
      swatch.style.background = s.color;
      return el('li', { dataset: { series: s.key } }, swatch, `${s.label} ${chart.latest(s.key)}/s`);
    }),
  );
}

// The stream

let source = null;

function connect() {
  source?.close();
  const query = state.filter ? `?filter=${encodeURIComponent(state.filter)}` : '';
  source = new EventSource(`events${query}`);
  const on = (type, handler) => source.addEventListener(type, (message) => handler(JSON.parse(message.data)));
  source.onopen = () => setState('link', 'live', '');
  source.onerror = () => setState('link', 'reconnecting…', 'bad');
  on('hello', (hello) => {
    $('node').textContent = hello.node;
    $('role').textContent = `${hello.role} · cluster ${hello.cluster}`;
    document.title = `${hello.node} · fs-event-bridge board`;
    state.rowLimit = hello.rowLimit;
    $('lamps-section').hidden = !hello.lamps;
    $('registrations-section').hidden = !hello.registrations;
  });
  on('status', onStatus);
  on('lamps', (lamps) => {
    state.lamps.clear();
    onLamps(lamps, false);
  });
  on('lamp', (lamps) => onLamps(lamps, true));
  on('registrations', (registrations) => {
    state.registrations = registrations;
    renderRegistrations();
  });
  on('peers', (peers) => {
    const legacyBefore = state.peers.filter((p) => p.legacy).map((p) => p.name).join();
    state.peers = peers;
    renderPeers();
    if (peers.filter((p) => p.legacy).map((p) => p.name).join() !== legacyBefore) renderRegistrations();
  });
  on('traffic', (traffic) => {
    chart.load(traffic.t, traffic.values);
    renderLegend();
  });
  on('sample', (sample) => {
    chart.push(sample.t, sample.values);
    renderLegend();
  });
  on('drops', renderDrops);
}

let filterTimer = null;
$('filter').addEventListener('input', (event) => {
  clearTimeout(filterTimer);
  filterTimer = setTimeout(() => {
    state.filter = event.target.value.trim();
    connect();
  }, 250);
});

setInterval(() => {
  for (const li of $('lamps').children) {
    const lamp = state.lamps.get(li.dataset.user);
    if (lamp) li.children[2].textContent = lampText(lamp);
  }
  for (const td of document.querySelectorAll('#registrations td.expires')) td.textContent = expiresText(td.dataset.expiresAt === '' ? null : Number(td.dataset.expiresAt));
}, 1000);
window.addEventListener('resize', () => chart.draw());

connect();
