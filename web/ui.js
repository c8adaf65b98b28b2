// What both parts of the page (the kernels in main.js, text generation in text.js) use:
// status lines and table cells, each carrying a machine-readable copy for the browser test,
// and controls preset from the URL.

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

// Sets the inputs of `form` named by URL parameters (`?seqLen=4096`; a checkbox takes 1 or
// true); other parameters are left to the other form.
export function presetForm(form, params) {
  for (const [name, value] of params) {
    const input = form.elements.namedItem(name);
    if (!input) continue;
    if (input.type === 'checkbox') input.checked = value === '1' || value === 'true';
    else input.value = value;
  }
}
