// Table cells the dashboard's tables share.

/** A right-aligned number, grouped by the reader's locale. */
export function numberCell(n: number): HTMLTableCellElement {
  const td = document.createElement("td");
  td.className = "num";
  td.textContent = n.toLocaleString();
  return td;
}

/** A row saying the table has nothing to show, across its `columns`. */
export function emptyRow(columns: number, text: string): HTMLTableRowElement {
  const row = document.createElement("tr");
  const td = document.createElement("td");
  td.colSpan = columns;
  td.className = "muted";
  td.textContent = text;
  row.append(td);
  return row;
}
