"""The timeline of a run as a picture: an SVG drawn by hand, and an HTML page around it.

Requests per tenth of a second as stacked bars (answered, sent to other pods, refused,
failed), the app's own shutdown phases and the preStop hook as bands above them, and a
line for each moment the kubelet or the Service acted (the deletion, the hook, the
endpoint update, the stop signal, SIGKILL, the exit). Self-contained: no script, no
font, no dependency.
"""

from __future__ import annotations

import html
from typing import Any

WIDTH = 960
_LEFT, _RIGHT = 56, 16
_BUCKET = 0.1  # seconds per bar, as `LoadStats.series` counts them
_CHAR = 6.0  # the width of a character of the 11 px labels, near enough

# (what the bars count, the legend, the colour), bottom to top.
_KINDS = (
    ("ok", "answered", "#3a9b4f"),
    ("rerouted", "sent to another pod", "#c9ced6"),
    ("refused", "refused", "#f0a020"),
    ("failed", "failed (reset, timeout, 5xx)", "#d63a2f"),
)
_PHASE_COLOURS = {
    "announce": "#7a5cc2",
    "propagation": "#a48be0",
    "drain": "#3f7fd1",
    "flush": "#2a9d9a",
    "release": "#6aa84f",
    "report": "#8c8c8c",
}
# Timeline events drawn as lines: (the start of the event's name, the label, the colour).
_MARKERS = (
    ("pod deleted", "deleted", "#222222"),
    ("preStop hook starts", "preStop", "#555555"),
    ("liveness", "liveness stops", "#999999"),
    ("readiness probe fails", "not ready", "#b58900"),
    ("endpoints updated", "endpoints updated", "#2f6db3"),
    ("SIG", None, "#c2410c"),
    ("app exited", "exit", "#222222"),
)


def render_svg(data: dict[str, Any]) -> str:
    """The picture of a report (`graceshut.simulate._report.to_dict`)."""
    return _Drawing(data).svg()


def render_html(data: dict[str, Any], text: str) -> str:
    """One page: the picture, then the text report."""
    verdict = "clean" if data["clean"] else "NOT CLEAN"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>graceshut simulate: {verdict}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2rem;color:#222}}
