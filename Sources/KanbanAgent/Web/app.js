// The web board: picks a board, follows its event stream, renders the model, sends edits.
// Edits go to the JSON API; what the page shows comes from the event stream (the agent echoes
// this page's own edits back as `origin: local` events), so every page converges on one state.
import { api } from './api.js';
import { BoardModel, isEntityEvent } from './model.js';
import { EventStream, describeClose } from './stream.js';
import { h, icon, plural, setText, reconcile, pruneCache, relativeTime, secondsUntil } from './dom.js';
import { describeSync, renderFields, renderValue } from './status.js';
import { enableDragAndDrop } from './drag.js';

const $ = (id) => document.getElementById(id);
const TROUBLESHOOT_REFRESH_MS = 3000;

const state = {
  boards: [],
  boardId: null,
  model: null,
  view: null,
  stream: null,
  streamProblem: null,
  sync: null,
  syncReconnectSupported: true,
  panels: new Set(),
  conflicts: [],
  lastEventAt: null,
  presence: new Map(), // `${replica}/${user}` → the latest presence message
  replicaId: null, // this agent's, to tell others' presence from ours
  pending: new Map(), // operation ID → entity ID: this agent's changes the relay has not acknowledged
};

// Elements reused across renders, by entity ID.
const cache = {
  columns: new Map(),
  tasks: new Map(),
  orphanGroups: new Map(),
  orphans: new Map(),
  trash: new Map(),
  deletedColumns: new Map(),
  conflicts: new Map(),
};

// ---------------------------------------------------------------- boards and the URL

function boardFromURL() {
  return new URL(location.href).searchParams.get('board');
}

function setURL(boardId, mode) {
  if (mode === 'none') return;
  const url = new URL(location.href);
  if (boardId) url.searchParams.set('board', boardId);
  else url.searchParams.delete('board');
  if (url.href === location.href) return;
  history[mode === 'push' ? 'pushState' : 'replaceState']({ board: boardId }, '', url);
}

async function loadBoards() {
  try {
    state.boards = await api.boards();
  } catch (error) {
    reportError(error);
  }
  renderBoardPicker();
}

function renderBoardPicker() {
  const select = $('board-select');
  const boards = [...state.boards];
  if (state.model && !boards.some((b) => b.id === state.model.id)) boards.push({ id: state.model.id, title: state.model.title });
  const options = [
    ...(state.boardId && !boards.some((b) => b.id === state.boardId) ? [{ id: state.boardId, title: 'Unknown board' }] : []),
    ...(boards.length === 0 ? [{ id: '', title: 'No boards yet' }] : []),
    ...boards.map((b) => ({ id: b.id, title: (b.id === state.model?.id ? state.model.title : b.title) || '(untitled)' })),
  ];
  // Rebuilt only when something changed, so an open drop-down is not closed under the pointer.
  const signature = JSON.stringify(options);
  if (select.dataset.signature !== signature) {
    select.replaceChildren(...options.map((o) => h('option', { value: o.id }, o.title)));
    select.dataset.signature = signature;
  }
  select.value = state.boardId ?? '';
  select.disabled = boards.length === 0;
}

function selectBoard(id, historyMode = 'push') {
  if (id === state.boardId && state.stream) return;
  state.stream?.stop('switched board');
  state.stream = null;
  for (const c of Object.values(cache)) c.clear();
  $('column-list').replaceChildren();
  $('orphan-groups').replaceChildren();
  Object.assign(state, { boardId: id, model: null, view: null, streamProblem: null, conflicts: [], lastEventAt: null });
  state.presence.clear();
  setURL(id, historyMode);
  if (id) {
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    state.stream = new EventStream({
      url: `${proto}//${location.host}/api/events?board=${encodeURIComponent(id)}`,
      onMessage: handleMessage,
      onChange: renderStatus,
      onFailure: diagnoseStream,
    });
    state.stream.start();
  }
  renderBoardPicker();
  renderBoard();
  renderConflicts();
  renderStatus();
}

// ---------------------------------------------------------------- the event stream

function handleMessage(message) {
  if (message.type === 'snapshot') {
    state.model = new BoardModel(message.board, message.version);
    state.sync = message.sync ?? state.sync;
    state.pending = new Map((Array.isArray(message.pending) ? message.pending : []).map((p) => [p.op, p.entity]));
    state.streamProblem = null;
    state.presence.clear(); // whoever is still here says so again
    renderPresence();
    renderBoardPicker();
    renderBoard();
    renderStatus();
    refreshConflicts();
    return;
  }
  if (message.type === 'sync:status') {
    state.sync = message.sync;
    renderStatus();
    showPending();
    return;
  }
  if (message.type === 'sync:acked') {
    for (const op of Array.isArray(message.ops) ? message.ops : []) state.pending.delete(op);
    schedulePendingMarks();
    return;
  }
  if (message.type === 'presence') {
    handlePresence(message.presence);
    return;
  }
  if (isEntityEvent(message)) {
    // This agent's own change: pending until the relay acknowledges it (`sync:acked`).
    const entity = message.task?.id ?? message.column?.id ?? message.boardId;
    if (message.origin === 'local' && message.opId && entity) state.pending.set(message.opId, entity);
    if (state.model?.apply(message)) {
      state.lastEventAt = new Date();
      scheduleRender();
      if (message.board) renderBoardPicker();
      scheduleConflictRefresh();
    }
  }
  // Anything else (presence, future types) is not for this page yet.
}

/** The stream closed before its snapshot: find out why, in words a person can act on. */
async function diagnoseStream() {
  const stream = state.stream;
  try {
    await api.board(state.boardId);
    state.streamProblem = 'the agent refused the live event stream (if this page is served through another host or port, start the agent with --allow-host / --allow-origin)';
  } catch (error) {
    if (stream !== state.stream) return;
    if (error.status === 404) {
      state.streamProblem = `this board does not exist on this agent (${state.boardId}); pick another board`;
      stream.stop('board not found');
    } else if (error.status === 0) {
      state.streamProblem = 'cannot reach the agent (is `kanban agent` running?)';
    } else {
      state.streamProblem = `${error.message}${error.hint ? ` (${error.hint.replace(/\.$/, '')})` : ''}`;
    }
  }
  renderStatus();
  if (!state.model) renderBoard();
}

