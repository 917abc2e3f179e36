"""Label points outside their image. The crop around such a point is blank (clipped windows, as the
notebooks) or mostly padding, so a run names them before it starts and logs how many there are."""
from __future__ import annotations

from harness.data.rsna import SampleTable
from harness.data.series import read_header


def points_outside(table: SampleTable) -> list[str]:
    """One line per sample whose (x, y) lies outside [0, Columns) x [0, Rows) of its labelled file.
    Reads headers only, once per distinct file; an unreadable header is left to the pixel reader."""
    sizes: dict[tuple[int, int, int], tuple[int, int] | None] = {}
    found = []
    for s in table.samples.itertuples():
        key = (s.study_id, s.series_id, s.instance_number)
        if key not in sizes:
            try:
                header = read_header(s.instance_number, table.image_path(*key))
                sizes[key] = (header.columns, header.rows) if header.rows and header.columns else None
            except Exception:  # noqa: BLE001 - a broken file is reported as unreadable elsewhere
                sizes[key] = None
        size = sizes[key]
        if size and not (0 <= s.x < size[0] and 0 <= s.y < size[1]):
            found.append(f"{table.image_path(*key).relative_to(table.root)} {s.level}: ({s.x:g}, {s.y:g}) "
                         f"outside {size[0]}x{size[1]}")
    return found
