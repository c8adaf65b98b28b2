// What both parts of the page (the kernels in main.js, text generation in text.js) use to
// show results: status lines and table cells, each carrying a machine-readable copy for the
// browser test.

// Sets a status line's text; `data-state` (loading, ready, running, done, error) is what
// the browser test waits on.
export function setStatus(element, state, text) {
  element.dataset.state = state;
  element.textContent = text;
}

// A table cell's text, with the raw number beside it in `data-value`.
export function setCell(id, text, value) {
  const cell = document.getElementById(id);
  cell.textContent = text;
  if (value !== undefined) cell.dataset.value = String(value);
}