// ---------------------------------------------------------------- rendering the board

// Events are applied to the model as they come and the board is drawn at most once per frame:
// a burst (a teammate's import, this agent catching up after a reconnect) is one render, not
// one per event. The timer draws in a page that is not shown (no frames there), at the rate the
// browser allows it.
let pendingRender = null;

function scheduleRender() {
  if (pendingRender) return;
  const draw = () => renderBoard();
  pendingRender = { frame: requestAnimationFrame(draw), timer: setTimeout(draw, 250) };
}

let renders = 0;

function renderBoard() {
  const started = performance.now();
  try {
    drawBoard();
  } finally {
    // Each render's time, for Tools/browser/big_board.py; the newest thousand or fewer are kept.
    // (A browser without User Timing level 3 measures nothing; the board is drawn all the same.)
    try {
      if (++renders % 1000 === 0) performance.clearMeasures('kanban:render');
      performance.measure('kanban:render', { start: started });
    } catch { /* not measured */ }
  }
}

function drawBoard() {
  if (pendingRender) {
    cancelAnimationFrame(pendingRender.frame);
    clearTimeout(pendingRender.timer);
    pendingRender = null;
  }
  const hasBoard = Boolean(state.model);
  const empty = $('empty-state');
  if (!hasBoard) {
    setText($('board-title'), '');
    $('add-column').hidden = true;
    $('orphans').hidden = true;
    empty.hidden = false;
    setText(empty, !state.boardId ? 'No board yet. Create one with “New board…” above.'
      : state.streamProblem ? `Cannot show the board: ${state.streamProblem}.` : 'Loading the board…');
    updateBadges(0, 0);
    return;
  }
  empty.hidden = true;
  $('add-column').hidden = false;
  const view = (state.view = state.model.view());
  document.title = `${view.title || 'Board'} – Kanban`;
  if ($('board-title-input').hidden) setText($('board-title'), view.title || '(untitled)');

  const active = document.activeElement;
  const editingBefore = [...cache.tasks].filter(([, el]) => el.editBase).map(([id]) => id);
  const editors = editorsByTask();

  reconcile($('column-list'), view.columns, (c) => c.id, createColumn, updateColumn, cache.columns);
  for (const column of view.columns) {
    reconcile(cache.columns.get(column.id).parts.list, column.tasks, (t) => t.id, createTask,
      (el, task) => updateTask(el, task, editors), cache.tasks);
  }
  pruneCache(cache.columns);
  for (const id of editingBefore) {
    if (!cache.tasks.get(id)?.isConnected) toast('A task you were editing was deleted or moved away elsewhere.', { tone: 'warn' });
  }
  pruneCache(cache.tasks);

  renderOrphans(view);
  renderTrash(view);
  for (const el of $('toasts').querySelectorAll('[data-undo-for]')) {
    const id = el.dataset.undoFor;
    if ((state.model.tasks.get(id) ?? state.model.columns.get(id))?.deleted === false) el.remove();
  }
  updateBadges(view.trash.length, state.conflicts.length);
  showPending();

  // Moving an element in the DOM drops its focus; give it back.
  if (active && active !== document.body && active.isConnected && document.activeElement !== active) active.focus({ preventScroll: true });
}

function updateBadges(trash, conflicts) {
  setText(document.querySelector('[data-testid="trash-count"]'), String(trash));
  setText(document.querySelector('[data-testid="conflict-count"]'), String(conflicts));
  document.querySelector('[data-panel="conflicts"]').classList.toggle('attention', conflicts > 0);
}

function createColumn(column) {
  const title = h('h2', { className: 'column-title', tabindex: 0, dataset: { testid: 'column-title', action: 'rename-column' }, title: 'Click to rename' });
  const titleInput = h('input', { className: 'inline-input', maxlength: 500, hidden: true, dataset: { testid: 'column-title-input', inline: 'column-title' } });
  const count = h('span', { className: 'count', dataset: { testid: 'column-count' } });
  const del = h('button', { type: 'button', className: 'icon-button', dataset: { testid: 'delete-column', action: 'delete-column' } }, '×');
  const head = h('header', { className: 'column-head', draggable: 'true', title: 'Drag to reorder columns' }, title, titleInput, count, del);
  const addButton = h('button', { type: 'button', className: 'add-task', dataset: { testid: 'add-task', action: 'add-task' } }, '+ Add task');
  const input = h('input', { maxlength: 500, placeholder: 'Task title', autocomplete: 'off', dataset: { testid: 'new-task-input' } });
  const form = h('form', { className: 'task-form', hidden: true, dataset: { testid: 'new-task-form', form: 'new-task' } },
    input,
    h('div', { className: 'form-actions' },
      h('button', { type: 'submit', className: 'primary', dataset: { testid: 'new-task-submit' } }, 'Add'),
      h('button', { type: 'button', dataset: { action: 'close-form' } }, 'Cancel')));
  const list = h('ol', { className: 'task-list', dataset: { testid: 'task-list' } });
  const el = h('section', { className: 'column', dataset: { testid: 'column', id: column.id } }, head, addButton, form, list);
  el.parts = { title, titleInput, count, del, addButton, input, list };
  return el;
}

function updateColumn(el, column) {
  const { title, count, del, addButton, input, list } = el.parts;
  const name = column.title || '(untitled)';
  setText(title, name);
  setText(count, String(column.tasks.length));
  el.setAttribute('aria-label', `Column ${name}`);
  del.setAttribute('aria-label', `Delete column ${name}`);
  addButton.setAttribute('aria-label', `Add a task at the top of ${name}`);
  input.setAttribute('aria-label', `New task title in ${name}`);
  list.setAttribute('aria-label', `Tasks in ${name}`);
  list.classList.toggle('empty', column.tasks.length === 0);
}

// On touch screens a card's buttons are always shown (there is no hover to bring them up).
const CARD_BUTTONS_ALWAYS = window.matchMedia?.('(hover: none)').matches ?? false;

