// The agent's JSON API, same origin. Every call resolves to the decoded body or throws ApiError.

export class ApiError extends Error {
  constructor({ status = 0, code = 'network', message, hint = '', field = null }) {
    super(message);
    this.status = status;
    this.code = code;
    this.hint = hint;
    this.field = field;
  }
}

const TIMEOUT_MS = 10000;

export async function request(method, path, body) {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), TIMEOUT_MS);
  let response;
  try {
    response = await fetch(path, {
      method,
      headers: body === undefined ? {} : { 'Content-Type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: controller.signal,
      cache: 'no-store',
    });
  } catch (error) {
    throw new ApiError({
      message: controller.signal.aborted ? `${method} ${path} timed out` : `cannot reach the agent (${error.message})`,
      hint: 'Is `kanban agent` still running? The page reconnects by itself when it is back.',
    });
  } finally {
    clearTimeout(timer);
  }
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    // fall through: reported below as a non-JSON answer
  }
  if (!response.ok) {
    const e = data?.error ?? {};
    throw new ApiError({
      status: response.status,
      code: e.code ?? 'http_error',
      message: e.message ?? `${method} ${path} failed with HTTP ${response.status}`,
      hint: e.hint ?? '',
      field: e.field ?? null,
    });
  }
  if (data === null && text) {
    throw new ApiError({ status: response.status, code: 'bad_response', message: `${method} ${path} did not answer JSON` });
  }
  return data;
}

// IDs are UUIDs and `replica:counter`; ':' stays as it is (valid in a path segment).
const enc = (s) => String(s).replace(/[^A-Za-z0-9:._~-]/g, encodeURIComponent);

export const api = {
  boards: () => request('GET', '/api/boards'),
  createBoard: (title) => request('POST', '/api/boards', { title }),
  board: (id) => request('GET', `/api/boards/${enc(id)}`),
  renameBoard: (id, title) => request('PATCH', `/api/boards/${enc(id)}`, { title }),

  createColumn: (boardId, title, after) => request('POST', `/api/boards/${enc(boardId)}/columns`, { title, after }),
  updateColumn: (id, changes) => request('PATCH', `/api/columns/${enc(id)}`, changes),
  deleteColumn: (id) => request('DELETE', `/api/columns/${enc(id)}`),
  restoreColumn: (id) => request('POST', `/api/columns/${enc(id)}/restore`),

  createTask: (columnId, title, after, description) =>
    request('POST', `/api/columns/${enc(columnId)}/tasks`, { title, after, description }),
  updateTask: (id, changes) => request('PATCH', `/api/tasks/${enc(id)}`, changes),
  moveTask: (id, columnId, after) => request('POST', `/api/tasks/${enc(id)}/move`, { columnId, after }),
  deleteTask: (id) => request('DELETE', `/api/tasks/${enc(id)}`),
  restoreTask: (id) => request('POST', `/api/tasks/${enc(id)}/restore`),

  conflicts: (boardId) => request('GET', `/api/boards/${enc(boardId)}/conflicts`),
  restoreConflict: (boardId, loserOpId) =>
    request('POST', `/api/boards/${enc(boardId)}/conflicts/${enc(loserOpId)}/restore`),

  /** This agent's changes to the board that the relay does not have yet, and its refusals of them. */
  queued: (boardId) => request('GET', `/api/boards/${enc(boardId)}/queued`),
  /** Throws those changes away; the board goes back to what the relay has. */
  discardQueued: (boardId) => request('POST', `/api/boards/${enc(boardId)}/queued/discard`),

  health: () => request('GET', '/health'),
  syncHealth: () => request('GET', '/health/websocket'),
  /** Asks the agent to retry the relay now. The agent may not have this route yet (404 no_route). */
  syncReconnect: () => request('POST', '/api/sync/reconnect'),
};
