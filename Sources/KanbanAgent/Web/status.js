// Words for the connection states, and a readable rendering of `/health/websocket`.
import { h, plural, relativeTime, secondsUntil } from './dom.js';

// The agent warns past this difference between its clock and the relay's (LinkProblem.clockSkewLimitMs).
const CLOCK_SKEW_LIMIT_MS = 2000;

/** " · this computer's clock is 5 min behind the relay's", or '' while the clocks agree. */
function clockWarning(skewMs) {
  const skew = Number(skewMs ?? 0);
  if (!Number.isFinite(skew) || Math.abs(skew) <= CLOCK_SKEW_LIMIT_MS) return '';
  const s = Math.floor(Math.abs(skew) / 1000);
  const size = s < 120 ? `${s} s` : s < 7200 ? `${Math.floor(s / 60)} min` : s < 172800 ? `${Math.floor(s / 3600)} h` : `${Math.floor(s / 86400)} days`;
  return ` · this computer's clock is ${size} ${skew > 0 ? 'behind' : 'ahead of'} the relay's`;
}

/** Summary of the relay link for the status bar: {text, tone, countdown}. */
export function describeSync(sync, now = Date.now()) {
  if (!sync) return { text: 'Relay: unknown', tone: 'muted', canReconnect: false };
  const queued = Number(sync.queuedOperations ?? 0);
  const queuedText = queued > 0 ? ` – ${plural(queued, 'change')} queued` : '';
  const next = sync.nextAttemptAt ? new Date(sync.nextAttemptAt) : null;
  switch (sync.state) {
    case 'disabled':
      return { text: 'Local only (no relay)', tone: 'muted', canReconnect: false };
    case 'connected': {
      // Over long-polling the board still syncs; the status says so, since something in the way blocks WebSockets.
      const via = sync.transport === 'long-polling' ? ' (via HTTP long-polling)' : '';
      const refused = Array.isArray(sync.refused) ? sync.refused : [];
      // A clock off by more than 2 s decides which of two concurrent edits wins: say so.
      const clock = clockWarning(sync.clockSkewMs);
      const hint = clock ? 'Enable NTP on this computer (timedatectl set-ntp true): edits made at the same time on two machines are resolved by their clocks.' : undefined;
      if (refused.length > 0) {
        // Changes the relay will not take stay queued: say why instead of "Syncing" forever.
        const why = refused.some((r) => r.code === 'read_only')
          ? 'read-only token: your changes stay on this machine'
          : `the relay refuses changes to ${refused.map((r) => `“${r.boardTitle ?? String(r.board).slice(0, 8)}”`).join(', ')}`;
        return { text: `Connected · ${why}${queuedText}${via}${clock}`, tone: 'warn', canReconnect: false, hint };
      }
      return queued > 0
        ? { text: `Syncing${queuedText}${via}${clock}`, tone: clock ? 'warn' : 'busy', canReconnect: false, hint }
        : { text: `Synced${via}${clock}`, tone: via || clock ? 'warn' : 'good', canReconnect: false, hint };
    }
    case 'connecting':
      return { text: `Connecting to relay…${queuedText}`, tone: 'busy', canReconnect: false };
    case 'reconnecting': {
      const wait = next && !Number.isNaN(next.getTime()) ? `Reconnecting in ${secondsUntil(next, now)} s` : 'Reconnecting';
      return { text: queued > 0 ? `Offline${queuedText} · ${wait.toLowerCase()}` : wait, tone: 'warn', canReconnect: true };
    }
    case 'offline':
      return { text: `Offline${queuedText}`, tone: 'bad', canReconnect: true };
    default:
      return { text: `Relay: ${sync.state ?? 'unknown'}${queuedText}`, tone: 'muted', canReconnect: false };
  }
}

// Fields of /health/websocket this page knows, in the order it shows them; others follow as they come.
const LABELS = {
  state: 'State',
  relayURL: 'Relay URL',
  team: 'Team',
  queuedOperations: 'Queued changes',
  connectedSince: 'Connected since',
  nextAttemptAt: 'Next attempt',
  lastError: 'Last error',
  consecutiveFailures: 'Failures in a row',
  attempts: 'Recent failed attempts',
  roundTripMs: 'Round trip (ms)',
  clockSkewMs: 'Clock skew (ms)',
  compression: 'Compression',
  transport: 'Transport',
  fallbackReason: 'Why not WebSocket',
  webSocketRetryAt: 'WebSocket retried at',
  cursors: 'Relay cursor by board',
  repairs: 'Repairs after catch-up',
  refused: 'Changes the relay refused',
  board: 'Board',
  boardTitle: 'Board title',
  code: 'Code',
  // one failed attempt
  at: 'When',
  errorClass: 'Problem',
  message: 'What happened',
  fix: 'How to fix it',
};

const ISO_DATE = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})$/;

/** "lastAttemptAt" → "Last attempt at", "replicaId" → "Replica ID", for fields this page does not know yet. */
function labelFor(key) {
  if (LABELS[key]) return LABELS[key];
  if (!/^[A-Za-z][A-Za-z0-9]*$/.test(key)) return key; // a map key such as a board ID
  const words = key.replace(/([a-z0-9])([A-Z])/g, '$1 $2').split(' ');
  const unit = words.length > 1 && /^(ms|s|bytes)$/i.test(words.at(-1)) ? ` (${words.pop().toLowerCase()})` : '';
  return words.map((w, i) => {
    if (/^(id|url|rtt|hlc)$/i.test(w)) return w.toUpperCase();
    if (w.length > 1 && w === w.toUpperCase()) return w;
    return i === 0 ? w[0].toUpperCase() + w.slice(1) : w.toLowerCase();
  }).join(' ') + unit;
}

const isRecord = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);

/** Any JSON value as readable DOM: dates with relative time, nested objects as nested lists. */
export function renderValue(value, now = Date.now()) {
  if (value === null || value === undefined) return h('span', { className: 'muted' }, '—');
  if (typeof value === 'string' && ISO_DATE.test(value)) {
    const date = new Date(value);
    return h('time', { datetime: value, title: value }, `${date.toLocaleString()} (${relativeTime(date, now)})`);
  }
  if (typeof value === 'boolean') return document.createTextNode(value ? 'yes' : 'no');
  if (typeof value !== 'object') return document.createTextNode(String(value));
  if (Array.isArray(value)) {
    if (value.length === 0) return h('span', { className: 'muted' }, 'none');
    if (value.every(isRecord)) {
      return h('ol', { className: 'kv-records' }, value.map((row) => h('li', {}, renderFields(row, now))));
    }
    return h('ul', { className: 'kv-list' }, value.map((v) => h('li', {}, renderValue(v, now))));
  }
  if (Object.keys(value).length === 0) return h('span', { className: 'muted' }, 'none');
  return renderFields(value, now);
}

/** An object as a definition list, known fields first in a fixed order, then the rest as they come. */
export function renderFields(object, now = Date.now()) {
  const known = Object.keys(LABELS).filter((k) => k in object);
  const rest = Object.keys(object).filter((k) => !(k in LABELS));
  return h('dl', { className: 'kv' }, [...known, ...rest].map((k) => {
    const v = object[k];
    const nested = (Array.isArray(v) && v.length > 0) || (isRecord(v) && Object.keys(v).length > 0);
    return [
      h('dt', { className: nested ? 'wide' : null }, labelFor(k)),
      h('dd', { className: nested ? 'wide' : null, dataset: { field: k } }, renderValue(v, now)),
    ];
  }));
}