function createTask(task) {
  const title = h('p', { className: 'task-title', dataset: { testid: 'task-title', action: 'edit-task' } });
  const description = h('p', { className: 'task-description', dataset: { testid: 'task-description', action: 'edit-task' } });
  const body = h('div', { className: 'task-body' }, title, description);
  const el = h('li', { className: 'task', tabindex: 0, draggable: 'true', dataset: { testid: 'task', id: task.id } }, body);
  const presence = h('span', { className: 'presence-badge', hidden: true, dataset: { testid: 'task-presence' } });
  body.append(presence);
  el.parts = { title, description, body, presence, actions: null };
  // The card's buttons (three, each an SVG icon) are made when the pointer or the focus first
  // comes to the card (`armCard`): made up front they were most of a card's elements, and on a
  // board of 5,000 tasks most of the first render and of the layout after it.
  if (CARD_BUTTONS_ALWAYS) createTaskActions(el);
  // The edit and add-below forms are made the first time either is opened. Made up front,
  // two <form>s per task cost Chromium more with every form already on the page: a board of
  // 5,000 tasks took 13-16 s to show, with them made on demand ~1 s.
  let forms = null;
  const made = () => (forms ??= createTaskForms(el));
  for (const name of ['editForm', 'titleInput', 'descriptionInput', 'changedNote', 'belowForm', 'belowInput']) {
    Object.defineProperty(el.parts, name, { get: () => made()[name], enumerable: false });
  }
  return el;
}

function createTaskActions(el) {
  const actions = h('div', { className: 'task-actions' },
    h('button', { type: 'button', 'aria-label': 'Edit', title: 'Edit (Enter)', dataset: { testid: 'edit-task', action: 'edit-task' } }, icon('edit')),
    h('button', { type: 'button', 'aria-label': 'Add a task below', title: 'Add a task below', dataset: { testid: 'add-below', action: 'add-below' } }, icon('plus')),
    h('button', { type: 'button', className: 'danger', 'aria-label': 'Delete', title: 'Delete', dataset: { testid: 'delete-task', action: 'delete-task' } }, icon('trash')));
  el.parts.description.after(actions);
  el.parts.actions = actions;
}

/** Gives the card under the pointer or the focus its buttons, the first time it gets either. */
function armCard(event) {
  const card = event.target.closest?.('[data-testid="task"]');
  if (card?.parts && card.parts.actions === null) createTaskActions(card);
}

function createTaskForms(el) {
  const titleInput = h('input', { maxlength: 500, 'aria-label': 'Title', dataset: { testid: 'edit-title-input' } });
  const descriptionInput = h('textarea', { rows: 3, maxlength: 20000, 'aria-label': 'Description', placeholder: 'Description (optional)', dataset: { testid: 'edit-description-input' } });
  const changedNote = h('p', { className: 'changed-note', hidden: true, dataset: { testid: 'changed-elsewhere' } });
  const editForm = h('form', { className: 'task-form', hidden: true, dataset: { testid: 'edit-task-form', form: 'edit-task' } },
    titleInput, descriptionInput, changedNote,
    h('div', { className: 'form-actions' },
      h('button', { type: 'submit', className: 'primary', dataset: { testid: 'save-task' } }, 'Save'),
      h('button', { type: 'button', dataset: { action: 'close-form' } }, 'Cancel')));
  const belowInput = h('input', { maxlength: 500, placeholder: 'Task title', autocomplete: 'off', 'aria-label': 'New task title', dataset: { testid: 'add-below-input' } });
  const belowForm = h('form', { className: 'task-form below', hidden: true, dataset: { testid: 'add-below-form', form: 'add-below' } },
    belowInput,
    h('div', { className: 'form-actions' },
      h('button', { type: 'submit', className: 'primary' }, 'Add'),
      h('button', { type: 'button', dataset: { action: 'close-form' } }, 'Cancel')));
  el.append(editForm, belowForm);
  return { editForm, titleInput, descriptionInput, changedNote, belowForm, belowInput };
}

/**
 * Brings a card up to `task`. The model replaces a task's object on every change to it, so a
 * card drawn from this very object, with the same editors shown and no edit open, is current:
 * on a large board nearly every card is skipped this way, without reading the DOM.
 */
function updateTask(el, task, editors) {
  const presence = editors.get(task.id) ?? '';
  if (el.drawn === task && el.presence === presence && !el.editBase) return;
  el.drawn = task;
  const { title, description } = el.parts;
  setText(title, task.title || '(untitled)');
  setText(description, task.description);
  description.hidden = !task.description;
  el.setAttribute('aria-label', `Task ${task.title}. Alt+arrow keys move it.`);
  el.dataset.column = task.columnId;
  showTaskPresence(el, presence);
  if (el.editBase) {
    const { changedNote } = el.parts;
    const changes = [];
    if (task.title !== el.editBase.title) changes.push(`title is now “${task.title}”`);
    if (task.description !== el.editBase.description) changes.push('description changed');
    changedNote.hidden = changes.length === 0;
    setText(changedNote, changes.length ? `Changed elsewhere while you edit: ${changes.join('; ')}.` : '');
  }
}

function renderOrphans(view) {
  const section = $('orphans');
  section.hidden = view.orphans.length === 0;
  const groups = [];
  for (const task of view.orphans) {
    const last = groups[groups.length - 1];
    if (last?.columnId === task.columnId) last.tasks.push(task);
    else groups.push({ columnId: task.columnId, tasks: [task] });
  }
  reconcile($('orphan-groups'), groups, (g) => g.columnId, createOrphanGroup, updateOrphanGroup, cache.orphanGroups);
  pruneCache(cache.orphanGroups);
  pruneCache(cache.orphans);
}

function createOrphanGroup(group) {
  const heading = h('h3', {});
  const list = h('ol', { className: 'orphan-list' });
  const restore = h('button', { type: 'button', dataset: { action: 'restore-column', testid: 'restore-orphan-column', id: group.columnId } }, 'Restore column');
  const el = h('div', { className: 'orphan-group', dataset: { columnId: group.columnId } }, h('div', { className: 'orphan-group-head' }, heading, restore), list);
  el.parts = { heading, list };
  return el;
}

function updateOrphanGroup(el, group) {
  const column = state.model.columns.get(group.columnId);
  setText(el.parts.heading, column?.created ? `From deleted column “${column.title}”` : 'From a deleted column');
  reconcile(el.parts.list, group.tasks, (t) => t.id, createOrphan, updateOrphan, cache.orphans);
}

