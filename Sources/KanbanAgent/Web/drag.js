// HTML5 drag and drop: cards within and between columns (and out of Recovered tasks), columns
// left and right. A drop names the card (or column) just before the drop point as `after`,
// null at the top (or far left), which is exactly what the move API takes.

const TASK_TYPE = 'application/x-kanban-task';
const COLUMN_TYPE = 'application/x-kanban-column';

/** The elements of `items` whose middle lies past the pointer, split at the drop point. */
function dropPoint(items, isBefore) {
  const index = items.findIndex(isBefore);
  const before = index === -1 ? null : items[index];
  const previous = index === -1 ? items.at(-1) : items[index - 1];
  return { before, after: previous?.dataset.id ?? null };
}

export function enableDragAndDrop({ moveTask, moveColumn }) {
  let drag = null;
  const taskIndicator = Object.assign(document.createElement('li'), { className: 'drop-indicator' });
  const columnIndicator = Object.assign(document.createElement('div'), { className: 'column-drop-indicator' });
  taskIndicator.setAttribute('aria-hidden', 'true');
  columnIndicator.setAttribute('aria-hidden', 'true');

  function clearIndicators() {
    taskIndicator.remove();
    columnIndicator.remove();
    for (const el of document.querySelectorAll('.drop-target')) el.classList.remove('drop-target');
  }

  function target(event) {
    const el = event.target instanceof Element ? event.target : event.target?.parentElement;
    if (!el || !drag) return null;
    if (drag.kind === 'task') {
      const column = el.closest('[data-testid="column"]');
      if (!column) return null;
      const list = column.querySelector('[data-testid="task-list"]');
      const cards = [...list.children].filter((c) => c.dataset.testid === 'task' && c.dataset.id !== drag.id);
      const { before, after } = dropPoint(cards, (c) => {
        const r = c.getBoundingClientRect();
        return event.clientY < r.top + r.height / 2;
      });
      return { column, list, before, after, columnId: column.dataset.id };
    }
    if (!el.closest('#columns')) return null;
    const list = document.getElementById('column-list');
    const columns = [...list.children].filter((c) => c.dataset.testid === 'column' && c.dataset.id !== drag.id);
    const { before, after } = dropPoint(columns, (c) => {
      const r = c.getBoundingClientRect();
      return event.clientX < r.left + r.width / 2;
    });
    return { list, before, after };
  }

  document.addEventListener('dragstart', (event) => {
    const el = event.target;
    if (!(el instanceof Element)) return;
    if (el.matches('[data-testid="task"], [data-testid="orphan"]')) {
      drag = { kind: 'task', id: el.dataset.id, el };
      event.dataTransfer.setData(TASK_TYPE, el.dataset.id);
      event.dataTransfer.setData('text/plain', el.querySelector('.task-title')?.textContent ?? '');
    } else if (el.matches('.column-head')) {
      const column = el.closest('[data-testid="column"]');
      drag = { kind: 'column', id: column.dataset.id, el: column };
      event.dataTransfer.setData(COLUMN_TYPE, column.dataset.id);
      event.dataTransfer.setData('text/plain', column.querySelector('.column-title')?.textContent ?? '');
      event.dataTransfer.setDragImage(column, 24, 16);
    } else {
      return;
    }
    event.dataTransfer.effectAllowed = 'move';
    const dragged = drag.el;
    setTimeout(() => dragged.classList.add('dragging')); // after the browser took the drag image
  });

  document.addEventListener('dragover', (event) => {
    if (!drag) return;
    const t = target(event);
    if (!t) {
      clearIndicators();
      return;
    }
    event.preventDefault();
    event.dataTransfer.dropEffect = 'move';
    const indicator = drag.kind === 'task' ? taskIndicator : columnIndicator;
    if (indicator.parentNode !== t.list || indicator.nextSibling !== t.before) t.list.insertBefore(indicator, t.before);
    if (t.column && !t.column.classList.contains('drop-target')) {
      clearIndicators();
      t.column.classList.add('drop-target');
      t.list.insertBefore(indicator, t.before);
    }
  });

  document.addEventListener('drop', (event) => {
    if (!drag) return;
    const t = target(event);
    clearIndicators();
    if (!t) return;
    event.preventDefault();
    if (drag.kind === 'task') moveTask(drag.id, t.columnId, t.after);
    else moveColumn(drag.id, t.after);
  });

  document.addEventListener('dragend', () => {
    drag?.el.classList.remove('dragging');
    drag = null;
    clearIndicators();
  });
}
