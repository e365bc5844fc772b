"""Write docs/benchmarks.md's tables from the saved result files.

Every number on the page comes from a file in benchmarks/results/ (written by
`run.py`, `instructions.py` and `spill.py`, each with the commit, Python and machine
it was measured on). The page marks where each table goes::

    <!-- results:middleware -->
    (written by this script: anything here is replaced)
    <!-- /results:middleware -->

The prose around the markers is written by hand and quotes no measured number.

    python3 benchmarks/render.py            # rewrite the page from the results
    python3 benchmarks/render.py --check    # exit 1 if the page is not what they give

Stdlib only: it runs in any Python 3.11+.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from _harness import RESULTS, ROOT, format_ratio, format_value

PAGE = ROOT / "docs" / "benchmarks.md"
MARKER = re.compile(
    r"(?P<open><!-- results:(?P<name>[a-z_-]+) -->\n)"
    r"(?P<body>.*?)"
    r"(?P<close><!-- /results:(?P=name) -->)",
    re.DOTALL,
)
#: The result files of `run.py`'s measures, in the order of the goals table.
MEASURES = ("middleware", "throughput", "drain", "sequence", "concurrency", "overshoot", "memory")

Result = dict[str, Any]


def load(directory: Path, name: str) -> Result:
    """One saved result file."""
    path = directory / f"{name}.json"
    if not path.exists():
        raise SystemExit(f"{path} is missing: run the command that saves it ({name})")
    result: Result = json.loads(path.read_text())
    return result


def provenance(result: Result) -> str:
    """Where a result comes from: the command, commit, Python and machine."""
    run = result["run"]
    machine = run["machine"]
    libraries = ", ".join(
        f"{name} {version}" for name, version in run["libraries"].items() if version
    )
    load = ""
    if machine["load_before"] and machine["load_after"]:
        load = (
            f"; load average {machine['load_before'][0]:.2f} before, "
            f"{machine['load_after'][0]:.2f} after (1 min)"
        )
    dirty = " (with uncommitted changes)" if run["dirty"] else ""
    note = f"; {machine['note']}" if machine["note"] else ""
    quick = " **quick mode: rough numbers**" if run["mode"] == "quick" else ""
    memory = f", {machine['memory_gib']:g} GiB" if machine["memory_gib"] else ""
    return (
        f"*`{result['command']}`, commit `{run['commit'][:12]}`{dirty}, {run['date'][:10]};"
        f"{quick} {run['python']}; {libraries}. Machine: {machine['cpu']}, "
        f"{machine['cores_usable']} of {machine['cores']} cores{memory}, "
        f"{machine['os']}{load}{note}.*"
    )


def _met(value: bool | None) -> str:
    return {True: "met", False: "**not met**", None: "reported"}[value]


def _cell(text: str) -> str:
    return text.replace("|", "/").replace("\n", " ")


def measure_table(measure: Result) -> list[str]:
    """One measure of `run.py`: graceshut, its other values, and each baseline."""
    unit = measure["unit"]
    head = f"**{_cell(measure['title'])}**: goal {_cell(measure['goal'])}, {_met(measure['met'])}"
    if measure["error"] or measure["skipped"]:
        return [head, "", f"Not measured: {_cell(measure['error'] or measure['skipped'])}"]
    rows = [
        "| | value | graceshut / it | note |",
        "| --- | ---: | ---: | --- |",
        f"| **graceshut** | **{format_value(measure['graceshut'], unit)}** | | |",
    ]
    rows += [
        f"| {_cell(label)} | {_value_in(label, value, unit)} | | |"
        for label, value in measure.get("values", {}).items()
    ]
    for line in measure["lines"]:
        value = line["baseline_value"]
        shown = format_value(value, unit) if value is not None else "-"
        rows.append(
            f"| {_cell(line['baseline'])} | {shown} | {format_ratio(line['ratio'])} "
            f"| {_cell(line['note'])} |"
        )
    lines = [head, "", *rows]
    if measure["detail"]:
        lines += ["", f"<small>{_cell(measure['detail'])}</small>"]
    return lines


def _value_in(label: str, value: float, unit: str) -> str:
    if "points" in label:
        return f"{value:+.2f}"
    if label.startswith("control") or unit.startswith("x"):
        return format_ratio(value)
    return format_value(value, unit)


def measures_block(directory: Path, name: str) -> list[str]:
    """Every measure in one of `run.py`'s result files."""
    result = load(directory, name)
    lines = [provenance(result)]
    for measure in result["results"]:
        lines += ["", *measure_table(measure)]
    return lines