function createOrphan(task) {
  const title = h('span', { className: 'task-title', dataset: { testid: 'task-title' } });
  const select = h('select', { 'aria-label': 'Column to move the task to', dataset: { testid: 'orphan-target' } });
  const el = h('li', { className: 'task orphan', draggable: 'true', tabindex: 0, dataset: { testid: 'orphan', id: task.id } },
    title,
    h('span', { className: 'orphan-actions' }, select,
      h('button', { type: 'button', dataset: { action: 'move-orphan', testid: 'move-orphan' } }, 'Move'),
      h('button', { type: 'button', className: 'danger', dataset: { action: 'delete-task', testid: 'delete-task' } }, 'Delete')));
  el.parts = { title, select };
  return el;
}

function updateOrphan(el, task) {
  setText(el.parts.title, task.title || '(untitled)');
  el.setAttribute('aria-label', `Recovered task ${task.title}`);
  const select = el.parts.select;
  const columns = state.view.columns;
  const signature = columns.map((c) => `${c.id}\u0000${c.title}`).join('\u0001');
  if (select.dataset.signature !== signature) {
    const previous = select.value;
    select.replaceChildren(...columns.map((c) => h('option', { value: c.id }, c.title || '(untitled)')));
    if (columns.some((c) => c.id === previous)) select.value = previous;
    select.disabled = columns.length === 0;
    select.dataset.signature = signature;
  }
}

function renderTrash(view) {
  reconcile($('trash-list'), view.trash, (t) => t.id, (task) => {
    const el = h('li', { dataset: { testid: 'trash-task', id: task.id } },
      h('span', { className: 'item-text' }), h('button', { type: 'button', dataset: { action: 'restore-task', testid: 'restore-task' } }, 'Restore'));
    el.parts = { text: el.firstChild };
    return el;
  }, (el, task) => {
    const column = state.model.columns.get(task.columnId);
    setText(el.parts.text, column?.created ? `${task.title} — in ${column.title}` : task.title);
  }, cache.trash);
  pruneCache(cache.trash);
  $('trash-empty').hidden = view.trash.length > 0;

  $('deleted-columns-heading').hidden = view.deletedColumns.length === 0;
  reconcile($('deleted-columns'), view.deletedColumns, (c) => c.id, (column) => {
    const el = h('li', { dataset: { testid: 'deleted-column', id: column.id } },
      h('span', { className: 'item-text' }), h('button', { type: 'button', dataset: { action: 'restore-column', testid: 'restore-column', id: column.id } }, 'Restore'));
    el.parts = { text: el.firstChild };
    return el;
  }, (el, column) => setText(el.parts.text, column.title || '(untitled)'), cache.deletedColumns);
  pruneCache(cache.deletedColumns);
}

// ---------------------------------------------------------------- status bar and troubleshooting

function renderStatus() {
  const stream = state.stream;
  const pill = $('stream-status');
  const button = $('stream-reconnect');
  let text;
  let tone;
  switch (stream?.state) {
    case 'live':
      [text, tone] = ['Live', 'good'];
      break;
    case 'connecting':
      [text, tone] = [stream.connects > 1 ? 'Reconnecting…' : 'Connecting…', 'busy'];
      break;
    case 'reconnecting':
      [text, tone] = [`Reconnecting in ${secondsUntil(stream.nextAttemptAt)} s`, 'warn'];
      break;
    case 'stopped':
      [text, tone] = ['Not connected', 'bad'];
      break;
    default:
      [text, tone] = ['No board', 'muted'];
  }
  setText(pill.querySelector('.pill-text'), text);
  pill.dataset.state = stream?.state ?? 'idle';
  pill.dataset.tone = tone;
  pill.title = stream?.lastClose ? `Last close: ${stream.lastClose.code} – ${describeClose(stream.lastClose.code)}` : 'Live updates from this agent';
  button.hidden = !(stream && stream.state === 'reconnecting');

  // The relay state comes through the agent: while the agent is out of reach it is only the last known one.
  const sync = describeSync(state.sync);
  const syncKnown = stream?.state === 'live';
  const syncPill = $('sync-status');
  setText(syncPill.querySelector('.pill-text'), syncKnown || !state.sync ? sync.text : `${sync.text} (last known)`);
  syncPill.dataset.state = state.sync?.state ?? 'unknown';
  syncPill.dataset.tone = syncKnown ? sync.tone : 'muted';
  syncPill.title = [state.sync?.relayURL && `Relay ${state.sync.relayURL}`, state.sync?.lastError && `Last error: ${state.sync.lastError}`, sync.hint]
    .filter(Boolean).join('\n') || 'Sync with the relay';
  $('sync-reconnect').hidden = !(syncKnown && sync.canReconnect && state.syncReconnectSupported);
  // The relay refuses this board's changes for good (read-only token, board outside the token): they can be thrown away.
  const refusedHere = (Array.isArray(state.sync?.refused) ? state.sync.refused : []).some((r) => r.board === state.boardId);
  $('sync-discard').hidden = !(syncKnown && refusedHere);

  const banner = $('stream-banner');
  const down = stream && stream.state !== 'live' && (state.model || state.streamProblem) && (stream.connects > 1 || stream.state === 'stopped');
  banner.hidden = !down;
  if (down) {
    const why = state.streamProblem ?? (stream.lastClose ? describeClose(stream.lastClose.code) : 'connection lost');
    const when = stream.state === 'reconnecting' ? ` Retrying in ${secondsUntil(stream.nextAttemptAt)} s.` : '';
    setText($('stream-banner-text'), `Live updates paused: ${why}.${when} The board shows what it last received.`);
    $('banner-reconnect').hidden = stream.state !== 'reconnecting';
  }
  $('board-area').classList.toggle('stale', Boolean(stream && stream.state !== 'live' && state.model));
  scheduleSyncRefresh(syncKnown);
}

// While the relay link is down the agent has no news until its next attempt (up to 10 s away),
// so the indicator polls /health/websocket to keep its queued count and countdown current.
const SYNC_REFRESH_MS = 2000;
let syncRefreshTimer = null;

