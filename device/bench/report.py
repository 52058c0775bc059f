"""Show what ``device.bench`` measured: terminal tables, a PNG plot, and a side-by-side
comparison of JSON files taken on different machines.

rich and matplotlib belong to the workstation extra, not to ``sightwire[device]``: both
are imported inside the functions that use them. Without rich the tables are printed as
plain text (a Pi prints its figures either way); the PNG needs matplotlib.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from device.bench.options import ROUND_RUNS, SCHEMA
from device.errors import SightwireError, one_line

INTERLEAVED = f"CPU models interleaved in rounds of {ROUND_RUNS} invokes"

MATPLOTLIB_HINT = "--plot needs matplotlib: pip install 'sightwire[train]' (or matplotlib)"
MISSING = "—"


@dataclass
class Tab:
    """One table, independent of how it is drawn."""

    title: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# --- drawing --------------------------------------------------------------------------


def render_plain(tab: Tab) -> str:
    """A table as aligned text (the fallback without rich, and for logs)."""
    cells = [tab.columns, *tab.rows]
    lines_per = [[c.split("\n") for c in row] for row in cells]
    widths = [
        max(len(line) for row in lines_per for line in row[i]) for i in range(len(tab.columns))
    ]
    out = [tab.title]
    for n, row in enumerate(lines_per):
        height = max(len(c) for c in row)
        for k in range(height):
            parts = []
            for i, (cell, width) in enumerate(zip(row, widths, strict=True)):
                text = cell[k] if k < len(cell) else ""
                parts.append(text.rjust(width) if i else text.ljust(width))
            out.append("  ".join(parts).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    out.extend(tab.notes)
    return "\n".join(out)


def show(tabs: Sequence[Tab], stream: TextIO | None = None) -> None:
    """Print tables with rich when it is installed, else as plain text."""
    stream = stream or sys.stdout
    try:
        from rich import box
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        for tab in tabs:
            print(render_plain(tab) + "\n", file=stream)
        return
    # Piped output (logs, CI) is not cut at 80 columns.
    console = Console(file=stream, width=None if stream.isatty() else 120)
    for tab in tabs:
        if tab.rows:
            table = Table(title=tab.title, title_justify="left", box=box.SIMPLE_HEAD)
            for i, col in enumerate(tab.columns):
                if i == 0:
                    table.add_column(col, no_wrap=True)
                else:
                    table.add_column(col, justify="right", overflow="fold")
            for row in tab.rows:
                table.add_row(*row)
            console.print(table)
        else:
            console.print(tab.title, markup=False, highlight=False)
        for note in tab.notes:
            console.print(note, markup=False, highlight=False)
        console.print()


# --- one result -----------------------------------------------------------------------


def _num(value: float | None, digits: int = 2) -> str:
    return MISSING if value is None else f"{value:.{digits}f}"


def short(name: str) -> str:
    """A model's display name: the variant, or the extra file's name without .tflite."""
    return name.removesuffix(".tflite")


def _mib(kib: int | None) -> str:
    return MISSING if kib is None else f"{kib / 1024:.1f}"


def machine_line(machine: dict[str, Any]) -> str:
    runtime = machine.get("runtime", {})
    board = f"{machine['board']}, " if machine.get("board") else ""
    features = machine.get("cpu_features")
    simd = f" ({' '.join(features)})" if features else ""
    return (
        f"{board}{machine.get('cpu', '?')} x{machine.get('cores', '?')}{simd}, "
        f"{machine.get('platform', '?')}, Python {machine.get('python', '?')}, "
        f"{runtime.get('name', '?')} {runtime.get('version', '?')}"
    )


def settings_tab(result: dict[str, Any]) -> Tab:
    s, m = result["settings"], result["machine"]
    rows = [
        ["machine", machine_line(m)],
        ["load average", f"{m.get('load_avg_start')} → {m.get('load_avg_end')} (1/5/15 min)"],
        ["bundle", f"{result['bundle']['name']} ({result['bundle']['path']})"],
        ["threads", ", ".join(str(t) for t in s["threads"])],
        ["XNNPACK", "on (runtime default)" if s["xnnpack"] else "off (builtin kernels)"],
        ["runs", f"{s['runs']} timed after {s['warmup']} warm-up, {INTERLEAVED}"],
        ["Edge TPU", "attached" if result.get("edgetpu_attached") else "not used"],
    ]
    return Tab("sightwire bench", ["setting", "value"], rows)


def _ok_rows(result: dict[str, Any]):
    for m in result["models"]:
        if m["status"] == "ok":
            for r in m["results"]:
                yield m, r


def latency_tab(result: dict[str, Any]) -> Tab:
    cols = ["model", "thr", "mean", "p50", "p90", "p99", "min", "max", "fps"]
    tab = Tab("latency of one invoke(), ms", cols)
    for m, r in _ok_rows(result):
        lat = r["latency_ms"]
        tab.rows.append(
            [
                short(m["name"]),
                str(r["threads"]),
                *(_num(lat[k]) for k in ("mean", "p50", "p90", "p99", "min", "max")),
                _num(r["throughput_fps"], 1),
            ]
        )
    for m in result["models"]:
        if m["status"] != "ok":
            tab.notes.append(f"{m['name']}: skipped, {m.get('reason', '').split(';')[0]}")
    return tab


def memory_tab(result: dict[str, Any]) -> Tab:
    cols = ["model", "thr", "file MiB", "load ms", "RSS +MiB", "after warm-up", "VmHWM MiB"]
    tab = Tab("size, load time, memory (RSS added by loading; VmHWM = process peak)", cols)
    for m, r in _ok_rows(result):
        rss = r["rss_kib"]
        tab.rows.append(
            [
                short(m["name"]),
                str(r["threads"]),
                f"{m['bytes'] / 2**20:.2f}",
                _num(r["load_ms"], 1),
                _mib(rss["loaded_delta"]),
                _mib(rss["run_delta"]),
                _mib(rss["hwm"]),
            ]
        )
    return tab


def ratios_tab(result: dict[str, Any]) -> Tab | None:
    ratios = result.get("ratios") or {}
    threads = [str(t) for t in result["settings"]["threads"]]
    tab = Tab("p50 latency ratios (below 1: faster)", ["ratio", *[f"{t} thr" for t in threads]])
    for key, title in (("int8_over_float", "int8 / float"), ("edgetpu_over_int8", "TPU / int8")):
        if key in ratios:
            tab.rows.append([title, *(_num(ratios[key].get(t), 3) for t in threads)])
    for name, value in (ratios.get("int8_over_reference") or {}).items():
        if "skipped" in value:
            tab.notes.append(f"int8 / {name}: not compared, {value['skipped']}")
        else:
            tab.rows.append([f"int8 / {short(name)}", *(_num(value.get(t), 3) for t in threads)])
    return tab if tab.rows or tab.notes else None


def accuracy_tab(result: dict[str, Any]) -> Tab | None:
    acc = result.get("accuracy")
    if not acc:
        return None
    tab = Tab(
        f"top-1 accuracy on {acc['n']} files of {acc['data']}", ["variant", "top-1", "correct"]
    )
    for variant, v in acc["variants"].items():
        tab.rows.append([variant, f"{v['top1']:.2%}", f"{v['correct']}/{acc['n']}"])
    if "int8_agreement_with_float" in acc:
        tab.notes.append(
            f"int8 agrees with float on {acc['int8_agreement_with_float']:.2%} of the files "
            f"(top-1 int8 - float: {acc['int8_minus_float_top1'] * 100:+.2f} points)"
        )
    if acc["unreadable"]:
        tab.notes.append(f"{len(acc['unreadable'])} unreadable file(s) left out")
    return tab


LOOP_STAGES = (
    ("capture", "read"),
    ("fit", "fit"),
    ("convert", "conv"),
    ("invoke", "invoke"),
    ("postprocess", "post"),
    ("publish", "pub"),
)


def loop_tabs(result: dict[str, Any]) -> list[Tab]:
    loops = result.get("loop") or []
    if not loops:
        if result.get("loop_skipped"):
            return [Tab(f"the loop: skipped, {result['loop_skipped']}", [])]
        return []
    capture = loops[0]["capture"]
    cols = ["frames", "variant", "thr", "loop fps", "bare fps", "loop/bare"]
    cols += ["CPU/frame", "bare CPU", "extra CPU", "dropped"]
    fps = Tab(f"the loop: Pipeline fps against bare invoke() (capture: {capture})", cols)
    cols = ["frames", "thr"] + [name for _, name in LOOP_STAGES] + ["busy", "idle"]
    stages = Tab("where the loop's time goes: stage means, ms", cols)
    formats: dict[str, str] = {}
    for r in loops:
        st = r["stages_ms"]
        fmt = r.get("frame_format", "jpg")  # files written before formats were offered
        formats.setdefault(fmt, r.get("frames_are", "JPEG files"))
        fps.rows.append(
            [
                f"{r['size']} {fmt}",
                r["variant"],
                str(r["threads"]),
                _num(r["fps"], 1),
                _num(r["bare_fps"], 1),
                f"{r['loop_over_bare']:.0%}",
                _num(r.get("cpu_ms_per_frame")),
                _num(r.get("bare_cpu_ms_per_invoke")),
                _num(r.get("overhead_cpu_ms_per_frame")),
                str(r["dropped"]),
            ]
        )
        stages.rows.append(
            [
                f"{r['size']} {fmt}",
                str(r["threads"]),
                *(_num(st[key]["mean"]) for key, _ in LOOP_STAGES),
                _num(r["worker_busy_ms"]),
                _num(r["worker_idle_ms"]),
            ]
        )
    fps.notes += [best_line(b) for b in result.get("loop_best") or []]
    fps.notes += [f"{fmt}: {text}" for fmt, text in formats.items()]
    fps.notes.append(
        "CPU ms of the whole process per frame (all threads); bare CPU = per bare invoke(); "
        "extra = the difference, what the loop costs besides inference (with inference "
        "threads on every core, each ms of it is taken from inference)"
    )
    stages.notes.append(
        "read (the frame file; a JPEG decode for jpg), fit and conv run in the capture "
        "thread, beside the worker; busy = the worker's set_tensor..publish per frame; "
        "idle = 1000/fps - busy, the worker waiting for a frame"
    )
    return [fps, stages]


def best_line(best: dict[str, Any]) -> str:
    """The best-vs-best figure of one loop size and format, as one line."""
    return (
        f"best against best, {best['size']} {best['frame_format']} {best['variant']}: "
        f"loop {_num(best['loop_fps'], 1)} fps ({best['loop_threads']} thr) / bare "
        f"{_num(best['bare_fps'], 1)} fps ({best['bare_threads']} thr) = "
        f"{best['best_loop_over_best_bare']:.0%}"
    )


def result_tabs(result: dict[str, Any]) -> list[Tab]:
    tabs = [settings_tab(result), latency_tab(result), memory_tab(result)]
    tabs += [t for t in (ratios_tab(result), accuracy_tab(result)) if t]
    return tabs + loop_tabs(result)


# --- comparing files ------------------------------------------------------------------


def load_result(path: str | Path) -> dict[str, Any]:
    """A bench JSON file, or one line saying why it is not one."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SightwireError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SightwireError(f"{path}: not a bench JSON file ({exc})") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise SightwireError(f'{path}: not a bench JSON file (no "schema": "{SCHEMA}")')
    try:  # what --compare reads, read once now: a damaged file fails here, in one line
        headline(data)
        if not isinstance(data["machine"], dict):
            raise TypeError("machine is not an object")
    except (KeyError, TypeError, AttributeError, ValueError, IndexError) as exc:
        what = f"no {exc}" if isinstance(exc, KeyError) else one_line(exc)
        raise SightwireError(f"{path}: not a bench JSON file ({what})") from None
    return data


