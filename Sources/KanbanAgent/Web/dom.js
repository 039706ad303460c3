// Small DOM helpers. Text always goes in through textContent, never as HTML.

/**
 * Creates an element: h('button', {type: 'button', dataset: {testid: 'x'}, onclick}, 'Label').
 * Attributes with value null/undefined/false are skipped; `true` sets an empty attribute.
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value == null || value === false) continue;
    if (name === 'dataset') Object.assign(el.dataset, value);
    else if (name.startsWith('on')) el.addEventListener(name.slice(2), value);
    else if (name === 'className') el.className = value;
    else el.setAttribute(name, value === true ? '' : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child == null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** Sets text only when it differs, so selections and screen readers are not disturbed. */
/** "1 change", "3 changes". */
export const plural = (n, one, many = `${one}s`) => `${n} ${n === 1 ? one : many}`;

export function setText(el, text) {
  if (el.textContent !== text) el.textContent = text;
}

/**
 * Makes `parent`'s children exactly the elements for `items`, in order, reusing each item's
 * element from `cache` (key → element) so focus, open editors and drag state survive a re-render.
 * Elements that are moved keep their identity; elements no longer listed are removed from
 * `parent` (the caller prunes the cache of elements that ended up nowhere).
 */
export function reconcile(parent, items, key, create, update, cache) {
  let cursor = parent.firstChild;
  for (const item of items) {
    const k = key(item);
    let el = cache.get(k);
    if (!el) {
      el = create(item);
      cache.set(k, el);
    }
    update(el, item);
    if (el === cursor) cursor = cursor.nextSibling;
    else parent.insertBefore(el, cursor);
  }
  while (cursor) {
    const next = cursor.nextSibling;
    cursor.remove();
    cursor = next;
  }
}

/** Drops cache entries whose element is no longer in the document. */
export function pruneCache(cache) {
  for (const [k, el] of cache) if (!el.isConnected) cache.delete(k);
}

/** "in 4 s", "12 s ago", "3 min ago" for a date relative to now. */
export function relativeTime(date, now = Date.now()) {
  const ms = date.getTime() - now;
  const s = Math.round(Math.abs(ms) / 1000);
  const text = s < 90 ? `${s} s` : s < 5400 ? `${Math.round(s / 60)} min` : `${Math.round(s / 3600)} h`;
  return ms >= 0 ? `in ${text}` : `${text} ago`;
}

/** Seconds until `date`, at least 0, rounded up (a countdown never shows 0 while waiting). */
export function secondsUntil(date, now = Date.now()) {
  return Math.max(0, Math.ceil((date.getTime() - now) / 1000));
}

const ICONS = {
  edit: 'M4 20h4L19 9l-4-4L4 16v4zM14 6l4 4',
  plus: 'M12 5v14M5 12h14',
  trash: 'M4 7h16M9 7V4h6v3M6 7l1 13h10l1-13',
};

/** A stroked 24×24 icon; decorative (the button around it carries the label). */
export function icon(name) {
  const ns = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(ns, 'svg');
  svg.setAttribute('viewBox', '0 0 24 24');
  svg.setAttribute('aria-hidden', 'true');
  const path = document.createElementNS(ns, 'path');
  path.setAttribute('d', ICONS[name]);
  svg.append(path);
  return svg;
}