function scheduleSyncRefresh(agentReachable) {
  const down = agentReachable && ['connecting', 'reconnecting', 'offline'].includes(state.sync?.state);
  if (down && !syncRefreshTimer) {
    syncRefreshTimer = setInterval(async () => {
      try {
        state.sync = await api.syncHealth();
      } catch {
        return; // the event stream reports an unreachable agent
      }
      renderStatus();
    }, SYNC_REFRESH_MS);
  } else if (!down && syncRefreshTimer) {
    clearInterval(syncRefreshTimer);
    syncRefreshTimer = null;
  }
}

let troubleshootTimer = null;

async function refreshTroubleshoot() {
  if (!state.panels.has('troubleshoot')) return;
  const [sync, health] = await Promise.allSettled([api.syncHealth(), api.health()]);
  if (!state.panels.has('troubleshoot')) return;
  if (sync.status === 'fulfilled') {
    state.sync = sync.value;
    renderStatus();
  }
  const stream = state.stream;
  const page = {
    streamURL: stream?.url ?? null,
    streamState: stream?.state ?? 'idle',
    liveSince: stream?.liveSince?.toISOString() ?? null,
    connectAttempts: stream?.connects ?? 0,
    retryAt: stream?.state === 'reconnecting' ? stream.nextAttemptAt.toISOString() : null,
    lastClose: stream?.lastClose
      ? `${stream.lastClose.code} – ${describeClose(stream.lastClose.code)}${stream.lastClose.reason ? ` (“${stream.lastClose.reason}”)` : ''}, ${relativeTime(stream.lastClose.at)}`
      : null,
    problem: state.streamProblem,
    boardVersion: state.model?.version ?? null,
    lastEventAt: state.lastEventAt?.toISOString() ?? null,
  };
  const failed = (result) => h('p', { className: 'error-text' }, `Could not load: ${result.reason?.message ?? result.reason}`);
  $('troubleshoot-body').replaceChildren(
    h('h3', {}, 'Relay link', h('code', {}, ' /health/websocket')),
    h('div', { dataset: { testid: 'troubleshoot-sync' } }, sync.status === 'fulfilled' ? renderFields(sync.value) : failed(sync)),
    h('h3', {}, 'This page’s live event stream'),
    h('div', { dataset: { testid: 'troubleshoot-stream' } }, renderFields(page)),
    h('h3', {}, 'Agent', h('code', {}, ' /health')),
    h('div', { dataset: { testid: 'troubleshoot-agent' } }, health.status === 'fulfilled' ? renderFields(health.value) : failed(health)),
  );
  setText($('troubleshoot-updated'), `Updated ${new Date().toLocaleTimeString()}; refreshes every ${TROUBLESHOOT_REFRESH_MS / 1000} s while open.`);
}

// ---------------------------------------------------------------- conflicts

let conflictTimer = null;

function scheduleConflictRefresh() {
  clearTimeout(conflictTimer);
  conflictTimer = setTimeout(refreshConflicts, 400);
}

async function refreshConflicts() {
  const boardId = state.boardId;
  if (!boardId) return;
  try {
    const conflicts = await api.conflicts(boardId);
    if (boardId !== state.boardId) return;
    state.conflicts = conflicts;
  } catch (error) {
    if (error.status !== 0) reportError(error);
    return;
  }
  renderConflicts();
}

/**
 * A conflict's value as words. The API gives the register's value as it is: a string (a title,
 * a description, or a column's position key), `{column, position}` (where a task is), or a
 * boolean (deleted).
 */
function describeConflictValue(field, value) {
  if (typeof value === 'boolean') return value ? 'deleted' : 'not deleted';
  if (value && typeof value === 'object') {
    const column = state.model?.columns.get(value.column);
    return `in ${column ? `“${column.title || '(untitled)'}”` : 'a column not on this board'}`;
  }
  if (field === 'position') return 'another place in the order';
  if (field === 'description' && value === '') return 'no description';
  return `“${value}”`;
}

function renderConflicts() {
  const list = state.conflicts;
  reconcile($('conflict-list'), list, (c) => c.loser, () => {
    const el = h('li', { className: 'conflict', dataset: { testid: 'conflict' } },
      h('div', { className: 'item-text' }),
      h('button', { type: 'button', dataset: { action: 'restore-conflict', testid: 'restore-conflict' } }, 'Restore'));
    el.parts = { text: el.firstChild };
    return el;
  }, (el, c) => {
    el.dataset.loser = c.loser;
    const model = state.model;
    const entity = c.entity === 'task' ? model?.tasks.get(c.entityId) : c.entity === 'column' ? model?.columns.get(c.entityId) : model;
    const kind = c.entity.charAt(0).toUpperCase() + c.entity.slice(1);
    el.parts.text.replaceChildren(
      h('strong', {}, entity ? `${kind} “${entity.title}” – ${c.field}` : `${kind} – ${c.field}`),
      h('span', {}, `Kept ${describeConflictValue(c.field, c.winnerValue)}; lost ${describeConflictValue(c.field, c.loserValue)}`),
      h('small', { className: 'muted' }, `Losing edit ${c.loser}`));
  }, cache.conflicts);
  pruneCache(cache.conflicts);
  $('conflicts-empty').hidden = list.length > 0;
  updateBadges(state.view?.trash.length ?? 0, list.length);
}

// ---------------------------------------------------------------- presence

function presenceName(p) {
  return p.user || (p.replica ? `replica ${p.replica.slice(0, 6)}` : 'someone');
}

function othersHere() {
  return [...state.presence.values()].filter((p) => !state.replicaId || p.replica !== state.replicaId);
}

function handlePresence(presence) {
  if (!presence || presence.board !== state.boardId) return;
  const key = `${presence.replica ?? ''}/${presence.user ?? ''}`;
  if (presence.viewing || presence.editing) state.presence.set(key, presence);
  else state.presence.delete(key);
  renderPresence();
}

function renderPresence() {
  const others = othersHere();
  const pill = $('presence');
  pill.hidden = others.length === 0;
  setText(pill.querySelector('.pill-text'), `${others.length} other${others.length === 1 ? '' : 's'} here`);
  pill.title = others.map((p) => presenceName(p) + (p.editing ? ' (editing)' : '')).join('\n');
  const editors = editorsByTask();
  for (const [id, el] of cache.tasks) showTaskPresence(el, editors.get(id) ?? '');
}