def headline(result: dict[str, Any]) -> dict[str, str]:
    """The figures worth comparing across machines, flat and in reading order."""
    m, s = result["machine"], result["settings"]
    rt = m.get("runtime", {})
    out = {
        "created": result.get("created", MISSING),
        "board": m.get("board") or MISSING,
        "SIMD (int8 speed)": " ".join(m.get("cpu_features") or []) or MISSING,
        "platform": m.get("platform", MISSING),
        "runtime": f"{rt.get('name', '?')} {rt.get('version', '?')}",
        "XNNPACK": "on" if s.get("xnnpack") else "off",
        "load average": str((m.get("load_avg_start") or [MISSING])[0]),
    }
    for model in result.get("models", []):
        name = short(model["name"])
        if model["status"] != "ok":
            out[f"{name}"] = "skipped"
            continue
        out[f"{name} file MiB"] = f"{model['bytes'] / 2**20:.2f}"
        for r in model["results"]:
            t = r["threads"]
            out[f"{name} p50 ms, {t} thr"] = _num(r["latency_ms"]["p50"])
            out[f"{name} p99 ms, {t} thr"] = _num(r["latency_ms"]["p99"])
            out[f"{name} fps, {t} thr"] = _num(r["throughput_fps"], 1)
            out[f"{name} load ms, {t} thr"] = _num(r["load_ms"], 1)
            out[f"{name} RSS +MiB, {t} thr"] = _mib(r["rss_kib"]["loaded_delta"])
    ratios = result.get("ratios") or {}
    for t, v in (ratios.get("int8_over_float") or {}).items():
        out[f"int8/float, {t} thr"] = _num(v, 3)
    for name, per in (ratios.get("int8_over_reference") or {}).items():
        for t, v in per.items():
            if t != "skipped":
                out[f"int8/{short(name)}, {t} thr"] = _num(v, 3)
    acc = result.get("accuracy")
    if acc:
        for variant, v in acc["variants"].items():
            out[f"top-1 {variant} ({acc['n']} files)"] = f"{v['top1']:.2%}"
        if "int8_agreement_with_float" in acc:
            out["int8 agrees with float"] = f"{acc['int8_agreement_with_float']:.2%}"
    for r in result.get("loop") or []:
        fmt = r.get("frame_format", "jpg")
        frames = r["size"] if fmt == "jpg" else f"{r['size']} {fmt}"
        key = f"loop {frames} {r['variant']}, {r['threads']} thr"
        out[f"{key}: fps"] = _num(r["fps"], 1)
        out[f"{key}: loop/bare"] = f"{r['loop_over_bare']:.0%}"
    for b in result.get("loop_best") or []:
        fmt = b["frame_format"]
        frames = b["size"] if fmt == "jpg" else f"{b['size']} {fmt}"
        out[f"loop {frames} {b['variant']}: best/best"] = f"{b['best_loop_over_best_bare']:.0%}"
    return out


