"""The ``cinesync`` command.

Commands that only read metadata (``plugins list``, ``--help`` of built-in commands) import no plugin code and
no torch. Plugins add commands through the ``cinesync_register_commands`` hook, which fires only when a command
that is not built in is asked for, or when the full command list is shown.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from cinesync.errors import CineSyncError


class PluginCommandGroup(click.Group):
    """A click group that lets hook plugins add commands, loading them only when needed."""

    _plugins_loaded = False

    def _load_plugin_commands(self) -> None:
        if not self._plugins_loaded:
            self._plugins_loaded = True
            from cinesync.hooks import plugin_manager

            plugin_manager().hook.cinesync_register_commands(cli=self)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is None:
            self._load_plugin_commands()
            command = super().get_command(ctx, cmd_name)
        return command

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._load_plugin_commands()
        return super().list_commands(ctx)


def _console(stderr: bool = False) -> Any:
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    # Piped output (CI logs, files) is not wrapped at 80 columns: tables stay readable.
    return Console(stderr=stderr, highlight=False, width=None if stream.isatty() else 200)


@click.group(cls=PluginCommandGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="cinesync")
@click.option("-v", "--verbose", is_flag=True, help="Log each training epoch (loss, metric, time, memory).")
def cli(verbose: bool) -> None:
    """CineSync: plugin-based movie and TV recommenders, from manifest to served artifact."""
    if verbose:
        import logging

        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)


# -- run ---------------------------------------------------------------------------------------------------
_data_dir_option = click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="CINESYNC_DATA_DIR",
    help="Where datasets named in manifests live (default: $CINESYNC_DATA_DIR; ml-latest-small ships inside).",
)


@cli.command()
@click.argument("manifest", type=click.Path(path_type=Path))
@_data_dir_option
@click.option(
    "--output", type=click.Path(file_okay=False, path_type=Path), help="Directory for artifacts and results."
)
@click.option(
    "--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), help="Write results as JSON."
)
@click.option("--progress/--no-progress", default=True, help="Show training progress bars.")
@click.option(
    "--cache",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Ensembles only: keep fitted members in this directory and reuse them on later runs of the same "
    "members and protocol (to try other fusions without retraining).",
)
def run(
    manifest: Path,
    data_dir: Path | None,
    output: Path | None,
    json_path: Path | None,
    progress: bool,
    cache: Path | None,
) -> None:
    """Train and evaluate every model of a suite (or model) MANIFEST and print a comparison table."""
    from cinesync.manifest import EnsembleManifest, ModelManifest, ModelSpec, SuiteManifest, load_manifest
    from cinesync.suite import run_suite, write_json

    loaded = load_manifest(manifest)
    if isinstance(loaded, EnsembleManifest):
        _run_ensemble(loaded, manifest, data_dir, output, json_path, progress, cache)
        return
    if cache is not None:
        raise click.UsageError("--cache applies to ensemble manifests only")
    if isinstance(loaded, ModelManifest):
        suite = SuiteManifest(
            kind="suite",
            name=loaded.name,
            description=loaded.description,
            evaluation=loaded.evaluation
            or SuiteManifest.model_fields["evaluation"].get_default(call_default_factory=True),
            models=[
                ModelSpec(
                    name=loaded.name,
                    component=loaded.component,
                    params=loaded.params,
                    training=loaded.training,
                )
            ],
        )
    else:
        assert isinstance(loaded, SuiteManifest)
        suite = loaded
    console = _console()
    report = _announce_run(console, f"{len(suite.models)} model(s)", suite.name, suite.evaluation)
    outcome = run_suite(
        suite, source=str(manifest), data_dir=data_dir, output=output, progress=progress, on_result=report
    )
    from cinesync.evaluation.report import build_report

    analysed = outcome.report or build_report(outcome)
    console.print(results_table(analysed, outcome.to_json()))
    if json_path is not None:
        write_json(json_path, outcome.to_json())
        console.print(f"results written to {json_path}")
    if output is not None:
        console.print(f"artifacts written to {output / 'artifacts'}")
        console.print(f"report written to {output / 'report.html'} (and report.md, report.json)")


def results_table(report: dict[str, Any], payload: dict[str, Any]) -> Any:
    """A rich table of a suite's results: one row per model, each metric with its 95% bootstrap interval and
    its significance mark against the first baseline, then training time."""
    from rich.markup import escape
    from rich.table import Table

    from cinesync.evaluation.report import cell, marks

    baseline, found = marks(report)
    metrics = list(report["metrics"])
    caption = None
    if baseline is not None:
        protocol = report["protocol"]
        caption = escape(
            f"value [95% CI]; ▲/▼ significantly better/worse than {baseline} "
            f"(paired {protocol['tests'][0]}-test, {protocol['correction']}-corrected p < {protocol['alpha']})"
        )
    table = Table(
        title=f"{payload['suite']} on {payload['protocol']['dataset']['name']} (test split)", caption=caption
    )
    table.add_column("model")
    for metric in metrics:
        table.add_column(metric, justify="right")
    table.add_column("train_seconds", justify="right")
    for name in report["models"]:
        cells = [escape(cell(report, name, metric, found.get((name, metric), ""))) for metric in metrics]
        label = f"{name} (baseline)" if name == baseline else name
        table.add_row(label, *cells, f"{payload['results'][name]['train_seconds']:.1f}")
    return table


# -- report / compare --------------------------------------------------------------------------------------
@cli.command("report")
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--output",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where to write report.json/.md/.html (default: RUN_DIR).",
)
def report_command(run_dir: Path, output: Path | None) -> None:
    """Write the report (JSON, Markdown, HTML with plots) of RUN_DIR, the --output of 'cinesync run'.

    It is computed again from the saved per-user values, top-k lists, users and item counts, under the
    significance and fairness settings recorded in the run's protocol."""
    from cinesync.evaluation.report import build_report, write_report
    from cinesync.suite import load_run

    suite = load_run(run_dir)
    analysed = build_report(suite)
    paths = write_report(analysed, output or run_dir)
    console = _console()
    console.print(results_table(analysed, suite.to_json()))
    console.print("report written to " + ", ".join(str(p) for p in paths))