/** Task ID → "Ann, Bo editing", for the tasks someone else has open. */
function editorsByTask() {
  const names = new Map();
  for (const p of othersHere()) {
    if (p.editing) names.set(p.editing, [...(names.get(p.editing) ?? []), presenceName(p)]);
  }
  return new Map([...names].map(([id, list]) => [id, `${list.join(', ')} editing`]));
}

/** Shows who else edits the card's task ("Ann editing", or '' for no one). */
function showTaskPresence(el, text) {
  if (el.presence === text) return;
  el.presence = text;
  el.parts.presence.hidden = !text;
  el.parts.presence.textContent = text;
  el.classList.toggle('edited-elsewhere', Boolean(text));
}

// Acknowledgments come as often as edits: the marks are updated at most once per frame.
let pendingMarks = null;

function schedulePendingMarks() {
  pendingMarks ??= requestAnimationFrame(() => {
    pendingMarks = null;
    showPending();
  });
}

/**
 * Marks the cards whose task has a change made here that the relay does not have yet (offline,
 * or refused). Nothing is marked without a relay: then every change is only here by design.
 * The mark shows only if it lasts (style.css): online, the relay acknowledges within milliseconds.
 */
function showPending() {
  const entities = state.sync?.state === 'disabled' ? new Set() : new Set(state.pending.values());
  for (const [id, el] of cache.tasks) {
    const pending = entities.has(id);
    if (el.pendingShown === pending) continue;
    el.pendingShown = pending;
    el.classList.toggle('pending', pending);
    if (pending) el.title = 'Changed here and not on the relay yet';
    else el.removeAttribute('title');
  }
}

// ---------------------------------------------------------------- actions

async function run(action, { ok } = {}) {
  try {
    const result = await action();
    ok?.(result);
    return result;
  } catch (error) {
    reportError(error);
    return undefined;
  }
}

/** Throws away this board's changes that the relay refuses, after saying what goes and asking. */
async function discardRefused() {
  const boardId = state.boardId;
  if (!boardId) return;
  try {
    const queued = await api.queued(boardId);
    const count = queued.operations.length;
    if (count === 0) {
      toast('Nothing made here on this board is waiting for the relay any more.');
      return;
    }
    const title = state.model?.title ?? 'this board';
    const why = queued.refused[0]?.message ?? 'the relay refuses them';
    if (!window.confirm(`Discard ${plural(count, 'change')} made here to “${title}”? The relay refuses them (${why}). `
      + 'What the relay has stays; this cannot be undone.')) return;
    const result = await api.discardQueued(boardId);
    const gone = plural(result.discarded.length, 'change');
    if (result.document) {
      toast(`Discarded ${gone}: “${result.document.title}” holds only what came from the relay now.`);
    } else {
      // The board existed only through what was discarded.
      toast(`Discarded ${gone}: “${title}” existed only on this machine and is gone.`);
      await loadBoards();
      selectBoard(state.boards[0]?.id ?? null);
    }
  } catch (error) {
    reportError(error);
  }
}

function reportError(error) {
  toast(error.message ?? String(error), { hint: error.hint, tone: 'error' });
}

function lastTaskId(columnId) {
  const column = state.view?.columns.find((c) => c.id === columnId);
  return column?.tasks.at(-1)?.id ?? null;
}

/** Moves a task, skipping the call when it would land where it already is. */
function moveTask(taskId, columnId, after) {
  const task = state.model?.tasks.get(taskId);
  if (task && !task.deleted && task.columnId === columnId) {
    const tasks = state.view.columns.find((c) => c.id === columnId)?.tasks ?? [];
    const others = tasks.filter((t) => t.id !== taskId);
    const index = tasks.findIndex((t) => t.id === taskId);
    if (index >= 0 && (others[index - 1]?.id ?? null) === after) return;
  }
  return run(() => api.moveTask(taskId, columnId, after));
}

function moveColumn(columnId, after) {
  const columns = state.view?.columns ?? [];
  const index = columns.findIndex((c) => c.id === columnId);
  if (index >= 0 && (columns.filter((c) => c.id !== columnId)[index - 1]?.id ?? null) === after) return;
  return run(() => api.updateColumn(columnId, { after }));
}

function openForm(form, { after } = {}) {
  form.hidden = false;
  if (after !== undefined) form.dataset.after = after ?? '';
  const input = form.querySelector('input, textarea');
  input.focus();
  input.select?.();
}

function closeForm(form) {
  form.hidden = true;
  const task = form.closest('[data-testid="task"]');
  if (form.dataset.form === 'edit-task' && task) {
    state.stream?.send({ type: 'presence', editing: null });
    task.classList.remove('editing');
    task.parts.body.hidden = false;
    task.draggable = true;
    task.editBase = null;
    task.focus({ preventScroll: true });
  } else {
    form.reset();
    if (form.dataset.form === 'new-task') form.closest('[data-testid="column"]')?.parts.addButton.focus();
    else task?.focus({ preventScroll: true });
  }
}

function startTaskEdit(taskEl) {
  const task = state.model?.tasks.get(taskEl.dataset.id);
  if (!task || taskEl.classList.contains('editing')) return;
  const { body, editForm, titleInput, descriptionInput, changedNote } = taskEl.parts;
  taskEl.editBase = { title: task.title, description: task.description };
  titleInput.value = task.title;
  descriptionInput.value = task.description;
  changedNote.hidden = true;
  taskEl.classList.add('editing');
  state.stream?.send({ type: 'presence', editing: taskEl.dataset.id }); // others see "editing"
  taskEl.draggable = false;
  body.hidden = true;
  openForm(editForm);
}

function startInlineRename(display, input, value) {
  input.value = value;
  input.dataset.original = value;
  display.hidden = true;
  input.hidden = false;
  input.focus();
  input.select();
}