def goals_block(directory: Path) -> list[str]:
    """Each goal the code sets, with the saved result against it."""
    lines = ["| measure | goal | graceshut | |", "| --- | --- | ---: | --- |"]
    for name in MEASURES:
        for measure in load(directory, name)["results"]:
            value = format_value(measure["graceshut"], measure["unit"])
            lines.append(
                f"| {_cell(measure['title'])} | {_cell(measure['goal'])} | {value} "
                f"| {_met(measure['met'])} |"
            )
    counted = load(directory, "instructions")["results"]
    for stack, apps in counted["stacks"].items():
        bare = apps["bare"]["median"]
        points = 100 * (apps["graceshut"]["median"] - apps["counter"]["median"]) / bare
        lines.append(
            f"| instructions per request under uvicorn, {stack} | {counted['goal']} "
            f"| {points:+.2f} points | {_met(counted['met'][stack])} |"
        )
    return lines


def profile_block(directory: Path) -> list[str]:
    """The parts of the request path, what a held request keeps, and py-spy's lines."""
    result = load(directory, "profile")
    data = result["results"]
    parts = data["parts"]
    lines = [
        provenance(result),
        "",
        (
            f"In-process, {parts['requests']:,} requests x {parts['rounds']} interleaved rounds, "
            f"median; the bare app itself takes {parts['bare_us']:.3f} us a request."
        ),
        "",
        "| variant of the hot path | us per request | added over bare | vs the copy | what it is |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    lines += [
        f"| {row['variant']} | {row['us_per_request']:.3f} | {row['added_us']:.3f} "
        f"| {row['vs_copy_ns']:+.0f} ns | {row['kind']} |"
        for row in parts["variants"]
    ]
    memory = data["memory"]
    lines += [
        "",
        (
            f"Memory per in-flight request, {memory['requests']:,} held at once (tracemalloc, "
            "added over the bare app's):"
        ),
        "",
        "| variant | bytes per held request |",
        "| --- | ---: |",
    ]
    lines += [f"| {row['variant']} | {row['bytes']:.0f} B |" for row in memory["rows"]]
    sampled = data["lines"]
    lines.append("")
    if "skipped" in sampled:
        lines.append(f"Line by line: not sampled ({sampled['skipped']}).")
        return lines
    lines += [
        (
            f"Line by line (py-spy, {sampled['seconds']:g} s of requests through the real "
            f"middleware; {sampled['share_in_graceshut']:.0%} of the samples inside a request are "
            "in graceshut's own lines, the rest in the app and the server's send; each line's "
            "share priced at what the middleware adds above):"
        ),
        "",
        "| share | ns per request | line | function | source |",
        "| ---: | ---: | --- | --- | --- |",
    ]
    lines += [
        f"| {row['share']:.1%} | {row['ns']:.0f} | {row['where']} | `{row['function']}` "
        f"| `{_cell(row['source'])}` |"
        for row in sampled["rows"]
    ]
    return lines


