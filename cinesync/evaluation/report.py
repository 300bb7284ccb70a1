"""The evaluation report of a run: ``report.json``, ``report.md`` and a self-contained ``report.html``.

:func:`build_report` analyses a :class:`~cinesync.suite.SuiteResult` (fresh from ``run_suite`` or read back
with :func:`~cinesync.suite.load_run`) into one JSON-compatible dict of aggregates only (no per-user rows):

* ``models``: each metric's value per model, with a 95% percentile-bootstrap interval for per-user metrics;
* ``significance``: every model against each baseline, paired t-test and Wilcoxon p-values, raw and corrected
  (:func:`~cinesync.evaluation.statistics.significance_table`);
* ``items``: popularity bias and exposure from the saved top-k lists: average recommended popularity, share of
  recommendations in the short head, exposure Gini, the popularity-band curve and the Lorenz curve, next to the
  same for the training interactions;
* ``fairness``: each per-user metric per user group, with gap and ratio, for each configured attribute.

:func:`render_markdown` and :func:`render_html` turn it into tables and (HTML) plots drawn as inline SVG, so
the page needs no network, script or plotting library. :func:`write_report` writes the three files atomically.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cinesync.errors import CineSyncError
from cinesync.evaluation import fairness, statistics
from cinesync.manifest import EvaluationProtocol

if TYPE_CHECKING:
    from cinesync.suite import SuiteResult

#: The short head: the most popular items holding this share of the catalogue (Abdollahpouri et al. 2019).
HEAD_SHARE = 0.2
_BETTER, _WORSE = "▲", "▼"


# -- analysis ----------------------------------------------------------------------------------------------
def build_report(suite: SuiteResult) -> dict[str, Any]:
    """Analyse ``suite`` under the significance and fairness settings of its protocol (see the module
    docstring for the sections). Every model must have been evaluated on the same users."""
    protocol = EvaluationProtocol.model_validate(suite.protocol)
    if not suite.results:
        raise CineSyncError(f"suite {suite.name!r} has no model results to report on")
    models = list(suite.results.values())
    users = models[0].users
    for result in models:
        if result.users is None or users is None or not np.array_equal(result.users, users):
            raise CineSyncError(
                f"models {models[0].name!r} and {result.name!r} were evaluated on different users; "
                "a report compares models of one run"
            )
    assert users is not None
    # A per-user metric that judged no user at all (every value NaN) has no interval and nothing to test.
    per_user_metrics = [
        m
        for m, info in suite.metrics.items()
        if info["per_user"] and all(np.any(~np.isnan(r.per_user[m])) for r in models)
    ]
    direction = {m: info["higher_is_better"] for m, info in suite.metrics.items()}
    spec = protocol.significance
    report: dict[str, Any] = {
        "suite": suite.name,
        "dataset": suite.dataset,
        "protocol": {
            "dataset": protocol.dataset.name,
            "split": protocol.split.method,
            "refit": protocol.refit,
            "candidates": protocol.candidates,
            "n_users": len(users),
            "exposure_k": protocol.fairness.exposure_k,
            "bootstrap": spec.bootstrap,
            "tests": list(spec.tests),
            "correction": spec.correction,
            "alpha": spec.alpha,
        },
        "metrics": suite.metrics,
        "primary_metric": per_user_metrics[0] if per_user_metrics else next(iter(suite.metrics)),
        "models": {},
    }
    for result in models:
        row: dict[str, Any] = {}
        for metric in suite.metrics:
            value = result.metrics.get(metric, float("nan"))
            interval = None
            if metric in per_user_metrics:
                interval = list(
                    statistics.bootstrap_ci(result.per_user[metric], resamples=spec.bootstrap, seed=spec.seed)
                )
            row[metric] = {"value": value, "ci": interval}
        row["train_seconds"] = result.train_seconds
        report["models"][result.name] = row
    report["significance"] = _significance(suite, per_user_metrics, direction, protocol)
    report["items"] = _items(suite, protocol)
    report["fairness"] = _fairness(suite, per_user_metrics, protocol)
    return report


def _significance(
    suite: SuiteResult, metrics: list[str], direction: dict[str, bool], protocol: EvaluationProtocol
) -> dict[str, Any]:
    spec = protocol.significance
    if len(suite.results) < 2 or not metrics:
        return {}
    values = {name: result.per_user for name, result in suite.results.items()}
    baselines: Sequence[str | None] = spec.baseline or [None]
    tables: dict[str, Any] = {}
    for baseline in baselines:
        comparisons = statistics.significance_table(
            values,
            baseline=baseline,
            metrics=metrics,
            tests=spec.tests,
            correction=spec.correction,
            alpha=spec.alpha,
            higher_is_better=direction,
            resamples=spec.bootstrap,
            seed=spec.seed,
        )
        tables[comparisons[0].baseline] = [c.to_dict() for c in comparisons]
    return tables


def _items(suite: SuiteResult, protocol: EvaluationProtocol) -> dict[str, Any]:
    counts = np.asarray(suite.item_counts)
    n_items = counts.size
    head = np.zeros(n_items, dtype=bool)
    head[np.lexsort((np.arange(n_items), -counts))[: max(1, round(HEAD_SHARE * n_items))]] = True
    x, y, gini = fairness.lorenz_curve(counts)
    shares, _, interactions = fairness.popularity_curve(np.empty(0, np.int64), counts)
    section: dict[str, Any] = {
        "k": protocol.fairness.exposure_k,
        "n_items": n_items,
        "head_share": HEAD_SHARE,
        "popularity_x": shares.tolist(),
        "training": {
            "gini": gini,
            "head": float(counts[head].sum() / counts.sum()),
            "lorenz": {"x": x.tolist(), "y": y.tolist()},
            "popularity": interactions.tolist(),
        },
        "models": {},
    }
    for name, result in suite.results.items():
        top = np.asarray(result.top_items)
        exposed = fairness.exposure(top, n_items)
        x, y, gini = fairness.lorenz_curve(exposed)
        _, recommended, _ = fairness.popularity_curve(top, counts)
        section["models"][name] = {
            "arp": fairness.average_recommended_popularity(top, counts),
            "head": float(exposed[head].sum() / max(exposed.sum(), 1)),
            "gini": gini,
            "coverage": float(np.count_nonzero(exposed) / n_items),
            "lorenz": {"x": x.tolist(), "y": y.tolist()},
            "popularity": recommended.tolist(),
        }
    return section


def _fairness(suite: SuiteResult, metrics: list[str], protocol: EvaluationProtocol) -> dict[str, Any]:
    spec = protocol.fairness
    users = suite.users
    if users is None or not metrics:
        return {}
    section: dict[str, Any] = {}
    for attribute in spec.attributes:
        groups = fairness.user_groups(users, attribute, bands=spec.bands, quantiles=spec.quantiles)
        by_model = {
            name: fairness.group_metrics(
                attribute, groups, {m: result.per_user[m] for m in metrics}
            ).to_dict()
            for name, result in suite.results.items()
        }
        first = next(iter(by_model.values()))
        section[attribute] = {
            "groups": first["groups"],
            "sizes": first["sizes"],
            "models": {
                name: {"means": table["means"], "gap": table["gap"], "ratio": table["ratio"]}
                for name, table in by_model.items()
            },
        }
    return section


# -- files -------------------------------------------------------------------------------------------------
def write_report(report: dict[str, Any], output: str | Path) -> list[Path]:
    """Write ``report.json``, ``report.md`` and ``report.html`` under ``output`` (atomically); returns the
    paths."""
    from cinesync.suite import write_json, write_text

    root = Path(output)
    paths = [root / "report.json", root / "report.md", root / "report.html"]
    write_json(paths[0], _finite(report))
    write_text(paths[1], render_markdown(report))
    write_text(paths[2], render_html(report))
    return paths


def _finite(value: Any) -> Any:
    """NaN and infinities become null: JSON has no such numbers."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def number(value: float | None) -> str:
    """A metric value with the precision its size deserves: 0.0406, 1.234, 312.5."""
    if value is None or not math.isfinite(value):
        return "n/a"
    size = abs(value)
    return f"{value:.1f}" if size >= 100 else f"{value:.3f}" if size >= 1 else f"{value:.4f}"