pre{{background:#f6f8fa;padding:1rem;overflow:auto;font-size:12px}}</style>
</head><body>
<h1>graceshut simulate: {verdict}</h1>
{render_svg(data)}
<pre>{html.escape(text)}</pre>
</body></html>
"""


class _Drawing:
    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data
        self.parts: list[str] = []
        times = [s["t"] for s in data["series"]]
        first = min(times, default=-0.5) - 0.2  # the app's start and readiness: off the left
        times += [e["t"] for e in data["timeline"] if e["t"] is not None and e["t"] >= first]
        self.start: float = min([*times, -0.5])
        self.end: float = max([*times, 1.0]) + _BUCKET
        peak = max((sum(s.get(k, 0) for k, *_ in _KINDS) for s in data["series"]), default=1)
        self.peak = max(peak, 1)

    def x(self, t: float) -> float:
        span = self.end - self.start
        return _LEFT + (t - self.start) / span * (WIDTH - _LEFT - _RIGHT)

    def svg(self) -> str:
        markers = self._markers()
        rows = max((row for *_, row in markers), default=0) + 1
        top = 44 + 16 * rows  # the marker labels go above the bands
        bands_top, chart_top = top, top + 44
        chart_height = 220
        bottom = chart_top + chart_height
        height = bottom + 86
        self._title()
        self._bands(bands_top)
        self._bars(chart_top, chart_height)
        self._axis(bottom, chart_top, chart_height)
        for t, label, colour, row in markers:
            x = self.x(t)
            self._add(
                f'<line x1="{x:.1f}" y1="{44 + 16 * row + 4}" x2="{x:.1f}" y2="{bottom}" '
                f'stroke="{colour}" stroke-width="1.2" stroke-dasharray="4 3"/>'
            )
            text = f"{label} {t:+.2f}s"
            if x + 3 + len(text) * _CHAR > WIDTH:  # at the right edge: the label goes left
                self._text(x - 3, 44 + 16 * row + 12, text, colour=colour, anchor="end")
            else:
                self._text(x + 3, 44 + 16 * row + 12, text, colour=colour)
        self._legend(height - 38)
        body = "\n".join(self.parts)
        return (
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
            f'viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="11">\n'
            f'<rect width="{WIDTH}" height="{height}" fill="#ffffff"/>\n{body}\n</svg>\n'
        )

    def _title(self) -> None:
        data = self.data
        verdict = "clean" if data["clean"] else "NOT CLEAN"
        requests = data["requests"]
        command = " ".join(data["settings"]["command"])
        if len(command) > 70:  # noqa: PLR2004 - what fits beside the counts
            command = command[:67] + "..."
        self._text(_LEFT, 18, f"graceshut simulate: {command}", size=13, weight="bold")
        summary = (
            f"{verdict}: {requests['sent']} sent, {requests['ok']} ok, {requests['failed']} "
            f"failed, {requests['rerouted']} to other pods; exit {data['exit']['description']}"
        )
        colour = "#3a9b4f" if data["clean"] else "#d63a2f"
        self._text(_LEFT, 34, summary, colour=colour)

    def _bands(self, top: int) -> None:
        """The preStop hook and the app's phases, each a labelled bar."""
        self._text(4, top + 13, "preStop", colour="#555555")
        self._text(4, top + 33, "app", colour="#555555")
        prestop = self.data["prestop"]
        start = _event(self.data, "preStop hook starts")
        if prestop is not None and start is not None:
            end = start + (prestop["duration"] or 0.0)
            if prestop["overran"]:
                end = float(self.data["sigterm_at"] or end)
            colour = "#8c8c8c" if prestop["ok"] else "#d63a2f"
            self._band(start, end, top + 2, colour, prestop["action"].split(" ")[0])
        for phase in self.data["app_phases"]:
            colour = _PHASE_COLOURS.get(str(phase["name"]), "#8c8c8c")
            end = phase["t"] + max(phase["duration"], 0.02)
            self._band(phase["t"], end, top + 22, colour, str(phase["name"]))

    def _band(self, start: float, end: float, y: int, colour: str, label: str) -> None:
        x0, x1 = self.x(start), self.x(end)
        self._add(
            f'<rect x="{x0:.1f}" y="{y}" width="{max(x1 - x0, 1.5):.1f}" height="16" '
            f'fill="{colour}" rx="2"><title>{html.escape(label)}: {start:+.2f}s to '
            f"{end:+.2f}s</title></rect>"
        )
        if x1 - x0 > len(label) * _CHAR + 4:
            self._text(x0 + 3, y + 12, label, colour="#ffffff")

    def _bars(self, top: int, height: int) -> None:
        width = max(self.x(_BUCKET) - self.x(0) - 0.6, 0.8)
        for bucket in self.data["series"]:
            y = top + height
            for kind, _, colour in _KINDS:
                count = bucket.get(kind, 0)
                if not count:
                    continue
                h = count / self.peak * height
                y -= h
                self._add(
                    f'<rect x="{self.x(bucket["t"]):.1f}" y="{y:.1f}" width="{width:.1f}" '
                    f'height="{h:.1f}" fill="{colour}"><title>{bucket["t"]:+.1f}s: {count} '
                    f"{kind}</title></rect>"
                )

    def _axis(self, bottom: int, top: int, height: int) -> None:
        self._add(
            f'<line x1="{_LEFT}" y1="{bottom}" x2="{WIDTH - _RIGHT}" y2="{bottom}" '
            'stroke="#444444"/>'
        )
        self._add(f'<line x1="{_LEFT}" y1="{top}" x2="{_LEFT}" y2="{bottom}" stroke="#444444"/>')
        self._text(_LEFT - 6, top + 10, str(self.peak), anchor="end")
        self._text(_LEFT - 6, bottom, "0", anchor="end")
        self._text(4, top + height // 2, "req per", colour="#555555")
        self._text(4, top + height // 2 + 13, "0.1 s", colour="#555555")
        step = _tick_step(self.end - self.start)
        t = step * int(self.start / step)
        while t <= self.end:
            if t >= self.start:
                x = self.x(t)
                self._add(
                    f'<line x1="{x:.1f}" y1="{bottom}" x2="{x:.1f}" y2="{bottom + 4}" '
                    'stroke="#444444"/>'
                )
                self._text(x, bottom + 16, f"{t:+g}s", anchor="middle")
            t = round(t + step, 6)
        self._text(WIDTH - _RIGHT, bottom + 30, "seconds from the pod's deletion", anchor="end")

    def _legend(self, y: int) -> None:
        x = float(_LEFT)
        for _, label, colour in _KINDS:
            self._add(f'<rect x="{x:.1f}" y="{y - 9}" width="10" height="10" fill="{colour}"/>')
            self._text(x + 14, y, label)
            x += 14 + len(label) * _CHAR + 18
        x = float(_LEFT)
        if self.data["app_phases"]:
            self._text(x, y + 20, "the app's phases:")
            x += 110
        for phase in self.data["app_phases"]:
            name = str(phase["name"])
            colour = _PHASE_COLOURS.get(name, "#8c8c8c")
            self._add(f'<rect x="{x:.1f}" y="{y + 11}" width="10" height="10" fill="{colour}"/>')
            self._text(x + 14, y + 20, f"{name} {phase['duration']:.2f}s")
            x += 14 + (len(name) + 6) * _CHAR + 18

    def _markers(self) -> list[tuple[float, str, str, int]]:
        """(t, label, colour, label row) for each event worth a line, labels kept apart."""
        found: list[tuple[float, str, str]] = []
        for event in self.data["timeline"]:
            for prefix, label, colour in _MARKERS:
                if event["t"] is not None and event["event"].startswith(prefix):
                    if prefix == "SIG" and event["event"].count(" "):
                        continue  # only the bare signal events: SIGTERM, SIGKILL...
                    found.append((event["t"], label or event["event"], colour))
                    break
        placed: list[tuple[float, str, str, int]] = []
        ends: list[float] = []  # where the last label of each row ends
        for t, label, colour in sorted(found):
            x = self.x(t)
            width = len(f"{label} {t:+.2f}s") * _CHAR
            # A label reads to the right of its line, or to the left at the right edge.
            left, right = (x - 3 - width, x) if x + 3 + width > WIDTH else (x, x + 3 + width)
            row = next((i for i, end in enumerate(ends) if end + 6 < left), len(ends))
            if row == len(ends):
                ends.append(right)
            else:
                ends[row] = right
            placed.append((t, label, colour, row))
        return placed

    def _text(
        self,
        x: float,
        y: float,
        text: str,
        *,
        colour: str = "#222222",
        size: int = 11,
        weight: str = "normal",
        anchor: str = "start",
    ) -> None:
        self._add(
            f'<text x="{x:.1f}" y="{y:.1f}" fill="{colour}" font-size="{size}" '
            f'font-weight="{weight}" text-anchor="{anchor}">{html.escape(text)}</text>'
        )

    def _add(self, part: str) -> None:
        self.parts.append(part)


def _event(data: dict[str, Any], name: str) -> float | None:
    return next((e["t"] for e in data["timeline"] if e["event"] == name), None)


def _tick_step(span: float) -> float:
    for step in (0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0):
        if span / step <= 12:  # noqa: PLR2004 - at most a dozen ticks
            return step
    return 120.0