def instructions_block(directory: Path) -> list[str]:
    """Instructions per request under uvicorn, by stack and app."""
    result = load(directory, "instructions")
    data = result["results"]
    lines = [
        provenance(result),
        "",
        (
            f"{data['requests']:,} requests counted per launch after {data['warmup']:,} to warm "
            f"up; median of {data['launches']} launches (the spread over launches in brackets)."
        ),
        "",
        (
            "| stack | bare | counter | counter + closing send | graceshut "
            "| graceshut - counter | graceshut - closing |"
        ),
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for stack, apps in data["stacks"].items():
        bare = apps["bare"]["median"]

        def added(name: str, apps: dict[str, dict[str, float]] = apps, bare: float = bare) -> str:
            app = apps[name]
            return (
                f"+{app['median'] - bare:,.0f} ({app['min'] - bare:+,.0f} to "
                f"{app['max'] - bare:+,.0f})"
            )

        def points(floor: str, apps: dict[str, dict[str, float]] = apps, bare: float = bare) -> str:
            return (
                f"{100 * (apps['graceshut']['median'] - apps[floor]['median']) / bare:.2f} points"
            )

        lines.append(
            f"| {stack} | {bare:,.0f} | {added('counter')} | {added('closing')} "
            f"| {added('graceshut')} | {points('counter')} | {points('closing')} |"
        )
    return lines


def spill_block(directory: Path) -> list[str]:
    """The spill fallback and the replay, for a buffer of rows."""
    result = load(directory, "spill")
    data = result["results"]
    lines = [
        provenance(result),
        "",
        (
            f"{data['rows']:,} rows, median of {data['rounds']} rounds; PostgreSQL "
            f"{data['postgresql']}, SQLAlchemy {data['sqlalchemy']}; the spill file is "
            f"{data['spill_file_mb']:.2f} MB."
        ),
        "",
        "| step | time | rows per second |",
        "| --- | ---: | ---: |",
    ]
    lines += [
        f"| {row['step']} | {row['ms']:.1f} ms | {row['rows_per_s']:,.0f} |"
        for row in data["timings"]
    ]
    return lines


def propagation_block(directory: Path) -> list[str]:
    """The propagation delay behind HAProxy: ``auto``'s distribution, and a rollout."""
    result = load(directory, "propagation_delay")
    data = result["results"]
    lines = [
        provenance(result),
        "",
        "| case | restarts | delay: min / median / max | ended by | requests failed |",
        "| --- | ---: | --- | --- | ---: |",
    ]
    for name, runs in data["restarts"].items():
        delays = sorted(run["delay"] for run in runs)
        median = delays[len(delays) // 2]
        ends = ", ".join(sorted({run["ended"] for run in runs}))
        failed = sum(run["failed"] for run in runs)
        sent = sum(run["sent"] for run in runs)
        lines.append(
            f"| {name} | {len(runs)} | {delays[0]:.2f} / {median:.2f} / {delays[-1]:.2f} s "
            f"| {ends} | {failed} of {sent:,} |"
        )
    lines += [
        "",
        f"| rollout of {data['replicas']} replicas | total | requests failed |",
        "| --- | ---: | ---: |",
    ]
    lines += [
        f"| {label} | {run['seconds']:.1f} s | {run['failed']} of {run['sent']:,} |"
        for label, run in data["rollout"].items()
    ]
    return lines


BLOCKS: dict[str, Callable[[Path], list[str]]] = {
    "goals": goals_block,
    "profile": profile_block,
    "instructions": instructions_block,
    "spill": spill_block,
    "propagation_delay": propagation_block,
    **{name: (lambda d, n=name: measures_block(d, n)) for name in MEASURES},  # type: ignore[misc]
}


def render_page(text: str, directory: Path = RESULTS) -> str:
    """*text* with every marked block rewritten from the result files in *directory*."""

    def block(match: re.Match[str]) -> str:
        name = match["name"]
        if name not in BLOCKS:
            raise SystemExit(f"unknown block <!-- results:{name} -->: one of {sorted(BLOCKS)}")
        body = "\n".join(BLOCKS[name](directory))
        return f"{match['open']}\n{body}\n\n{match['close']}"

    return MARKER.sub(block, text)


def block_names(text: str) -> Iterable[str]:
    """The names of the marked blocks in *text*, in order."""
    return [match["name"] for match in MARKER.finditer(text)]


def main(argv: list[str] | None = None) -> int:
    """Rewrite the page, or with --check say whether it is up to date."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check; exit 1 if stale")
    parser.add_argument("--results", type=Path, default=RESULTS, metavar="DIR")
    parser.add_argument("--page", type=Path, default=PAGE, metavar="FILE")
    args = parser.parse_args(argv)
    text = args.page.read_text()
    rendered = render_page(text, args.results)
    if args.check:
        if rendered != text:
            print(f"{args.page} is not what {args.results} gives: run benchmarks/render.py")
            return 1
        return 0
    args.page.write_text(rendered)
    return 0


if __name__ == "__main__":
    sys.exit(main())
