"""The benchmark's --quick smoke run: every section is written, with sane
values. Timing is never asserted; only that numbers exist and add up."""

import json
import math

import pytest

from benchmarks import report, run
from benchmarks.timing import percentile

pytestmark = pytest.mark.slow

SECTIONS = ("meta", "model", "indexing", "serving", "targets", "notes")
METHODS = ("QueryById", "QueryByImage")


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench-out")
    scratch = tmp_path_factory.mktemp("bench-scratch")
    code = run.main(["--quick", f"--out={out}", f"--scratch={scratch}"])
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    return results, (out / "results.md").read_text()


def _positive(value) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


@pytest.mark.parametrize("section", SECTIONS)
def test_results_have_section(quick_run, section):
    results, _ = quick_run
    assert section in results


@pytest.mark.parametrize("measurement", ["encode", "train_step"])
def test_lookalike_throughput_is_positive(quick_run, measurement):
    results, _ = quick_run
    assert _positive(results["model"]["lookalike"][measurement]["images_per_s"])


def test_keras_column_is_measured_or_says_why_not(quick_run):
    results, _ = quick_run
    keras = results["model"]["keras"]
    if keras["installed"]:
        assert _positive(keras["encode"]["images_per_s"])
    else:
        assert keras["error"]


def test_keras_ratio_matches_throughputs(quick_run):
    results, _ = quick_run
    model = results["model"]
    if not model["keras"]["installed"]:
        pytest.skip("TensorFlow is not installed")
    expected = (
        model["lookalike"]["encode"]["images_per_s"]
        / model["keras"]["encode"]["images_per_s"]
    )
    assert model["ratios"]["encode"] == pytest.approx(expected)


@pytest.mark.parametrize("backend", ["qdrant-edge", "qdrant-client local"])
def test_indexing_reports_each_backend(quick_run, backend):
    results, _ = quick_run
    rows = [
        row
        for row in results["indexing"]["backends"]
        if row["backend"] == backend
    ]
    assert rows and all(_positive(row["points_per_s"]) for row in rows)


def test_serving_covers_photo_and_synthetic_catalogs(quick_run):
    results, _ = quick_run
    names = [catalog["name"] for catalog in results["serving"]["catalogs"]]
    assert names[0].startswith("photos-")
    assert names[1:] == [
        f"synthetic-{size}" for size in run.QUICK.synthetic_sizes
    ]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("clients", run.QUICK.concurrency)
def test_every_load_answers_without_errors(quick_run, method, clients):
    results, _ = quick_run
    for catalog in results["serving"]["catalogs"]:
        numbers = catalog[method][str(clients)]
        assert numbers["requests"] > 0 and not numbers["errors"]


@pytest.mark.parametrize("method", METHODS)
def test_latency_percentiles_are_ordered(quick_run, method):
    results, _ = quick_run
    for catalog in results["serving"]["catalogs"]:
        for numbers in catalog[method].values():
            assert 0 < numbers["p50_ms"] <= numbers["p95_ms"]
            assert numbers["p95_ms"] <= numbers["p99_ms"]


@pytest.mark.parametrize("method", METHODS)
def test_cpu_time_per_request_is_recorded(quick_run, method):
    results, _ = quick_run
    for catalog in results["serving"]["catalogs"]:
        for numbers in catalog[method].values():
            # Every request costs the server and the client some CPU.
            assert numbers["server_cpu_ms_per_request"] > 0
            assert numbers["load_generator_cpu_ms_per_request"] > 0


def test_recall_is_a_fraction(quick_run):
    results, _ = quick_run
    for catalog in results["serving"]["catalogs"]:
        assert 0.0 <= catalog["recall_at_10"] <= 1.0


def test_exact_search_has_full_recall(quick_run):
    # Quick catalogs are below Qdrant's full-scan threshold.
    results, _ = quick_run
    for catalog in results["serving"]["catalogs"]:
        assert catalog["search"] == "exact scan"
        assert catalog["recall_at_10"] == pytest.approx(1.0)


def test_server_peak_memory_is_recorded(quick_run):
    results, _ = quick_run
    for catalog in results["serving"]["catalogs"]:
        assert catalog["vm_hwm_mib"] >= catalog["vm_rss_mib"] > 0


def test_every_target_is_judged(quick_run):
    results, _ = quick_run
    judged = [row["target"] for row in results["targets"]]
    assert judged == [key for key, *_ in report.TARGETS]


def test_markdown_lists_every_target(quick_run):
    results, markdown = quick_run
    for row in results["targets"]:
        assert row["description"] in markdown


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        ([1.0], 50, 1.0),
        ([1.0, 2.0, 3.0, 4.0], 50, 2.0),
        ([1.0, 2.0, 3.0, 4.0], 99, 4.0),
        (list(map(float, range(1, 101))), 95, 95.0),
        ([], 50, math.nan),
    ],
)
def test_percentile_is_nearest_rank(values, q, expected):
    assert percentile(values, q) == pytest.approx(expected, nan_ok=True)


@pytest.mark.parametrize(
    ("key", "value", "verdict"),
    [
        ("encode_ratio", 2.5, "met"),
        ("encode_ratio", 1.5, "short by 25%"),
        ("image_p50", 20.0, "2.0x over the limit"),
        ("image_p50", None, "not measured"),
    ],
)
def test_judge_verdicts(key, value, verdict):
    rows = report.judge_values({key: value})
    assert rows[0]["verdict"] == verdict
