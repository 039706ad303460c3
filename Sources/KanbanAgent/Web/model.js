// The page's copy of one board: every column and task by ID, built from the event stream's
// snapshot and advanced by each event's full entity. The view is a pure function of it, with
// the same rules as the agent's board document, so every page shows the same order.

/** Plain string order (UTF-16 code units), the same as the agent's for ASCII keys and IDs. */
export function compareStrings(a, b) {
  return a < b ? -1 : a > b ? 1 : 0;
}

export function byPositionThenId(a, b) {
  return compareStrings(a.position, b.position) || compareStrings(a.id, b.id);
}

const ENTITY_EVENTS = new Set([
  'task:created', 'task:updated', 'task:moved', 'task:deleted', 'task:restored',
  'column:created', 'column:updated', 'column:moved', 'column:deleted', 'column:restored',
  'board:created', 'board:updated',
]);

export function isEntityEvent(message) {
  return ENTITY_EVENTS.has(message?.type);
}

export class BoardModel {
  /** @param doc the board document (`GET /api/boards/{id}` or the snapshot's `board`). */
  constructor(doc, version = doc.version) {
    this.id = doc.id;
    this.title = doc.title;
    this.version = version;
    this.columns = new Map();
    this.tasks = new Map();
    // Trash order: newest deletion first. The snapshot's trash is already in that order; later
    // deletions rank by event version, above everything in the snapshot.
    this.trashRank = new Map();
    for (const c of doc.columns ?? []) {
      this.columns.set(c.id, { id: c.id, boardId: doc.id, title: c.title, position: c.position, deleted: false, created: true });
      for (const t of c.tasks ?? []) this.#putDocumentTask(t);
    }
    for (const t of doc.orphans ?? []) this.#putDocumentTask(t);
    (doc.trash ?? []).forEach((t, i) => {
      this.#putDocumentTask(t);
      this.trashRank.set(t.id, -i);
    });
  }

  #putDocumentTask(t) {
    this.tasks.set(t.id, { boardId: this.id, created: true, ...t });
  }

  /**
   * Applies one change event. Returns false (and changes nothing) for events at or below the
   * model's version, which the snapshot or an earlier event already includes.
   */
  apply(event) {
    if (!isEntityEvent(event) || typeof event.version !== 'number' || event.version <= this.version) return false;
    if (event.boardId && event.boardId !== this.id) return false;
    this.version = event.version;
    if (event.task) {
      const before = this.tasks.get(event.task.id);
      if (event.task.deleted && !before?.deleted) this.trashRank.set(event.task.id, event.version);
      this.tasks.set(event.task.id, { ...event.task });
    }
    if (event.column) this.columns.set(event.column.id, { ...event.column });
    if (event.board && event.board.id === this.id) this.title = event.board.title;
    return true;
  }

  /** Visible columns with their tasks, orphans, trash and deleted columns, each in order. */
  view() {
    const columns = [...this.columns.values()].filter((c) => c.created && !c.deleted).sort(byPositionThenId);
    const tasksByColumn = new Map(columns.map((c) => [c.id, []]));
    const orphans = [];
    const trash = [];
    for (const t of this.tasks.values()) {
      // Never placed (only edits of it have arrived so far): kept, not shown.
      if (!t.created || t.columnId == null || t.position == null) continue;
      if (t.deleted) trash.push(t);
      else if (tasksByColumn.has(t.columnId)) tasksByColumn.get(t.columnId).push(t);
      else orphans.push(t);
    }
    for (const list of tasksByColumn.values()) list.sort(byPositionThenId);
    orphans.sort((a, b) => compareStrings(a.columnId, b.columnId) || byPositionThenId(a, b));
    const rank = (t) => this.trashRank.get(t.id) ?? -Infinity;
    trash.sort((a, b) => rank(b) - rank(a) || compareStrings(a.id, b.id));
    const deletedColumns = [...this.columns.values()].filter((c) => c.created && c.deleted).sort(byPositionThenId);
    return {
      id: this.id,
      title: this.title,
      version: this.version,
      columns: columns.map((c) => ({ ...c, tasks: tasksByColumn.get(c.id) })),
      orphans,
      trash,
      deletedColumns,
    };
  }
}
