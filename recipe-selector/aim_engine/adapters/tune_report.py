"""A tune's report: every trial as a table (text, Markdown, CSV) and one plot of throughput against
latency, one point per trial with the SLO drawn (matplotlib: a PNG, and an HTML page holding the
table and the plot as inline SVG, self-contained)."""

from __future__ import annotations

import csv
import html
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aim_engine.domain.tuning import params_text
from aim_engine.rules.slo import Slo
from aim_engine.rules.tune import Judged

COLUMNS = ("trial", "settings", "outcome", "out tok/s", "runs", "ITL p95 ms", "TTFT p95 ms", "SLO", "seconds", "note")


def rows(judged: Sequence[Judged], *, baseline_id: str, best_id: str | None) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    for j in judged:
        t, f = j.trial, (j.trial.result.figures if j.trial.result is not None else {})
        marks = [m for m, on in (("baseline", t.trial_id == baseline_id), ("best", t.trial_id == best_id)) if on]
        slo = "-" if t.outcome != "measured" else ("met" if j.meets_slo else "missed: " + "; ".join(m.code for m in j.missed))
        out.append(
            (
                t.trial_id + (f" ({', '.join(marks)})" if marks else ""),
                params_text(t.params),
                t.outcome,
                f"{f['output_throughput']:.0f}" if "output_throughput" in f else "-",
                f"{min(t.throughputs):.0f}–{max(t.throughputs):.0f}" if len(t.throughputs) > 1 else "-",
                f"{f['p95_itl_ms']:.2f}" if "p95_itl_ms" in f else "-",
                f"{f['p95_ttft_ms']:.0f}" if "p95_ttft_ms" in f else "-",
                slo,
                f"{t.seconds:.0f}",
                t.reason,
            )
        )
    return out


def table(data: Sequence[tuple[str, ...]]) -> str:
    all_rows = [COLUMNS, *data]
    widths = [max(len(r[i]) for r in all_rows) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in all_rows)


def markdown(data: Sequence[tuple[str, ...]]) -> str:
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    return "\n".join([line(COLUMNS), line(["---"] * len(COLUMNS)), *(line(r) for r in data)])


def csv_text(data: Sequence[tuple[str, ...]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(COLUMNS)
    w.writerows(data)
    return buf.getvalue()


def _figure(judged: Sequence[Judged], slo: Slo, *, baseline_id: str, best_id: str | None, title: str) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), constrained_layout=True)
    measured = [j for j in judged if j.trial.result is not None and j.trial.outcome == "measured"]
    for ax, key, label, target in (
        (axes[0], "p95_itl_ms", "inter-token latency p95 (ms)", slo.itl_p95_ms),
        (axes[1], "p95_ttft_ms", "time to first token p95 (ms)", slo.ttft_p95_ms),
    ):
        for j in measured:
            assert j.trial.result is not None
            f = j.trial.result.figures
            if key not in f:
                continue
            tid = j.trial.trial_id
            style = {"marker": "o", "color": "tab:green" if j.meets_slo else "tab:red", "s": 50}
            if tid == best_id:
                style.update(marker="*", s=220)
            elif tid == baseline_id:
                style.update(marker="s", s=70)
            ax.scatter([f[key]], [f["output_throughput"]], **style)
            ax.annotate(
                tid + (" baseline" if tid == baseline_id else "") + (" best" if tid == best_id else ""),
                (f[key], f["output_throughput"]),
                textcoords="offset points",
                xytext=(5, 5),
                fontsize=8,
            )
        if target is not None:
            ax.axvline(float(target), color="tab:gray", linestyle="--", label=f"SLO {float(target):g} ms")
        if slo.min_output_tokens_per_second is not None:
            floor = float(slo.min_output_tokens_per_second)
            ax.axhline(floor, color="tab:gray", linestyle=":", label=f"SLO {floor:g} tok/s")
        if target is not None or slo.min_output_tokens_per_second is not None:
            ax.legend(loc="lower right", fontsize=8)
        ax.set_xlabel(label)
        ax.set_ylabel("output tokens/s")
        ax.grid(True, alpha=0.3)
    fig.suptitle(title + " — green: meets the SLO, red: misses it; square: baseline, star: best", fontsize=10)
    return fig


def write_report(
    out_dir: Path, judged: Sequence[Judged], slo: Slo, *, baseline_id: str, best_id: str | None, title: str
) -> list[Path]:
    """report.md, trials.csv, tune.png and tune.html in `out_dir`; returns the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    data = rows(judged, baseline_id=baseline_id, best_id=best_id)
    written = []
    md = out_dir / "report.md"
    md.write_text(f"# {title}\n\nSLO: {slo.text() or 'none'}\n\n{markdown(data)}\n\n![throughput vs latency](tune.png)\n")
    written.append(md)
    cv = out_dir / "trials.csv"
    cv.write_text(csv_text(data))
    written.append(cv)
    fig = _figure(judged, slo, baseline_id=baseline_id, best_id=best_id, title=title)
    png = out_dir / "tune.png"
    fig.savefig(png, dpi=110)
    svg = io.StringIO()
    fig.savefig(svg, format="svg")
    import matplotlib.pyplot as plt

    plt.close(fig)
    written.append(png)
    cells = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in data)
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px}</style>"
        f"</head><body><h1>{html.escape(title)}</h1><p>SLO: {html.escape(slo.text() or 'none')}</p>"
        "<table><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in COLUMNS) + f"</tr>{cells}</table>"
        f"{svg.getvalue()[svg.getvalue().find('<svg') :]}</body></html>"
    )
    page_path = out_dir / "tune.html"
    page_path.write_text(page)
    written.append(page_path)
    return written