def compare_tab(results: Sequence[dict[str, Any]], names: Sequence[str]) -> Tab:
    """One column per file, headed by its machine; a figure missing from a file is —."""
    figures = [headline(r) for r in results]
    keys: list[str] = []
    for fig in figures:
        keys += [k for k in fig if k not in keys]
    columns = ["figure"]
    for name, r in zip(names, results, strict=True):
        m = r["machine"]
        columns.append(
            f"{name}\n{m.get('cpu', '?')} x{m.get('cores', '?')}\n{m.get('hostname', '')}"
        )
    rows = [[key, *(fig.get(key, MISSING) for fig in figures)] for key in keys]
    return Tab("sightwire bench: side by side", columns, rows)


# --- plot -----------------------------------------------------------------------------


def plot(result: dict[str, Any], path: str | Path) -> Path:
    """Latency distribution per model and thread count (box plot); with loop results a
    second panel shows loop fps beside bare fps."""
    try:
        import matplotlib
    except ImportError:
        raise SightwireError(MATPLOTLIB_HINT) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    series = [
        (f"{m['name']}\n{r['threads']} thr", r["samples_ms"])
        for m in result["models"]
        if m["status"] == "ok"
        for r in m["results"]
    ]
    loops = result.get("loop") or []
    panels = 1 + bool(loops)
    fig, axes = plt.subplots(
        1, panels, figsize=(max(6.0, 1.1 * len(series) + 2) + 5 * (panels - 1), 5)
    )
    axes = list(axes) if panels > 1 else [axes]
    ax = axes[0]
    if series:
        ax.boxplot([s for _, s in series], showfliers=True, whis=(1, 99))
        ax.set_xticks(range(1, len(series) + 1), [n for n, _ in series], rotation=30, ha="right")
        low = min(min(s) for _, s in series)
        high = max(max(s) for _, s in series)
        if low > 0 and high / low > 30:
            ax.set_yscale("log")
    ax.set_ylabel("invoke() latency, ms (whiskers p1–p99)")
    ax.set_title("latency per model and thread count")
    ax.grid(axis="y", alpha=0.3)
    if loops:
        ax2 = axes[1]
        labels = [f"{r['size']} {r.get('frame_format', 'jpg')}\n{r['threads']} thr" for r in loops]
        x = range(len(loops))
        ax2.bar([i - 0.2 for i in x], [r["bare_fps"] for r in loops], 0.4, label="bare invoke()")
        ax2.bar([i + 0.2 for i in x], [r["fps"] for r in loops], 0.4, label="whole loop")
        for i, r in enumerate(loops):
            ax2.annotate(
                f"{r['loop_over_bare']:.0%}", (i + 0.2, r["fps"]), ha="center", va="bottom"
            )
        ax2.set_xticks(list(x), labels)
        ax2.set_ylabel("frames per second")
        ax2.set_title(f"the loop ({loops[0]['variant']}) against bare inference")
        ax2.legend()
        ax2.grid(axis="y", alpha=0.3)
    fig.suptitle(machine_line(result["machine"]), fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