def _p(value: float) -> str:
    return "<0.0001" if value < 1e-4 else f"{value:.4f}"


def marks(report: dict[str, Any]) -> tuple[str | None, dict[tuple[str, str], str]]:
    """The first baseline and ``{(model, metric): "▲" | "▼"}`` for the significant comparisons with it."""
    tables = report.get("significance") or {}
    if not tables:
        return None, {}
    baseline, comparisons = next(iter(tables.items()))
    found = {
        (c["model"], c["metric"]): _BETTER if c["better"] else _WORSE for c in comparisons if c["significant"]
    }
    return baseline, found


def cell(report: dict[str, Any], model: str, metric: str, mark: str = "") -> str:
    """``value [low, high] mark`` for one table cell."""
    entry = report["models"][model][metric]
    text = number(entry["value"])
    if entry["ci"] is not None:
        text += f" [{number(entry['ci'][0])}, {number(entry['ci'][1])}]"
    return f"{text} {mark}".rstrip()


def _description(report: dict[str, Any]) -> str:
    protocol, dataset = report["protocol"], report["dataset"]
    return (
        f"Dataset {protocol['dataset']} ({dataset.get('users', '?')} users, {dataset.get('items', '?')} items, "
        f"{dataset.get('interactions', '?')} interactions), split {protocol['split']}"
        f"{' with refit on train + validation' if protocol['refit'] else ''}, full ranking over the catalogue "
        f"with known items excluded; {protocol['n_users']} test users. Intervals: 95% percentile bootstrap "
        f"({protocol['bootstrap']} resamples over users)."
    )


