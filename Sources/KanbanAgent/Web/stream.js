// The local event stream (`/api/events?board=ID`): one WebSocket, reopened after any close with
// capped exponential backoff and jitter. Each (re)connect starts with a snapshot, which the page
// takes as the truth, so nothing missed while disconnected can be lost.

export const CLOSE_TOO_SLOW = 4008;

const CLOSE_MEANINGS = {
  1000: 'closed normally',
  1001: 'the agent is shutting down or the page is leaving',
  1006: 'connection lost or refused (agent stopped, or the upgrade was refused)',
  1008: 'refused by policy',
  1009: 'message too big',
  1011: 'the agent hit an internal error',
  [CLOSE_TOO_SLOW]: 'this page fell behind; reconnecting for a fresh snapshot',
};

export function describeClose(code) {
  return CLOSE_MEANINGS[code] ?? 'closed';
}

export class EventStream {
  /**
   * @param {object} options
   * @param {string} options.url ws:// URL of the stream
   * @param {(message: object) => void} options.onMessage every parsed message, snapshot included
   * @param {() => void} options.onChange the connection state changed
   * @param {(info: object) => void} [options.onFailure] a connection closed before its snapshot
   */
  constructor({ url, onMessage, onChange, onFailure = () => {}, baseDelayMs = 500, maxDelayMs = 30000 }) {
    Object.assign(this, { url, onMessage, onChange, onFailure, baseDelayMs, maxDelayMs });
    this.state = 'idle'; // idle | connecting | live | reconnecting | stopped
    this.failures = 0;
    this.connects = 0;
    this.liveSince = null;
    this.nextAttemptAt = null;
    this.lastClose = null;
    this.socket = null;
    this.timer = null;
  }

  start() {
    this.#open();
  }

  stop(reason = 'stopped') {
    this.state = 'stopped';
    this.stopReason = reason;
    clearTimeout(this.timer);
    const socket = this.socket;
    this.socket = null;
    socket?.close(1000, 'page closed the stream');
    this.onChange();
  }

  /** Sends a small JSON message to the agent if the stream is open (e.g. presence). */
  send(message) {
    if (this.socket && this.socket.readyState === WebSocket.OPEN) this.socket.send(JSON.stringify(message));
  }

  reconnectNow() {
    if (this.state === 'live' || this.state === 'connecting') return;
    clearTimeout(this.timer);
    this.#open();
  }

  #open() {
    clearTimeout(this.timer);
    this.state = 'connecting';
    this.nextAttemptAt = null;
    this.connects += 1;
    let socket;
    try {
      socket = new WebSocket(this.url);
    } catch (error) {
      this.lastClose = { code: 0, reason: String(error.message ?? error), at: new Date() };
      this.#schedule();
      return;
    }
    this.socket = socket;
    let gotSnapshot = false;
    socket.onmessage = (event) => {
      if (socket !== this.socket) return;
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        return; // not JSON: nothing this page understands
      }
      if (message?.type === 'snapshot') {
        gotSnapshot = true;
        this.state = 'live';
        this.liveSince = new Date();
        this.onChange();
      }
      if (gotSnapshot) this.onMessage(message);
    };
    socket.onclose = (event) => {
      if (socket !== this.socket) return;
      this.socket = null;
      this.lastClose = { code: event.code, reason: event.reason, at: new Date(), hadSnapshot: gotSnapshot };
      // A connection that stayed up for a while resets the backoff; one that dropped at once
      // keeps growing it, so a server that accepts and closes is not hammered.
      if (gotSnapshot && Date.now() - this.liveSince.getTime() > 2000) this.failures = 0;
      this.liveSince = null;
      if (!gotSnapshot) this.onFailure(this.lastClose);
      if (this.state !== 'stopped') this.#schedule();
    };
    this.onChange();
  }

  /** Waits min(max, base·2^failures), jittered to 50–100 % of it, then reconnects. */
  #schedule() {
    const cap = Math.min(this.maxDelayMs, this.baseDelayMs * 2 ** this.failures);
    const delay = cap / 2 + Math.random() * (cap / 2);
    this.failures += 1;
    this.state = 'reconnecting';
    this.nextAttemptAt = new Date(Date.now() + delay);
    this.timer = setTimeout(() => this.#open(), delay);
    this.onChange();
  }
}