@cli.command()
@click.argument("run_a", type=click.Path(file_okay=False, path_type=Path))
@click.argument("run_b", type=click.Path(file_okay=False, path_type=Path))
@click.option("--metric", "metrics", multiple=True, help="Metric to compare, such as ndcg@10 (repeatable).")
@click.option(
    "--correction",
    type=click.Choice(["holm", "bh", "bonferroni", "none"]),
    default="holm",
    show_default=True,
    help="Multiple-comparison correction over the models compared on each metric.",
)
@click.option(
    "--alpha", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.05, show_default=True
)
@click.option("--bootstrap", type=click.IntRange(min=100), default=1000, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def compare(
    run_a: Path,
    run_b: Path,
    metrics: tuple[str, ...],
    correction: str,
    alpha: float,
    bootstrap: int,
    as_json: bool,
) -> None:
    """Compare each model present in both RUN_A and RUN_B (A minus B) with paired tests over the same users.

    Prints the mean difference with its bootstrap interval, paired t-test and Wilcoxon p-values, and the
    corrected t-test p-value; the runs must have evaluated the same test users."""
    from cinesync.evaluation.statistics import adjust_p_values, compare_runs
    from cinesync.suite import load_run

    first, second = load_run(run_a), load_run(run_b)
    models = [name for name in first.results if name in second.results]
    if not models:
        raise CineSyncError(
            f"{run_a} and {run_b} share no model name ({', '.join(first.results)} vs {', '.join(second.results)})"
        )
    shared = [m for m, info in first.metrics.items() if info["per_user"] and m in second.metrics]
    chosen = list(metrics) or shared
    unknown = [m for m in chosen if m not in shared]
    if unknown:
        raise CineSyncError(
            f"metric(s) {', '.join(unknown)} lack per-user values in one of the runs; both have {', '.join(shared)}"
        )
    comparisons = []
    for metric in chosen:
        family = [
            compare_runs(
                first.results[name].per_user,
                second.results[name].per_user,
                metric,
                users_a=first.results[name].users,
                users_b=second.results[name].users,
                names=(f"{run_a}:{name}", f"{run_b}:{name}"),
                alpha=alpha,
                higher_is_better=first.metrics[metric]["higher_is_better"],
                resamples=bootstrap,
            )
            for name in models
        ]
        for test in ("t", "wilcoxon"):
            adjusted = adjust_p_values([c.p_values[test] for c in family], correction)  # type: ignore[arg-type]
            for comparison, value in zip(family, adjusted, strict=True):
                comparison.adjusted[test] = float(value)
        for name, comparison in zip(models, family, strict=True):
            comparison.significant = comparison.adjusted["t"] < alpha
            comparisons.append((name, comparison))
    if as_json:
        click.echo(json.dumps([{**c.to_dict(), "name": name} for name, c in comparisons], indent=2))
        return
    from rich.table import Table

    table = Table(
        title=f"{run_a} (A) vs {run_b} (B), {comparisons[0][1].n_users} users",
        caption=f"difference = A - B; significant: {correction}-corrected t-test p < {alpha}",
    )
    for column in (
        "model",
        "metric",
        "A",
        "B",
        "difference [95% CI]",
        "p (t)",
        "p (wilcoxon)",
        f"p {correction} (t)",
    ):
        table.add_column(column, justify="left" if column in ("model", "metric") else "right")
    table.add_column("significant")
    for name, c in comparisons:
        low, high = c.difference_ci
        verdict = ("A better" if c.better else "B better") if c.significant else "no"
        table.add_row(
            name,
            c.metric,
            f"{c.mean:.4f}",
            f"{c.baseline_mean:.4f}",
            f"{c.difference:+.4f} [{low:+.4f}, {high:+.4f}]",
            f"{c.p_values['t']:.4g}",
            f"{c.p_values['wilcoxon']:.4g}",
            f"{c.adjusted['t']:.4g}",
            verdict,
        )
    _console().print(table)


def _version() -> str:
    from cinesync import __version__

    return __version__


# -- validate / schema -------------------------------------------------------------------------------------
@cli.command()
@click.argument("manifest", type=click.Path(path_type=Path))
def validate(manifest: Path) -> None:
    """Check a MANIFEST: structure, component ids, and each component's params."""
    from cinesync.manifest import check_components, load_manifest

    loaded = load_manifest(manifest)
    check_components(loaded, str(manifest))
    click.echo(f"{manifest}: valid {loaded.kind} manifest {loaded.name!r}")


@cli.command()
@click.option("--output", type=click.Path(file_okay=False, path_type=Path), default=Path("registry/schema"))
def schema(output: Path) -> None:
    """Write the JSON Schema of each manifest kind to OUTPUT."""
    from cinesync.manifest import json_schemas

    output.mkdir(parents=True, exist_ok=True)
    for kind, document in json_schemas().items():
        (output / f"{kind}.schema.json").write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
        click.echo(f"wrote {output / f'{kind}.schema.json'}")


# -- evaluate / recommend ----------------------------------------------------------------------------------
@cli.command()
@click.argument("artifact", type=click.Path(path_type=Path))
@_data_dir_option
@click.option("--metric", "metrics", multiple=True, help="Metric spec such as ndcg@10 (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def evaluate(artifact: Path, data_dir: Path | None, metrics: tuple[str, ...], as_json: bool) -> None:
    """Evaluate a saved ARTIFACT again under the protocol it was trained with (its manifest's evaluation)."""
    from cinesync.evaluation import evaluate as run_evaluation
    from cinesync.manifest import EvaluationProtocol
    from cinesync.serve.artifacts import load_artifact, read_manifest
    from cinesync.suite import prepare_data

    recorded = read_manifest(artifact).get("evaluation")
    if not recorded:
        raise CineSyncError(f"{artifact}: the artifact records no evaluation protocol to evaluate it under")
    protocol = EvaluationProtocol.model_validate(recorded)
    if metrics:
        protocol = protocol.model_copy(update={"metrics": list(metrics)})
    model = load_artifact(artifact)
    split = prepare_data(protocol, data_dir)
    if split.test.items != model.items:
        raise CineSyncError(
            f"{artifact}: the model's item ids do not match dataset {protocol.dataset.name!r}"
        )
    history = split.train_valid if protocol.refit else split.train
    result = run_evaluation(model, split.test, metrics=protocol.metrics, history=history)
    if as_json:
        click.echo(json.dumps(result.metrics, indent=2))
        return
    from rich.table import Table

    table = Table(title=f"{artifact} on {protocol.dataset.name} (test split, {result.n_users} users)")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in result.metrics.items():
        table.add_row(name, f"{value:.4f}")
    _console().print(table)


@cli.command()
@click.argument("artifact", type=click.Path(path_type=Path))
@click.option("--user", "users", multiple=True, help="User id as in the source data (repeatable).")
@click.option(
    "--session",
    "sessions",
    multiple=True,
    help="An anonymous session: comma-separated item ids in the order watched (repeatable; sequential "
    "models only).",
)
@click.option("-k", "k", default=10, show_default=True, type=click.IntRange(min=1))
@click.option("--include-seen", is_flag=True, help="Do not exclude items the user already interacted with.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON records instead of a table.")
@click.option(
    "--min-confidence",
    type=click.FloatRange(0.0, 1.0),
    default=None,
    help="Ensembles only: drop items whose calibrated confidence is below this (lists may get shorter).",
)
def recommend(
    artifact: Path,
    users: tuple[str, ...],
    sessions: tuple[str, ...],
    k: int,
    include_seen: bool,
    as_json: bool,
    min_confidence: float | None,
) -> None:
    """Print the top-k items (with titles) a saved ARTIFACT recommends for each --user or --session."""
    from cinesync.serve.artifacts import load_artifact

    if bool(users) == bool(sessions):
        raise click.UsageError("give --user or --session (one or more of either), not both")
    from cinesync.ensemble import Ensemble, EnsembleRecommendations

    model = load_artifact(artifact)
    if min_confidence is not None and not isinstance(model, Ensemble):
        raise click.UsageError("--min-confidence applies to ensemble artifacts only")
    if sessions:
        session_items = [
            [item.strip() for item in session.split(",") if item.strip()] for session in sessions
        ]
        result = model.recommend(sessions=session_items, k=k, exclude_seen=not include_seen)
    elif isinstance(model, Ensemble):
        result = model.recommend(
            list(users), k=k, exclude_seen=not include_seen, min_confidence=min_confidence
        )
    else:
        result = model.recommend(list(users), k=k, exclude_seen=not include_seen)
    assert model.items is not None
    titles = model.item_titles or [str(i) for i in model.items.ids]
    if as_json:
        records = result.to_records()
        for record in records:
            record["title"] = titles[int(model.items.index([record["item"]])[0])]
        click.echo(json.dumps(records, indent=2, default=str))
        return
    from rich.table import Table

    console = _console()
    detailed = isinstance(result, EnsembleRecommendations)
    for row, (user, top_items, scores) in enumerate(
        zip(result.users, result.items, result.scores, strict=True)
    ):
        table = Table(title=f"top {len(top_items)} for {'' if sessions else 'user '}{user}")
        table.add_column("#", justify="right")
        table.add_column("item")
        table.add_column("title")
        table.add_column("score", justify="right")
        if detailed:
            table.add_column("confidence", justify="right")
            table.add_column("members (weight, rank in own top list)")
        positions = model.items.index(top_items)
        for rank, (item, position, score) in enumerate(
            zip(top_items, positions, scores, strict=True), start=1
        ):
            cells = [str(rank), str(item), titles[int(position)], f"{score:.4f}"]
            if isinstance(result, EnsembleRecommendations):
                members = result.members[row][rank - 1]
                cells.append(f"{result.confidences[row][rank - 1]:.3f}")
                cells.append(
                    ", ".join(
                        f"{name} ({m['weight'] or 0:.2f}, {'#' + str(m['rank']) if m['rank'] else 'not in its top'})"
                        for name, m in members.items()
                    )
                )
            table.add_row(*cells)
        console.print(table)


def _announce_run(console: Any, what: str, name: str, protocol: Any) -> Callable[[Any], None]:
    """Print the protocol line of a suite or ensemble run; returns the callback printing each model's result."""
    from cinesync.evaluation.metrics import metric_label

    console.print(
        f"[bold]{name}[/bold]: {what} on {protocol.dataset.name}, split {protocol.split.method}, full ranking, "
        f"metrics {', '.join(metric_label(m) for m in protocol.metrics)}"
    )

    def report(result: Any) -> None:
        shown = ", ".join(f"{k} {v:.4f}" for k, v in result.metrics.items())
        console.print(f"  [green]done[/green] {result.name}: {shown} (train {result.train_seconds:.1f}s)")

    return report


def _run_ensemble(
    loaded: Any,
    manifest: Path,
    data_dir: Path | None,
    output: Path | None,
    json_path: Path | None,
    progress: bool,
    cache: Path | None,
) -> None:
    """``cinesync run`` of an ensemble manifest: members and the fused row ``ensemble`` side by side."""
    from cinesync.ensemble import ensemble_summary, run_ensemble
    from cinesync.evaluation.report import build_report
    from cinesync.suite import write_json

    console = _console()
    what = f"ensemble of {len(loaded.members)} members fused by {loaded.fusion.component}"
    report = _announce_run(console, what, loaded.name, loaded.evaluation)
    run = run_ensemble(
        loaded,
        source=str(manifest),
        data_dir=data_dir,
        output=output,
        progress=progress,
        on_result=report,
        cache=cache,
    )
    suite = run.suite
    console.print(results_table(suite.report or build_report(suite), suite.to_json()))
    comparison = run.comparison
    if "t_test_p" in comparison:
        console.print(
            f"ensemble vs best member {comparison['best_member']} on {comparison['metric']}: "
            f"{comparison['ensemble']:.4f} vs {comparison['member']:.4f} (difference {comparison['difference']:+.4f}, "
            f"paired t-test p = {comparison['t_test_p']:.3g}, Wilcoxon p = {comparison['wilcoxon_p']:.3g})"
        )
    precisions = ", ".join(f"{row['precision']:.3f}" for row in run.calibration["precision_above_decile"])
    console.print(
        f"confidence on test: precision of top-10 items at or above each confidence decile: {precisions} "
        f"({'monotonic' if run.calibration['monotonic'] else 'not monotonic'}; expected calibration error "
        f"{run.calibration['expected_calibration_error']:.4f})"
    )
    if json_path is not None:
        write_json(json_path, {**suite.to_json(), "ensemble": ensemble_summary(run)})
        console.print(f"results written to {json_path}")
    if output is not None:
        console.print(f"ensemble artifact written to {output / 'artifacts' / loaded.name}")
        console.print(
            f"report written to {output / 'report.html'} (and report.md, report.json, ensemble.json)"
        )


# -- plugins -----------------------------------------------------------------------------------------------
@cli.group()
def plugins() -> None:
    """Inspect installed components."""


@plugins.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--kind", type=click.Choice(["recommender", "encoder", "fusion", "metric", "context_signal"]))
def plugins_list(as_json: bool, kind: str | None) -> None:
    """List components from package metadata (imports no plugin code)."""
    from cinesync.registry import list_components

    components = list_components(kind)
    if as_json:
        click.echo(json.dumps([c.to_dict() for c in components], indent=2))
        return
    from rich.table import Table

    table = Table(title=f"{len(components)} components")
    for column in ("kind", "id", "distribution", "version", "target"):
        table.add_column(column)
    for c in components:
        component_id = c.id if not c.problem else f"{c.id} [red](invalid: {c.problem})[/red]"
        table.add_row(c.kind, component_id, c.distribution, c.version, c.target)
    _console().print(table)


@plugins.command("doctor")
def plugins_doctor() -> None:
    """Import and validate every component; exit 1 if any is broken."""
    from cinesync.registry import doctor

    console = _console()
    broken = 0
    for info, problem in doctor():
        if problem is None:
            console.print(f"[green]ok[/green]     {info.kind} {info.id} ({info.distribution} {info.version})")
        else:
            broken += 1
            console.print(f"[red]broken[/red] {info.kind} {info.id}: {problem}")
    if broken:
        console.print(f"{broken} broken component(s); everything else works")
        sys.exit(1)


def main(argv: list[str] | None = None) -> None:
    """Entry point: runs the CLI, printing CineSync errors as one readable message (exit status 2)."""
    try:
        cli.main(args=argv, prog_name="cinesync", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as error:
        error.show()
        sys.exit(error.exit_code)
    except CineSyncError as error:
        click.echo(f"error: {error}", err=True)
        sys.exit(2)
    except click.exceptions.Exit as exit_:
        sys.exit(exit_.exit_code)


if __name__ == "__main__":
    main()