def _significance_note(report: dict[str, Any], baseline: str | None) -> str:
    protocol = report["protocol"]
    if baseline is None:
        return ""
    return (
        f"{_BETTER} / {_WORSE}: significantly better / worse than **{baseline}** (paired {protocol['tests'][0]}-test "
        f"over users, {protocol['correction']}-corrected p < {protocol['alpha']}); no mark: no significant "
        "difference."
    )


def render_markdown(report: dict[str, Any]) -> str:
    """The report as Markdown tables (see docs/evaluation.md for how to read each)."""
    baseline, found = marks(report)
    metrics = list(report["metrics"])
    lines = [f"# {report['suite']}: evaluation report", "", _description(report), "", "## Results", ""]
    lines += _md_table(
        ["model", *metrics, "train s"],
        [
            [
                name if name != baseline else f"{name} (baseline)",
                *(cell(report, name, m, found.get((name, m), "")) for m in metrics),
                f"{row['train_seconds']:.1f}",
            ]
            for name, row in report["models"].items()
        ],
    )
    if baseline is not None:
        lines += ["", _significance_note(report, baseline)]
    for base, comparisons in (report.get("significance") or {}).items():
        lines += ["", f"## Significance against {base}", ""]
        lines += _md_table(*_significance_rows(report, comparisons))
    lines += ["", "## Popularity bias and item exposure", ""]
    lines += _md_table(*_item_rows(report))
    lines += ["", _item_note(report)]
    primary = report["primary_metric"]
    for attribute, table in (report.get("fairness") or {}).items():
        lines += ["", f"## Fairness by {attribute} ({primary})", ""]
        lines += _md_table(*_fairness_rows(table, primary))
    if report.get("fairness"):
        lines += ["", _fairness_note(primary)]
    if report.get("ensemble"):
        lines += ["", "## Ensemble", "", _ensemble_note(report["ensemble"]), ""]
        lines += _md_table(*_calibration_rows(report["ensemble"]))
        lines += ["", "Reliability (equal-count bins of confidence over the test top-10 items):", ""]
        lines += _md_table(*_reliability_rows(report["ensemble"]))
    return "\n".join(lines) + "\n"


def _ensemble_note(summary: dict[str, Any]) -> str:
    comparison = summary.get("comparison", {})
    text = f"Members: {', '.join(summary['members'])}"
    if summary.get("skipped"):
        text += f" (skipped after failing: {', '.join(summary['skipped'])})"
    selection = summary.get("selection") or {}
    if selection and any(count != 1 for count in selection.values()):
        text += "; greedy selection counts: " + ", ".join(f"{n} {c}" for n, c in selection.items())
    text += "."
    if "t_test_p" in comparison:
        text += (
            f" On {comparison['metric']} the ensemble scores {comparison['ensemble']:.4f} against its best member "
            f"{comparison['best_member']}'s {comparison['member']:.4f} (difference {comparison['difference']:+.4f}; "
            f"paired t-test p = {comparison['t_test_p']:.3g}, Wilcoxon p = {comparison['wilcoxon_p']:.3g})."
        )
    calibration = summary["calibration"]
    text += (
        " Confidence (calibrated on validation): precision of the test top-10 items at or above each confidence "
        f"decile is {'monotonic' if calibration['monotonic'] else 'not monotonic'}; expected calibration error "
        f"{calibration['expected_calibration_error']:.4f}."
    )
    return text