async function finishInlineRename(input, save) {
  if (input.hidden) return;
  const display = input.previousElementSibling;
  const title = input.value.trim();
  const changed = title && title !== input.dataset.original;
  input.hidden = true;
  display.hidden = false;
  if (!save || !changed) return;
  setText(display, title); // shown at once; the event stream confirms it
  if (input.dataset.inline === 'column-title') {
    await run(() => api.updateColumn(input.closest('[data-testid="column"]').dataset.id, { title }));
  } else if (input.dataset.inline === 'board-title') {
    await run(() => api.renameBoard(state.boardId, title), { ok: () => loadBoards() });
  }
  renderBoard();
}

const clickActions = {
  'add-task': (el, column) => {
    column.parts.input.placeholder = 'Task title';
    openForm(column.querySelector('[data-form="new-task"]'), { after: null });
  },
  'add-below': (el, column, task) => openForm(task.parts.belowForm),
  'edit-task': (el, column, task) => task && startTaskEdit(task),
  'close-form': (el) => closeForm(el.closest('form')),
  'rename-column': (el, column) => startInlineRename(column.parts.title, column.parts.titleInput, state.model.columns.get(column.dataset.id)?.title ?? ''),
  'delete-column': (el, column) => {
    const id = column.dataset.id;
    const title = state.model.columns.get(id)?.title ?? '';
    run(() => api.deleteColumn(id), {
      ok: () => toast(`Column “${title}” deleted. Its tasks are under Recovered tasks.`,
        { undoFor: id, action: { label: 'Undo', run: () => run(() => api.restoreColumn(id)) } }),
    });
  },
  'restore-column': (el) => run(() => api.restoreColumn(el.dataset.id)),
  'delete-task': (el, column, task, item) => {
    const id = item.dataset.id;
    const title = state.model.tasks.get(id)?.title ?? '';
    run(() => api.deleteTask(id), {
      ok: () => toast(`Task “${title}” deleted.`, { undoFor: id, action: { label: 'Undo', run: () => run(() => api.restoreTask(id)) } }),
    });
  },
  'restore-task': (el, column, task, item) => run(() => api.restoreTask(item.dataset.id)),
  'move-orphan': (el, column, task, item) => {
    const target = item.parts.select.value;
    if (target) run(() => api.moveTask(item.dataset.id, target, lastTaskId(target)));
  },
  'restore-conflict': (el, column, task, item) => run(() => api.restoreConflict(state.boardId, item.dataset.loser), { ok: refreshConflicts }),
  'reconnect-stream': () => state.stream?.reconnectNow(),
};

/** The board's forms: add at the top of a column, add below a card, edit a card. */
async function submitForm(form) {
  const column = form.closest('[data-testid="column"]');
  const taskEl = form.closest('[data-testid="task"]');
  if (form.dataset.form === 'new-task') {
    const input = form.querySelector('input');
    const title = input.value.trim();
    if (!title) return closeForm(form);
    // Below the one added before, while it is still in this column; else at the top.
    const previous = form.dataset.after || null;
    const after = previous && state.model.tasks.get(previous)?.columnId === column.dataset.id ? previous : null;
    const created = await run(() => api.createTask(column.dataset.id, title, after));
    if (created) {
      input.value = '';
      form.dataset.after = created.id; // the next one goes below it, so a batch keeps its order
      input.placeholder = 'Add another…';
    }
  } else if (form.dataset.form === 'add-below') {
    const title = taskEl.parts.belowInput.value.trim();
    if (!title) return closeForm(form);
    if (await run(() => api.createTask(taskEl.dataset.column, title, taskEl.dataset.id))) closeForm(form);
  } else if (form.dataset.form === 'edit-task') {
    const { titleInput, descriptionInput, title, description } = taskEl.parts;
    // Only the fields this person changed are sent, so an edit made elsewhere meanwhile to
    // the other field is not overwritten with what this form started from.
    const base = taskEl.editBase ?? state.model.tasks.get(taskEl.dataset.id);
    const changes = {};
    const newTitle = titleInput.value.trim();
    if (!newTitle) return toast('A task needs a title.', { tone: 'error' });
    if (newTitle !== base?.title) changes.title = newTitle;
    if (descriptionInput.value !== base?.description) changes.description = descriptionInput.value;
    if (Object.keys(changes).length === 0) return closeForm(form);
    if (await run(() => api.updateTask(taskEl.dataset.id, changes))) {
      // Shown at once; the event stream confirms it.
      if ('title' in changes) setText(title, changes.title);
      if ('description' in changes) {
        setText(description, changes.description);
        description.hidden = !changes.description;
      }
      closeForm(form);
    }
  }
}