def _calibration_rows(summary: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    rows = [
        [str(row["decile"]), f"{row['threshold']:.4f}", f"{row['precision']:.4f}", str(row["items"])]
        for row in summary["calibration"]["precision_above_decile"]
    ]
    return ["confidence decile", "threshold", "precision at or above", "items"], rows


def _reliability_rows(summary: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    rows = [
        [f"{row['confidence']:.4f}", f"{row['hit_rate']:.4f}", str(row["items"])]
        for row in summary["calibration"]["reliability"]
    ]
    return ["mean confidence", "observed hit rate", "items"], rows


def _reliability_chart(summary: dict[str, Any]) -> str:
    bins = summary["calibration"]["reliability"]
    xs = [max(row["confidence"], 1e-4) for row in bins]
    ys = [row["hit_rate"] for row in bins]
    top = max([*xs, *ys, 1e-3])
    low = 10 ** math.floor(math.log10(min(xs)))
    return _line_chart(
        "Reliability diagram of the ensemble's confidence",
        [("ensemble", xs, ys, _PALETTE[0], False), ("perfect calibration", xs, xs, "#57606a", True)],
        x_label="mean predicted confidence (log scale)",
        y_label="observed hit rate",
        y_max=top,
        x_min=low,
    )


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    return [line(header), line(["---"] * len(header)), *(line(r) for r in rows)]


def _significance_rows(
    report: dict[str, Any], comparisons: list[dict[str, Any]]
) -> tuple[list[str], list[list[str]]]:
    tests = report["protocol"]["tests"]
    correction = report["protocol"]["correction"]
    header = ["metric", "model", "difference [95% CI]"]
    header += [f"p ({t})" for t in tests] + [f"p {correction} ({t})" for t in tests] + ["significant"]
    rows = []
    for c in comparisons:
        low, high = c["difference_ci"]
        rows.append(
            [
                c["metric"],
                c["model"],
                f"{c['difference']:+.4f} [{low:+.4f}, {high:+.4f}]",
                *(_p(c["p_values"][t]) for t in tests),
                *(_p(c["adjusted"][t]) for t in tests),
                (_BETTER if c["better"] else _WORSE) if c["significant"] else "no",
            ]
        )
    return header, rows


def _item_rows(report: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    items = report["items"]
    k = items["k"]
    head = f"head share@{k}"
    header = ["model", f"ARP@{k}", head, f"exposure Gini@{k}", f"coverage@{k}"]
    rows = [
        [name, number(m["arp"]), f"{m['head']:.3f}", f"{m['gini']:.3f}", f"{m['coverage']:.3f}"]
        for name, m in items["models"].items()
    ]
    training = items["training"]
    rows.append(
        ["(training interactions)", "", f"{training['head']:.3f}", f"{training['gini']:.3f}", "1.000"]
    )
    return header, rows


def _item_note(report: dict[str, Any]) -> str:
    items = report["items"]
    return (
        f"ARP: mean training interactions of the recommended items. Head share: share of top-{items['k']} slots "
        f"taken by the {items['head_share']:.0%} most popular items (the training data's own share below). "
        "Exposure Gini: inequality of how often items are recommended (0 equal, 1 one item). "
        f"Coverage: share of the {items['n_items']} items recommended at least once."
    )


def _fairness_rows(table: dict[str, Any], metric: str) -> tuple[list[str], list[list[str]]]:
    header = ["model", *(f"{g} (n={n})" for g, n in zip(table["groups"], table["sizes"], strict=True))]
    header += ["gap", "ratio"]
    rows = [
        [
            name,
            *(number(v) for v in entry["means"][metric]),
            number(entry["gap"][metric]),
            f"{entry['ratio'][metric]:.2f}" if math.isfinite(entry["ratio"][metric]) else "n/a",
        ]
        for name, entry in table["models"].items()
    ]
    return header, rows


def _fairness_note(metric: str) -> str:
    return (
        f"Mean {metric} per user group; gap = best group - worst group, ratio = worst / best (1.00 is parity). "
        "report.json has every per-user metric per group."
    )


# -- HTML and SVG ------------------------------------------------------------------------------------------
#: Okabe–Ito: distinguishable under the common colour-vision deficiencies.
_PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#000000", "#F0E442")
_FONT = "font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif"
_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0;color:#1b1f24;background:#fff}
main{max-width:1180px;margin:0 auto;padding:24px 32px 64px}
h1{font-size:26px;margin:8px 0 4px}h2{font-size:20px;margin:36px 0 8px;border-bottom:1px solid #d8dee4;
padding-bottom:4px}h3{font-size:15px;margin:20px 0 6px}
p.lead{color:#57606a;max-width:980px;line-height:1.45}p.note{color:#57606a;font-size:13px;max-width:980px}
nav a{margin-right:14px;color:#0969da;text-decoration:none;font-size:14px}
table{border-collapse:collapse;font-size:13px;margin:8px 0;font-variant-numeric:tabular-nums}
th,td{border:1px solid #d8dee4;padding:4px 8px;text-align:right;white-space:nowrap}
th:first-child,td:first-child{text-align:left}th{background:#f6f8fa}
.better{color:#1a7f37;font-weight:600}.worse{color:#cf222e;font-weight:600}
.charts{display:flex;flex-wrap:wrap;gap:12px 24px;align-items:flex-start}
figure{margin:6px 0}figcaption{font-size:12px;color:#57606a;max-width:560px}
.scroll{overflow-x:auto}.ci{color:#57606a;font-size:11px}
"""


def render_html(report: dict[str, Any]) -> str:
    """The report as one self-contained HTML page: tables and inline SVG plots, no scripts, no network."""
    baseline, found = marks(report)
    metrics = list(report["metrics"])
    title = f"{report['suite']}: evaluation report"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body><main>",
        f"<h1>{_e(title)}</h1>",
        f'<p class="lead">{_e(_description(report))}</p>',
        '<nav><a href="#results">Results</a><a href="#significance">Significance</a>'
        '<a href="#popularity">Popularity bias</a><a href="#exposure">Exposure</a>'
        '<a href="#fairness">Fairness</a></nav>',
        '<section id="results"><h2>Results</h2><div class="scroll">',
    ]
    rows = []
    for name in report["models"]:
        cells = []
        for metric in metrics:
            mark = found.get((name, metric), "")
            entry = report["models"][name][metric]
            text = _e(number(entry["value"]))
            if entry["ci"] is not None:
                # The interval goes under the value: thirteen metrics side by side still fit the page.
                text += f'<br><span class="ci">[{number(entry["ci"][0])}, {number(entry["ci"][1])}]</span>'
            if mark:
                css = "better" if mark == _BETTER else "worse"
                text += f' <span class="{css}">{mark}</span>'
            cells.append(text)
        label = _e(name) + (" <em>(baseline)</em>" if name == baseline else "")
        rows.append([label, *cells, f"{report['models'][name]['train_seconds']:.1f}"])
    parts.append(_html_table(["model", *metrics, "train s"], rows, escape=False))
    parts.append("</div>")
    if baseline is not None:
        parts.append(f'<p class="note">{_md_bold(_significance_note(report, baseline))}</p>')
    parts.append('<div class="charts">')
    for metric in metrics:
        parts.append(
            _figure(
                _metric_bars(report, metric),
                f"{metric} per model"
                + (
                    " with 95% bootstrap interval"
                    if report["metrics"][metric]["per_user"]
                    else " (catalogue-level)"
                ),
            )
        )
    parts.append("</div></section>")

    parts.append('<section id="significance"><h2>Significance</h2>')
    tables = report.get("significance") or {}
    if not tables:
        parts.append('<p class="note">One model: nothing to compare.</p>')
    for base, comparisons in tables.items():
        parts.append(f"<h3>Against {_e(base)}</h3>")
        header, body = _significance_rows(report, comparisons)
        parts.append(f'<div class="scroll">{_html_table(header, body)}</div>')
    parts.append("</section>")

    items = report["items"]
    parts.append('<section id="popularity"><h2>Popularity bias</h2>')
    parts.append(_html_table(*_item_rows(report)))
    parts.append(f'<p class="note">{_e(_item_note(report))}</p>')
    parts.append(
        _figure(
            _popularity_chart(items),
            f"Share of all top-{items['k']} recommendations that go to the most popular x of the catalogue "
            "(items ordered by training interactions); dashed: the training interactions' own share. The "
            "further a curve lies above the dashed one, the stronger the popularity bias.",
        )
    )
    parts.append("</section>")
    parts.append('<section id="exposure"><h2>Item exposure</h2>')
    parts.append(
        _figure(
            _lorenz_chart(items),
            "Lorenz curves of item exposure: the share of all recommendations held by the least recommended "
            "share of items. The diagonal is equal exposure; Gini in the legend.",
        )
    )
    parts.append("</section>")

    primary = report["primary_metric"]
    parts.append('<section id="fairness"><h2>Fairness across user groups</h2>')
    for attribute, table in (report.get("fairness") or {}).items():
        parts.append(f"<h3>By {_e(attribute)} ({_e(primary)})</h3>")
        group_table = _html_table(*_fairness_rows(table, primary))
        parts.append(f'<div class="charts"><div class="scroll">{group_table}</div>')
        parts.append(
            _figure(_group_bars(table, primary, attribute), f"Mean {primary} per {attribute} group.")
        )
        parts.append("</div>")
    if report.get("fairness"):
        parts.append(f'<p class="note">{_e(_fairness_note(primary))}</p>')
    else:
        parts.append('<p class="note">No fairness attributes configured.</p>')
    parts.append("</section>")
    if report.get("ensemble"):
        summary = report["ensemble"]
        parts.append('<section id="ensemble"><h2>Ensemble</h2>')
        parts.append(f'<p class="note">{_e(_ensemble_note(summary))}</p><div class="charts">')
        parts.append(f'<div class="scroll">{_html_table(*_calibration_rows(summary))}</div>')
        parts.append(
            _figure(
                _reliability_chart(summary),
                "Reliability diagram: observed hit rate against mean confidence in ten equal-count bins of "
                "the test top-10 items; the dashed line is perfect calibration.",
            )
        )
        parts.append("</div></section>")
    parts.append("</main></body></html>")
    return "\n".join(parts) + "\n"


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _md_bold(text: str) -> str:
    """HTML-escaped ``text`` with its ``**bold**`` spans as <strong>."""
    pieces = _e(text).split("**")
    return "".join(f"<strong>{p}</strong>" if i % 2 else p for i, p in enumerate(pieces))


def _html_table(header: list[str], rows: list[list[str]], *, escape: bool = True) -> str:
    def show(value: str) -> str:
        return _e(value) if escape else value

    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{show(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _figure(svg: str, caption: str) -> str:
    return f"<figure>{svg}<figcaption>{_e(caption)}</figcaption></figure>"


def _svg(width: int, height: int, title: str, body: list[str]) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{_e(title)}" style="{_FONT}">'
        f"<title>{_e(title)}</title>" + "".join(body) + "</svg>"
    )


def _text(x: float, y: float, text: str, *, size: int = 11, anchor: str = "start", extra: str = "") -> str:
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" fill="#1b1f24" {extra}>'
        f"{_e(text)}</text>"
    )


def _ticks(high: float, count: int = 5) -> list[float]:
    """Round tick values from 0 to at least ``high``."""
    if high <= 0:
        return [0.0, 1.0]
    raw = high / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    return [i * step for i in range(math.ceil(high / step - 1e-9) + 1)]


def _percent(share: float) -> str:
    """0.2 -> "20%", 0.001 -> "0.1%"."""
    return f"{share * 100:.3g}%"


def _tick_label(value: float) -> str:
    return f"{value:g}" if abs(value) >= 1 or value == 0 else f"{value:.3g}"


def _metric_bars(report: dict[str, Any], metric: str) -> str:
    """Horizontal bars of ``metric`` per model with 95% interval whiskers."""
    names = list(report["models"])
    entries = [report["models"][n][metric] for n in names]
    highs = [e["ci"][1] if e["ci"] else e["value"] for e in entries]
    ticks = _ticks(max([h for h in highs if math.isfinite(h)], default=1.0))
    left, right, top, row = 96, 20, 30, 24
    width, plot = 360, 360 - left - right
    height = top + row * len(names) + 28
    scale = plot / ticks[-1]
    body = [_text(left, 18, metric, size=13, extra='font-weight="600"')]
    for tick in ticks:
        x = left + tick * scale
        body.append(f'<line x1="{x:.1f}" y1="{top - 4}" x2="{x:.1f}" y2="{height - 24}" stroke="#e6e9ed"/>')
        body.append(_text(x, height - 10, _tick_label(tick), size=10, anchor="middle"))
    for i, (name, entry) in enumerate(zip(names, entries, strict=True)):
        y = top + i * row
        value = entry["value"] if math.isfinite(entry["value"]) else 0.0
        colour = _PALETTE[i % len(_PALETTE)]
        body.append(_text(left - 6, y + row / 2 + 4, name, anchor="end"))
        body.append(
            f'<rect x="{left}" y="{y + 4}" width="{max(value * scale, 0.5):.1f}" height="{row - 8}" '
            f'fill="{colour}" opacity="0.85"><title>{_e(f"{name}: {cell(report, name, metric)}")}</title></rect>'
        )
        if entry["ci"]:
            low, high = (left + v * scale for v in entry["ci"])
            mid = y + row / 2
            body.append(
                f'<path d="M{low:.1f},{mid:.1f}H{high:.1f}M{low:.1f},{mid - 5:.1f}V{mid + 5:.1f}'
                f'M{high:.1f},{mid - 5:.1f}V{mid + 5:.1f}" stroke="#1b1f24" stroke-width="1.4" fill="none"/>'
            )
    return _svg(width, height, f"{metric} per model", body)


def _line_chart(
    title: str,
    series: list[tuple[str, list[float], list[float], str, bool]],
    *,
    x_label: str,
    y_label: str,
    y_max: float = 1.0,
    diagonal: bool = False,
    x_min: float | None = None,
) -> str:
    """Lines ``(label, xs, ys, colour, dashed)`` over x in [0, 1] and y in [0, y_max], legend on the right.

    With ``x_min`` the x axis is logarithmic from ``x_min`` to 1 (ticks at powers of ten)."""
    left, top, plot_w, plot_h, legend_w = 56, 16, 420, 300, 230
    width, height = left + plot_w + legend_w, top + plot_h + 48
    y_ticks = _ticks(y_max)
    y_top = y_ticks[-1]

    def px(x: float) -> float:
        if x_min is None:
            return left + x * plot_w
        return left + math.log(max(x, x_min) / x_min) / math.log(1 / x_min) * plot_w

    def py(y: float) -> float:
        return top + plot_h - y / y_top * plot_h

    body = []
    x_ticks = _ticks(1.0) if x_min is None else [10.0**e for e in range(math.ceil(math.log10(x_min)), 1)]
    for tick in x_ticks:
        body.append(
            f'<line x1="{px(tick):.1f}" y1="{top}" x2="{px(tick):.1f}" y2="{top + plot_h}" stroke="#e6e9ed"/>'
        )
        body.append(
            _text(
                px(tick),
                top + plot_h + 16,
                _percent(tick),
                size=10,
                anchor="middle",
            )
        )
    for tick in y_ticks:
        body.append(
            f'<line x1="{left}" y1="{py(tick):.1f}" x2="{left + plot_w}" y2="{py(tick):.1f}" stroke="#e6e9ed"/>'
        )
        body.append(_text(left - 6, py(tick) + 4, _percent(tick), size=10, anchor="end"))
    body.append(
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#8c959f"/>'
    )
    body.append(_text(left + plot_w / 2, height - 8, x_label, anchor="middle"))
    body.append(
        _text(
            14,
            top + plot_h / 2,
            y_label,
            anchor="middle",
            extra=f'transform="rotate(-90 14 {top + plot_h / 2})"',
        )
    )
    if diagonal:
        body.append(
            f'<line x1="{px(0)}" y1="{py(0)}" x2="{px(1)}" y2="{py(min(1.0, y_top))}" stroke="#8c959f" '
            'stroke-dasharray="2 3"/>'
        )
    for i, (label, xs, ys, colour, dashed) in enumerate(series):
        points = " ".join(f"{px(x):.1f},{py(min(y, y_top)):.1f}" for x, y in zip(xs, ys, strict=True))
        dash = ' stroke-dasharray="6 4"' if dashed else ""
        body.append(f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="2"{dash}/>')
        ly = top + 10 + i * 20
        lx = left + plot_w + 16
        body.append(
            f'<line x1="{lx}" y1="{ly}" x2="{lx + 22}" y2="{ly}" stroke="{colour}" stroke-width="2"{dash}/>'
        )
        body.append(_text(lx + 28, ly + 4, label))
    return _svg(width, height, title, body)


def _popularity_chart(items: dict[str, Any]) -> str:
    shares = items["popularity_x"]
    series = [
        (name, shares, m["popularity"], _PALETTE[i % len(_PALETTE)], False)
        for i, (name, m) in enumerate(items["models"].items())
    ]
    series.append(("training interactions", shares, items["training"]["popularity"], "#57606a", True))
    return _line_chart(
        "Popularity bias: share of recommendations taken by the most popular items",
        series,
        x_label="most popular share of the catalogue (log scale)",
        y_label="cumulative share of recommendations",
        x_min=shares[0],
    )


def _lorenz_chart(items: dict[str, Any]) -> str:
    series = [
        (
            f"{name} (Gini {m['gini']:.2f})",
            m["lorenz"]["x"],
            m["lorenz"]["y"],
            _PALETTE[i % len(_PALETTE)],
            False,
        )
        for i, (name, m) in enumerate(items["models"].items())
    ]
    training = items["training"]
    series.append(
        (
            f"training (Gini {training['gini']:.2f})",
            training["lorenz"]["x"],
            training["lorenz"]["y"],
            "#57606a",
            True,
        )
    )
    return _line_chart(
        "Exposure Lorenz curves",
        series,
        x_label="items, least recommended first",
        y_label="cumulative share of recommendations",
        diagonal=True,
    )


def _group_bars(table: dict[str, Any], metric: str, attribute: str) -> str:
    """Vertical bars: one cluster per group, one bar per model."""
    groups, models = table["groups"], list(table["models"])
    left, top, plot_h, legend_w = 56, 16, 220, 150
    cluster = max(28, 10 + 12 * len(models))
    plot_w = cluster * len(groups)
    longest = max((len(g) for g in groups), default=1)
    rotate = longest * 6 > cluster
    bottom = 20 + (min(longest, 24) * 5 if rotate else 14)
    width, height = left + plot_w + legend_w, top + plot_h + bottom + 18
    values = [v for name in models for v in table["models"][name]["means"][metric]]
    ticks = _ticks(max([v for v in values if math.isfinite(v)], default=1.0))
    scale = plot_h / ticks[-1]
    body = []
    for tick in ticks:
        y = top + plot_h - tick * scale
        body.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" stroke="#e6e9ed"/>')
        body.append(_text(left - 6, y + 4, _tick_label(tick), size=10, anchor="end"))
    bar = (cluster - 10) / max(len(models), 1)
    for g, group in enumerate(groups):
        x0 = left + g * cluster + 5
        for m, name in enumerate(models):
            value = table["models"][name]["means"][metric][g]
            h = max(value * scale, 0.0) if math.isfinite(value) else 0.0
            body.append(
                f'<rect x="{x0 + m * bar:.1f}" y="{top + plot_h - h:.1f}" width="{bar:.1f}" height="{h:.1f}" '
                f'fill="{_PALETTE[m % len(_PALETTE)]}"><title>{_e(f"{name}, {group}: {number(value)}")}</title></rect>'
            )
        cx, ly = left + g * cluster + cluster / 2, top + plot_h + 14
        if rotate:
            body.append(
                _text(cx, ly, group, size=10, anchor="end", extra=f'transform="rotate(-40 {cx:.1f} {ly})"')
            )
        else:
            body.append(_text(cx, ly, group, size=10, anchor="middle"))
    body.append(
        f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" stroke="#8c959f"/>'
    )
    body.append(
        _text(
            14,
            top + plot_h / 2,
            metric,
            anchor="middle",
            extra=f'transform="rotate(-90 14 {top + plot_h / 2})"',
        )
    )
    body.append(_text(left + plot_w / 2, height - 4, attribute, anchor="middle"))
    for m, name in enumerate(models):
        lx, ly = left + plot_w + 16, top + 8 + m * 18
        body.append(
            f'<rect x="{lx}" y="{ly - 8}" width="12" height="12" fill="{_PALETTE[m % len(_PALETTE)]}"/>'
        )
        body.append(_text(lx + 18, ly + 2, name))
    return _svg(width, height, f"{metric} by {attribute}", body)