function bindEvents() {
  document.addEventListener('click', (event) => {
    const el = event.target.closest('[data-action]');
    if (!el || !clickActions[el.dataset.action]) return;
    const column = el.closest('[data-testid="column"]');
    const task = el.closest('[data-testid="task"]');
    const item = el.closest('[data-id], [data-loser]');
    event.preventDefault();
    clickActions[el.dataset.action](el, column, task, item);
  });

  document.addEventListener('submit', async (event) => {
    const form = event.target;
    if (!form.dataset.form) return;
    event.preventDefault();
    if (form.dataset.busy) return; // a second Enter while the first is on its way
    form.dataset.busy = 'yes';
    try {
      await submitForm(form);
    } finally {
      delete form.dataset.busy;
    }
  });

  document.addEventListener('keydown', (event) => {
    const target = event.target;
    if (event.key === 'Escape') {
      if (target.dataset?.inline) return finishInlineRename(target, false);
      const form = target.closest?.('form[data-form]');
      if (form) return closeForm(form);
    }
    if (event.key === 'Enter' && target.dataset?.inline) {
      event.preventDefault();
      return finishInlineRename(target, true);
    }
    if (event.key === 'Enter' && !event.shiftKey && (event.ctrlKey || event.metaKey) && target.matches('textarea')) {
      event.preventDefault();
      return target.form.requestSubmit();
    }
    if ((event.key === 'Enter' || event.key === ' ') && target.matches('[data-action="rename-column"], #board-title')) {
      event.preventDefault();
      return target.click();
    }
    if (event.key === 'Enter' && target.matches('[data-testid="task"]')) {
      event.preventDefault();
      return startTaskEdit(target);
    }
    if (event.altKey && target.matches('[data-testid="task"]') && keyboardMoveTask(target, event.key)) event.preventDefault();
    if (event.altKey && target.matches('.column-head, .column-title') && keyboardMoveColumn(target.closest('[data-testid="column"]'), event.key)) event.preventDefault();
  });

  document.addEventListener('focusout', (event) => {
    if (event.target.dataset?.inline) finishInlineRename(event.target, true);
  });

  $('board-title').addEventListener('click', () => {
    if (state.model) startInlineRename($('board-title'), $('board-title-input'), state.model.title);
  });
  $('board-select').addEventListener('change', (event) => selectBoard(event.target.value || null));
  $('board-select').addEventListener('focus', () => loadBoards());
  $('board-picker').addEventListener('submit', async (event) => {
    event.preventDefault();
    const input = $('new-board-input');
    const title = input.value.trim();
    if (!title) return input.focus();
    const board = await run(() => api.createBoard(title));
    if (board) {
      input.value = '';
      state.boards.push({ id: board.id, title: board.title });
      selectBoard(board.id);
      loadBoards();
    }
  });
  $('add-column').addEventListener('submit', async (event) => {
    event.preventDefault();
    const input = $('new-column-input');
    const title = input.value.trim();
    if (!title || !state.boardId) return;
    const after = state.view?.columns.at(-1)?.id ?? null;
    if (await run(() => api.createColumn(state.boardId, title, after))) input.value = '';
  });
  $('stream-reconnect').addEventListener('click', () => state.stream?.reconnectNow());
  $('sync-reconnect').addEventListener('click', async () => {
    try {
      state.sync = (await api.syncReconnect()) ?? state.sync;
      renderStatus();
    } catch (error) {
      if (error.code === 'no_route') {
        state.syncReconnectSupported = false;
        renderStatus();
        toast('This agent cannot be asked to reconnect yet; it retries by itself.', { tone: 'warn' });
      } else reportError(error);
    }
  });
  $('sync-discard').addEventListener('click', () => discardRefused());
  for (const type of ['pointerover', 'focusin']) $('column-list').addEventListener(type, armCard);
  for (const button of document.querySelectorAll('[data-panel]')) {
    button.addEventListener('click', () => togglePanel(button.dataset.panel));
  }
  window.addEventListener('popstate', () => selectBoard(boardFromURL() ?? state.boards[0]?.id ?? null, 'none'));
  window.addEventListener('online', () => state.stream?.reconnectNow());
}

function keyboardMoveTask(taskEl, key) {
  const view = state.view;
  const columnIndex = view.columns.findIndex((c) => c.id === taskEl.dataset.column);
  const column = view.columns[columnIndex];
  if (!column) return false;
  const index = column.tasks.findIndex((t) => t.id === taskEl.dataset.id);
  const others = column.tasks.filter((t) => t.id !== taskEl.dataset.id);
  if (key === 'ArrowUp' && index > 0) moveTask(taskEl.dataset.id, column.id, others[index - 2]?.id ?? null);
  else if (key === 'ArrowDown' && index < column.tasks.length - 1) moveTask(taskEl.dataset.id, column.id, others[index].id);
  else if (key === 'ArrowLeft' || key === 'ArrowRight') {
    const target = view.columns[columnIndex + (key === 'ArrowLeft' ? -1 : 1)];
    if (!target) return true;
    moveTask(taskEl.dataset.id, target.id, target.tasks[Math.min(index, target.tasks.length) - 1]?.id ?? null);
  } else return false;
  return true;
}

function keyboardMoveColumn(columnEl, key) {
  if (!columnEl || (key !== 'ArrowLeft' && key !== 'ArrowRight')) return false;
  const columns = state.view.columns;
  const index = columns.findIndex((c) => c.id === columnEl.dataset.id);
  const others = columns.filter((c) => c.id !== columnEl.dataset.id);
  if (key === 'ArrowLeft' && index > 0) moveColumn(columnEl.dataset.id, others[index - 2]?.id ?? null);
  if (key === 'ArrowRight' && index < columns.length - 1) moveColumn(columnEl.dataset.id, others[index].id);
  return true;
}

function togglePanel(name) {
  if (state.panels.has(name)) state.panels.delete(name);
  else state.panels.add(name);
  for (const button of document.querySelectorAll('[data-panel]')) {
    const open = state.panels.has(button.dataset.panel);
    button.setAttribute('aria-pressed', String(open));
    $(`panel-${button.dataset.panel}`).hidden = !open;
  }
  $('side').hidden = state.panels.size === 0;
  clearInterval(troubleshootTimer);
  if (state.panels.has('troubleshoot')) {
    refreshTroubleshoot();
    troubleshootTimer = setInterval(refreshTroubleshoot, TROUBLESHOOT_REFRESH_MS);
  }
  if (name === 'conflicts' && state.panels.has('conflicts')) refreshConflicts();
}

// ---------------------------------------------------------------- toasts

/** `undoFor`: the deleted entity's ID; the toast goes away once that entity is back. */
function toast(message, { hint = '', tone = 'info', action = null, undoFor = null } = {}) {
  const el = h('div', { className: `toast ${tone}`, dataset: { testid: 'toast', undoFor } },
    h('div', {}, h('span', {}, message), hint ? h('small', {}, hint) : null));
  const close = () => el.remove();
  if (action) {
    el.append(h('button', { type: 'button', onclick: () => { close(); action.run(); } }, action.label));
  }
  el.append(h('button', { type: 'button', className: 'icon-button', 'aria-label': 'Dismiss', onclick: close }, '×'));
  $('toasts').append(el);
  while ($('toasts').children.length > 4) $('toasts').firstChild.remove();
  setTimeout(close, tone === 'error' ? 12000 : 7000);
}

// ---------------------------------------------------------------- start

async function main() {
  bindEvents();
  enableDragAndDrop({ moveTask, moveColumn });
  api.health().then((health) => { state.replicaId = health?.replicaId ?? null; renderPresence(); }, () => {});
  await loadBoards();
  const wanted = boardFromURL() ?? state.boards[0]?.id ?? null;
  selectBoard(wanted, 'replace');
  // Countdowns ("retry in 3 s") tick even when nothing else happens.
  setInterval(renderStatus, 1000);
}

main();

// For debugging from the console.
window.kanban = { state, renderValue };
